"""The embedded router's own work per request, in process: compiled (mypyc) against the .py.

    python -m bench.router_path            # a table (~20 s)
    python -m bench.router_path --json     # the same as one JSON object

What ``bench.router`` cannot separate: of the CPU a proxied request costs, how much is the
router's Python, not the kernel's sockets. Here the real protocol objects of the data path
(``ClientConnection``, ``Exchange``, ``UpstreamConnection``) run against transports that
only keep what is written to them, so no system call is made: one iteration is a request
head parsed, routed (weights 90/10 and a cohort rule, as in bench.router) and written
upstream, then the upstream's answer parsed, rebuilt and written back, and the release's
counters updated (in shared memory, as a worker's: process/counter_memory.py). Two
requests: wrk's (one header) and a browser's (twelve, cookies and X-Forwarded-For
included), both answered with nginx's eight-header answer.

Each build runs in a process of its own, ``compiled`` as installed and ``pure`` with
``ENTREGA_PURE_PYTHON=1``, ``--rounds`` times each, interleaved; the best round counts
(the least disturbed by the rest of the machine). ``speedup`` is pure / compiled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

REQUESTS = {
    "wrk": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    "browser": (
        b"GET /products/42?ref=home HTTP/1.1\r\nHost: shop.example.com\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        b"Chrome/120.0 Safari/537.36\r\n"
        b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
        b"Accept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n"
        b"Connection: keep-alive\r\nCookie: session=abc123; entrega-release=v1; "
        b"entrega-pin=e3b0c442.42; theme=dark\r\n"  # a returning visitor: its pin is current
        b"Upgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\n"
        b"Sec-Fetch-Mode: navigate\r\nX-Forwarded-For: 127.0.113.9\r\n"
        b"X-Forwarded-Proto: https\r\n\r\n"),
}
NGINX_ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 19:42:04 GMT\r\n"
    b"Content-Type: text/html\r\nContent-Length: 2\r\n"
    b"Last-Modified: Sat, 28 Nov 2026 19:41:08 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6b0b2e54-2"\r\nAccept-Ranges: bytes\r\n\r\nv1')


class _Transport(asyncio.Transport):
    """Keeps what is written (C list methods: the harness adds little to the figure)."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.write = self.out.append  # type: ignore[method-assign]
        self.writelines = self.out.extend  # type: ignore[method-assign]

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000),
                "sockname": ("127.0.0.1", 8080)}.get(name, default)


async def _measure(kind: str, n: int) -> float:
    from entrega.dataplane.http.proxy import Proxy, ProxySettings
    from entrega.dataplane.http.upstream import UpstreamConnection
    from entrega.dataplane.process.counter_memory import CounterMemory, attach
    from entrega.dataplane.routes import CohortRule, Routes
    from entrega.net import Endpoint

    # the counters in memory shared with a supervisor, as a worker's
    memory = CounterMemory()
    assert memory.fd is not None
    counters = attach(os.dup(memory.fd))
    memory.handed_over()
    proxy = Proxy(ProxySettings(), app="bench", counters=counters)
    proxy.apply(Routes(
        backends={"v1": (Endpoint("127.0.0.1", 1001, "0"),),
                  "v2": (Endpoint("127.0.0.1", 1002, "0"),)},
        weights={"v1": 90, "v2": 10},
        cohort=CohortRule(release="v2", header="X-Entrega-Cohort", header_value="beta",
                          user_header="X-User", users=frozenset({"alice"}), percent=5)))
    for pool in proxy.pools.pools.values():  # warm pooled upstream connections
        for _ in range(2):
            upstream = UpstreamConnection(pool)
            upstream.connection_made(_Transport())
            pool.release(upstream, 0.0)
    client = proxy.protocol_factory(preview=False)()
    client_transport = _Transport()
    client.connection_made(client_transport)
    request = REQUESTS[kind]

    def one() -> None:
        client.data_received(request)
        exchange = client.active
        assert exchange is not None and exchange.upstream is not None
        upstream = exchange.upstream
        upstream.transport.out.clear()  # type: ignore[attr-defined]
        upstream.data_received(NGINX_ANSWER)
        client_transport.out.clear()

    for _ in range(1000):
        one()
    started = time.perf_counter()
    for _ in range(n):
        one()
    return (time.perf_counter() - started) / n * 1e6


def _child(n: int) -> None:
    """Runs in the measured process: prints {kind: us per request}."""
    import uvloop

    from entrega.dataplane import build
    result: dict[str, Any] = {kind: uvloop.run(_measure(kind, n)) for kind in REQUESTS}
    result["compiled_modules"] = build.compiled_modules()
    print(json.dumps(result))


def _run_child(pure: bool, n: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "ENTREGA_PURE_PYTHON"}
    if pure:
        env["ENTREGA_PURE_PYTHON"] = "1"
    done = subprocess.run([sys.executable, "-m", "bench.router_path", "--child", str(n)],
                          env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run(n: int, rounds: int) -> dict[str, Any]:
    rounds_of: dict[str, list[dict[str, Any]]] = {"compiled": [], "pure": []}
    for _ in range(rounds):
        for build_name in rounds_of:
            rounds_of[build_name].append(_run_child(build_name == "pure", n))
    best = {build_name: {kind: round(min(r[kind] for r in results), 2) for kind in REQUESTS}
            for build_name, results in rounds_of.items()}
    compiled = rounds_of["compiled"][0]["compiled_modules"]
    return {
        "us_per_request": best,
        "speedup": {kind: round(best["pure"][kind] / best["compiled"][kind], 2)
                    for kind in REQUESTS},
        # False where the install did not compile (ENTREGA_COMPILE=0, no C compiler): then
        # both rows ran the .py files
        "compiled": bool(compiled),
        "settings": {"requests_per_round": n, "rounds": rounds,
                     "python": sys.version.split()[0]},
    }


def table(result: dict[str, Any]) -> str:
    best = result["us_per_request"]
    lines = ["| build | wrk request, µs | browser request, µs |", "|---|---:|---:|"]
    lines += [f"| {name} | {best[name]['wrk']:.2f} | {best[name]['browser']:.2f} |"
              for name in ("compiled", "pure")]
    lines.append("")
    lines.append(f"compiled is {result['speedup']['wrk']}x (wrk) and "
                 f"{result['speedup']['browser']}x (browser) faster than the .py files"
                 + ("" if result["compiled"] else " (NOT compiled here: both ran the .py)"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.router_path", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--requests", type=int, default=100_000, help="requests per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds per build; the best counts")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        _child(args.child)
        return 0
    result = run(args.requests, args.rounds)
    print(json.dumps(result, indent=1) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
