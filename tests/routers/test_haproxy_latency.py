"""HAProxy's per-request latencies and counters, through its log sink, with real traffic.

The same fields as the embedded router (requests, 5xx, buckets, the ring of samples, the
latency sketch), per release, as one series that a reload or restart of HAProxy and a
restart of the controller leave alone, and that a restart of the sink starts over.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest

from entrega.dataplane.accesslog import parse_line
from entrega.net import free_port
from entrega.routers.base import ReleaseMetrics
from entrega.routers.haproxy import HaproxyRouter
from tests.routers.conftest import Backend, HaproxyFactory, make_routes, reload_haproxy, wait_for

pytestmark = pytest.mark.real

SLOW_MS = 25


async def _traffic(url: str, path: str, n: int) -> tuple[Counter[str], Counter[str]]:
    """``n`` requests of new visitors: answers and 5xx answers per release."""
    answers: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        for _ in range(n):
            r = await c.get(path)
            release = r.headers["x-entrega-release"]
            answers[release] += 1
            errors[release] += r.status_code >= 500
            c.cookies.clear()
    return answers, errors


async def _counted(router: HaproxyRouter, expected: Counter[str]) -> dict[str, ReleaseMetrics]:
    """The releases' counters once the sink has every expected request."""
    found: dict[str, ReleaseMetrics] = {}

    async def complete() -> bool:
        found.update((await router.metrics()).releases)
        return all(v in found and found[v].requests >= n for v, n in expected.items())

    await wait_for(complete, what=f"the sink to count {dict(expected)}")
    return found


async def test_two_releases_show_up_with_counts_latencies_and_sketches(
        make_haproxy: HaproxyFactory, backends: dict[str, Backend]) -> None:
    router = await make_haproxy(preview_listen=f"127.0.0.1:{free_port()}")
    assert router.preview_listen is not None
    await router.set_routes(make_routes(backends, {"v1": 50, "v2": 50}, preview="v3"))
    slow, _ = await _traffic(f"http://{router.listen}", f"/slow?ms={SLOW_MS}", 60)
    failed, errors = await _traffic(f"http://{router.listen}", "/status?code=503", 8)
    fast, _ = await _traffic(f"http://{router.preview_listen}", "/", 12)
    assert set(slow) == {"v1", "v2"} and fast == {"v3": 12}
    expected = slow + failed + fast
    releases = await _counted(router, expected)
    for version, n in expected.items():
        m = releases[version]
        assert (m.requests, m.errors_5xx) == (n, errors[version]), (version, m)
        assert m.samples_total == n and len(m.samples_ms) == n
        assert sum(m.latency_buckets) == n and len(m.latency_buckets) == 24
        assert m.latency_sketch is not None and m.latency_sketch.total == n
        assert m.latency_sum_ms == pytest.approx(sum(m.samples_ms), abs=0.01 * n)
    for version in ("v1", "v2"):
        m = releases[version]
        # every /slow request took at least SLOW_MS, in the ring and in the sketch
        assert sum(s >= SLOW_MS for s in m.samples_ms) == slow[version]
        assert m.latency_sketch is not None
        assert m.latency_sketch.count_above(SLOW_MS * 0.98) == slow[version]
        p50 = m.latency_sketch.quantile(0.5)
        assert p50 is not None and SLOW_MS * 0.99 <= p50 < 1000
    v3 = releases["v3"]
    assert v3.latency_sketch is not None and max(v3.samples_ms) < SLOW_MS
    # sub-millisecond resolution: HAProxy's own %Ta would give whole milliseconds
    assert any(s != int(s) for s in releases["v1"].samples_ms)


async def test_a_burst_of_requests_is_counted_exactly(
        make_haproxy: HaproxyFactory, backends: dict[str, Backend]) -> None:
    """50 clients at once: every line reaches the sink (a datagram socket would queue 10)."""
    router = await make_haproxy("burst")
    await router.set_routes(make_routes(backends, {"v1": 100}))

    async def client(c: httpx.AsyncClient) -> int:
        for _ in range(12):
            assert (await c.get("/")).status_code == 200
        return 12

    async with httpx.AsyncClient(base_url=f"http://{router.listen}", timeout=30,
                                 limits=httpx.Limits(max_connections=50)) as c:
        sent = sum(await asyncio.gather(*(client(c) for _ in range(50))))
    m = (await _counted(router, Counter(v1=sent)))["v1"]
    assert (m.requests, m.samples_total) == (sent, sent) == (600, 600)
    assert m.latency_sketch is not None and m.latency_sketch.total == 600
    assert (await router.api.info()).get("DroppedLogs") == "0"


async def test_one_series_across_haproxy_reloads_and_controller_restarts(
        make_haproxy: HaproxyFactory, backends: dict[str, Backend], tmp_path: Path) -> None:
    router = await make_haproxy("series")
    await router.set_routes(make_routes(backends, {"v1": 100}))
    first, _ = await _traffic(f"http://{router.listen}", "/", 10)
    before = await router.metrics()
    # a reload (a new HAProxy worker) continues the sink's series
    await reload_haproxy(router)
    # a new controller adopts HAProxy and its sink
    again = HaproxyRouter(name="series", listen=router.listen, preview_listen=None,
                          state_dir=tmp_path, app="shop")
    await again.ensure_running()
    assert again.sink.pid() == router.sink.pid() is not None
    second, _ = await _traffic(f"http://{again.listen}", "/", 10)
    releases = await _counted(again, first + second)
    after = await again.metrics()
    assert after.started_at == before.started_at
    assert releases["v1"].requests == 20 and releases["v1"].samples_total == 20

    # the sink killed: the next reading starts a new one, a new series
    pid = again.sink.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    restarted = await again.metrics()
    assert restarted.started_at > after.started_at
    assert again.sink.pid() not in (None, pid)
    assert [r.what for r in restarted.restarts] == ["haproxy log sink"]
    assert "v1" not in restarted.releases or restarted.releases["v1"].requests == 0
    third, _ = await _traffic(f"http://{again.listen}", "/", 5)
    assert (await _counted(again, third))["v1"].requests == 5


async def test_shutdown_stops_the_sink_too(make_haproxy: HaproxyFactory,
                                          backends: dict[str, Backend]) -> None:
    router = await make_haproxy("stop")
    await router.set_routes(make_routes(backends, {"v3": 100}))
    await _counted(router, (await _traffic(f"http://{router.listen}", "/", 1))[0])
    pid = router.sink.pid()
    assert pid is not None and router.sink.control.exists()
    await router.shutdown()
    assert router.sink.pid() is None and not router.sink.control.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    await router.shutdown()  # idempotent


@pytest.mark.parametrize(("line", "expected"), [
    (b"entrega1 v1 r0 200 3 2500", ("v1", 200, 2.5)),
    (b"entrega1 v2 r1 503 0 120\n", ("v2", 503, 0.12)),
    (b"entrega1 v1 r0 -1 7 -", ("v1", 0, 7.0)),  # client left; no start time: %Ta
    (b"entrega1 v1 r0 200 4 -300", ("v1", 200, 4.0)),  # clock stepped back: %Ta
    (b"entrega1 - no_release 503 0 10", None),  # no release chosen
    (b"Proxy main started.", None),
    (b"entrega1 v1 r0 abc 1 2", None),
    (b"entrega0 v1 r0 200 1 2", None),
], ids=["ok", "5xx", "client-left", "clock-step", "no-release", "notice", "damaged",
        "other-tag"])
def test_log_lines(line: bytes, expected: tuple[str, int, float] | None) -> None:
    request = parse_line(line)
    got = None if request is None else (request.release, request.status, request.latency_ms)
    assert got == expected
