"""The controller's short history of another app's router (controller/peers.py): which
snapshot begins a window's "before" stretch, what is forgotten, and what a window's
baseline records. The router here counts one request per reading: its counts are the
clock, so each check says exactly which snapshot was chosen."""

from __future__ import annotations

from pathlib import Path

import pytest

from entrega.config import load_config
from entrega.controller.peers import PeerWatch, longest_analysis_s, watched_peers
from entrega.routers.base import ReleaseMetrics, Router, RouterMetrics, Routes

CONFIG = """\
app: shop
run: {command: "python app.py"}
environments:
  - name: staging
    router: {kind: embedded, listen: "127.0.0.1:18401"}
  - name: production
    router: {kind: embedded, listen: "127.0.0.1:18402"}
    strategy:
      canary:
        steps:
          - weight: 10
          - analysis: {duration_s: 5, metrics: [staging-errors]}
          - weight: 50
          - analysis: {duration_s: 12, metrics: [error-rate]}
    analysis:
      staging-errors: {app: shop, environment: staging, measure: error-rate,
                       judge: sequential}
"""


class CountingRouter(Router):
    """Answers ``metrics`` with one more request each time it is read."""

    def __init__(self) -> None:
        self.readings = 0

    async def ensure_running(self) -> None: ...

    async def set_routes(self, routes: Routes) -> None: ...

    async def get_routes(self) -> Routes:
        raise NotImplementedError

    async def shutdown(self) -> None: ...

    async def metrics(self) -> RouterMetrics:
        self.readings += 1
        return RouterMetrics(started_at=1.0, releases={"v1": ReleaseMetrics(
            requests=self.readings, errors_5xx=0, latency_buckets=())})


@pytest.fixture
def watch(tmp_path: Path) -> tuple[PeerWatch, CountingRouter]:
    (tmp_path / "entrega.yaml").write_text(CONFIG)
    config = load_config(tmp_path / "entrega.yaml")
    router = CountingRouter()
    peers = PeerWatch(config)
    peers.lookup = lambda app, env: router if (app, env) == ("shop", "staging") else None
    return peers, router


def test_what_is_watched_and_for_how_long(tmp_path: Path) -> None:
    (tmp_path / "entrega.yaml").write_text(CONFIG)
    config = load_config(tmp_path / "entrega.yaml")
    assert watched_peers(config) == {("shop", "staging")}
    assert longest_analysis_s(config) == 12.0


@pytest.mark.parametrize(("now", "length_s", "expected"), [
    pytest.param(20.0, 5.0, (15.0, 6), id="the-oldest-within-the-stretch"),
    pytest.param(20.0, 5.5, (15.0, 6), id="no-older-one-than-asked"),
    pytest.param(20.0, 30.0, (10.0, 1), id="history-shorter-than-the-step"),
    pytest.param(10.0, 0.0, None, id="zero-length-none"),
    pytest.param(40.0, 5.0, None, id="nothing-recent-none"),
])
async def test_the_before_stretch_begins(watch: tuple[PeerWatch, CountingRouter], now: float,
                                         length_s: float,
                                         expected: tuple[float, int] | None) -> None:
    peers, _ = watch
    for t in range(10, 21):  # one reading a second, 10..20 s (count 1..11)
        await peers.sample(now=float(t))
    await peers.sample(now=20.5)  # within a second of the last: not read again
    found = peers.before("shop", "staging", now=now, length_s=length_s)
    shown = None if found is None else (found[0], found[1]["releases"]["v1"]["requests"])
    assert shown == expected


async def test_readings_no_step_can_ask_for_are_forgotten(
        watch: tuple[PeerWatch, CountingRouter]) -> None:
    """Kept: the longest analysis step (12 s) and two readings more."""
    peers, _ = watch
    for t in range(10, 31):
        await peers.sample(now=float(t))
    found = peers.before("shop", "staging", now=30.0, length_s=60.0)
    assert found is not None and found[0] == 16.0


async def test_a_window_records_both_ends_of_the_before_stretch(
        watch: tuple[PeerWatch, CountingRouter]) -> None:
    peers, router = watch
    for t in range(10, 21):
        await peers.sample(now=float(t))
    record = await peers.begin([("shop", "staging")], now=21.0, length_s=5.0)
    entry = record["shop/staging"]
    assert entry["before"]["releases"]["v1"]["requests"] == 7  # read at 16 s
    assert entry["start"]["releases"]["v1"]["requests"] == router.readings == 12  # now
    assert entry["before_s"] == 5.0
    # an app this server does not deliver: nothing to compare, said as no data later
    assert (await peers.begin([("shop", "qa")], now=21.0, length_s=5.0))["shop/qa"] == \
        {"start": None, "before": None, "before_s": 0.0}
