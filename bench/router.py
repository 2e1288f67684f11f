"""How much a request pays for passing through entrega's embedded router, against HAProxy.

    python -m bench.router               # the table (5 rounds of 10 s per path, ~3 minutes)
    python -m bench.router --json        # the same as one JSON object
    python -m bench.router --duration 2 --rounds 1   # a quick look

Same machine, same backend, same load generator for every run:

- backend: nginx from Debian (one worker, access log off), two ``server`` blocks on two
  ports serving a 2-byte static body: release ``v1`` and release ``v2``;
- load: ``wrk`` from Debian, one thread, 50 keep-alive connections, ``--duration`` s;
- runs: ``direct`` (wrk -> nginx, v1 only), ``haproxy`` (wrk -> HAProxy ``nbthread 1`` ->
  nginx, servers weighted 90/10, ``option forwardfor``, ``X-Entrega-Release`` set from the
  server name, pooled keep-alive upstream connections) and ``entrega`` (wrk -> one embedded
  router process -> nginx, weights 90/10 with a cohort rule on a header and a user-id
  header, so routing, cohort matching, release pins (``Set-Cookie`` on every answer, as
  wrk keeps no cookies), per-release metrics and headers all run on every request);
- then ``weight_changes``: the embedded router under the same full load while the
  controller's client makes 100 weight changes through the control socket (each one
  persisted and swapped atomically); ``weight_changes_failed`` counts the requests wrk saw
  fail meanwhile (non-2xx answers and socket errors), which the issue wants at zero.

CPU pinning on this 2-core machine (``taskset``): the proxy under test alone on CPU 1;
wrk and nginx share CPU 0 in every run, so the backend and the load generator get the same
share of the machine whatever sits in between. With fewer than 2 CPUs nothing is pinned.
``ratio_vs_haproxy`` is entrega rps / haproxy rps; ``p99_delta_ms`` is entrega's p99 minus
HAProxy's (the issue's target: ratio >= 0.75, delta <= 1 ms). The three paths run in
``--rounds`` interleaved rounds and each figure of a path (rps, p99, CPU per request) is
its median over the rounds (``rps_rounds`` and ``p99_rounds`` have them all): the machine
may be shared, and one disturbed round moves a p99 by milliseconds.
``cpu_us_per_request`` (the proxy's user+system CPU time over the run / requests) is the
steadiest number when it is, and
``cpu_ratio_vs_haproxy`` (haproxy's CPU per request / entrega's) is the throughput ratio
the proxy alone would allow: when wrk and nginx saturate CPU 0 first, the rps ratio is
theirs, not the proxy's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from entrega.dataplane import build
from entrega.errors import RouterError
from entrega.net import Endpoint, free_port
from entrega.routers.base import CohortRule, Routes
from entrega.routers.embedded import EmbeddedRouter
from entrega.waiting import wait_until, wait_until_sync

CONNECTIONS = 50
WEIGHT_CHANGES = 100
WEIGHTS = {"v1": 90, "v2": 10}
#: which CPUs (taskset lists) each process runs on; "" leaves it unpinned
CPUS = {"proxy": "1", "wrk": "0", "nginx": "0"}


@dataclass
class WrkResult:
    rps: float
    p99_ms: float
    requests: int
    failed: int
    #: CPU time of the proxy per request (microseconds), when measured
    cpu_us: float = 0.0


def need(binary: str) -> str:
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin")
    if path is None:
        raise SystemExit(f"bench.router: {binary} not found; run scripts/install-system-deps.sh")
    return path


def pinned(role: str, cmd: list[str]) -> list[str]:
    cpu = CPUS[role]
    if not cpu or (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", cpu, *cmd]


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    if not wait_until_sync(listening, timeout_s=timeout_s):
        raise SystemExit(f"bench.router: nothing listens on port {port} after {timeout_s} s")


@contextlib.contextmanager
def process(cmd: list[str], *, name: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.returncode not in (0, -signal.SIGTERM, None):
            print(f"bench.router: {name} exited with {proc.returncode}, see {log}",
                  file=sys.stderr)


def nginx_conf(root: Path, ports: dict[str, int]) -> Path:
    servers = []
    for version, port in ports.items():
        (root / version).mkdir()
        (root / version / "index.html").write_text(version)
        servers.append(f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root / version};
        location / {{ index index.html; }}
    }}""")
    conf = root / "nginx.conf"
    conf.write_text(f"""
daemon off;
worker_processes 1;
pid {root / 'nginx.pid'};
error_log {root / 'nginx.error.log'} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    {''.join(servers)}
}}
""")
    (root / "tmp").mkdir()
    return conf


def haproxy_conf(root: Path, port: int, ports: dict[str, int]) -> Path:
    servers = "\n".join(f"    server {v} 127.0.0.1:{p} weight {WEIGHTS[v]}"
                        for v, p in ports.items())
    conf = root / "haproxy.cfg"
    conf.write_text(f"""
global
    nbthread 1
    maxconn 4096
    stats socket {root / 'haproxy.sock'} mode 600 level admin

defaults
    mode http
    timeout connect 5s
    timeout client 75s
    timeout server 60s
    timeout http-keep-alive 75s
    option http-keep-alive
    option forwardfor

frontend main
    bind 127.0.0.1:{port} backlog 4096
    default_backend releases

backend releases
    balance random
    http-reuse always
    http-response set-header X-Entrega-Release %[srv_name]
{servers}
""")
    return conf


def parse_wrk(text: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\b", text, re.M)
    total = re.search(r"(\d+) requests in", text)
    if not rps or not p99 or not total:
        raise SystemExit(f"bench.router: cannot read wrk's output:\n{text}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    failed = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if non2xx:
        failed += int(non2xx.group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       text)
    if errors:
        failed += sum(int(n) for n in errors.groups())
    return WrkResult(float(rps.group(1)), float(p99.group(1)) * scale, int(total.group(1)),
                     failed)


def wrk_cmd(port: int, duration_s: float) -> list[str]:
    return pinned("wrk", [need("wrk"), "-t1", f"-c{CONNECTIONS}", f"-d{duration_s:g}s",
                             "--latency", f"http://127.0.0.1:{port}/"])


def run_wrk(port: int, duration_s: float, pid: int | None = None) -> WrkResult:
    """One measured wrk run (after a 1 s warm-up); with ``pid``, that process's CPU time
    per request goes into ``cpu_us``."""
    subprocess.run(wrk_cmd(port, 1), capture_output=True, check=True)
    before = cpu_seconds(pid) if pid else 0.0
    done = subprocess.run(wrk_cmd(port, duration_s), capture_output=True, text=True,
                          check=True)
    result = parse_wrk(done.stdout)
    if pid and result.requests:
        result.cpu_us = (cpu_seconds(pid) - before) / result.requests * 1e6
    return result


def cpu_seconds(pid: int) -> float:
    """user + system CPU time so far of ``pid`` and its live descendants (from /proc):
    the embedded router's pid is its supervisor's, and its workers do the proxying."""
    total = 0.0
    for one in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def routes_for(ports: dict[str, int], weights: dict[str, int]) -> Routes:
    # A cohort rule that real traffic does not match: its headers are looked at on
    # every request all the same.
    cohort = CohortRule(release="v2", header="X-Entrega-Cohort", header_value="beta",
                        user_header="X-User", users=frozenset({"alice"}), percent=5)
    return Routes(backends={v: (Endpoint("127.0.0.1", p, "0"),) for v, p in ports.items()},
                  weights=weights, cohort=cohort)


async def weight_changes(router: EmbeddedRouter, ports: dict[str, int], port: int,
                         duration_s: float) -> tuple[WrkResult, int]:
    """wrk at full load while 100 weight changes go through the control socket."""
    # wrk runs until interrupted (it prints its summary on SIGINT), at least duration_s
    wrk = subprocess.Popen(wrk_cmd(port, 600), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    started = time.monotonic()
    await asyncio.sleep(0.2)  # let wrk open its connections first
    changes = 0
    while changes < WEIGHT_CHANGES and wrk.poll() is None:
        w = (changes * 37) % 101
        await router.set_routes(routes_for(ports, {"v1": w, "v2": 100 - w}))
        changes += 1
    await asyncio.sleep(max(0.0, duration_s - (time.monotonic() - started)))
    wrk.send_signal(signal.SIGINT)
    out, _ = await asyncio.to_thread(wrk.communicate)
    await router.set_routes(routes_for(ports, WEIGHTS))
    return parse_wrk(out), changes


@contextlib.asynccontextmanager
async def embedded_router(root: Path, ports: dict[str, int]
                          ) -> AsyncIterator[tuple[EmbeddedRouter, int, int]]:
    port = free_port()
    router = EmbeddedRouter(name="bench", listen=f"127.0.0.1:{port}", preview_listen=None,
                            state_dir=root, app="bench",
                            metrics_listen=f"127.0.0.1:{free_port()}")
    # started by hand (not ensure_running) to pin it to its CPU
    router.dir.mkdir(parents=True, exist_ok=True)
    cmd = pinned("proxy", [sys.executable, "-m", "entrega.dataplane.router",
                           "--listen", router.listen, "--control", str(router.socket_path),
                           "--state", str(router.state_path), "--app", "bench",
                           "--pidfile", str(router.pid_path),
                           "--metrics-listen", str(router.metrics_listen)])
    with process(cmd, name="embedded router", log=root / "router.log") as proc:
        async def answers() -> bool:
            try:
                await router.get_routes()
            except RouterError:
                return False
            return True

        if not await wait_until(answers, timeout_s=15):
            await router.get_routes()  # raises what is wrong
        try:
            await router.set_routes(routes_for(ports, WEIGHTS))
            yield router, port, proc.pid
        finally:
            await router.close()


def versions() -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        done = subprocess.run(cmd, capture_output=True, text=True)
        return (done.stdout or done.stderr).strip().splitlines()[0]
    return {"haproxy": first_line([need("haproxy"), "-v"]),
            "nginx": first_line([need("nginx"), "-v"]),
            "wrk": first_line([need("wrk"), "--version"]),
            "python": sys.version.split()[0]}


def run(duration_s: float, rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="entrega-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # nginx's workers run as nobody
        return asyncio.run(_run(root, duration_s, rounds))


async def _run(root: Path, duration_s: float, rounds: int) -> dict[str, object]:
    ports = {v: free_port() for v in WEIGHTS}
    hport = free_port()
    nginx = pinned("nginx", [need("nginx"), "-c", str(nginx_conf(root, ports)),
                             "-e", str(root / "nginx.error.log")])
    haproxy = pinned("proxy", [need("haproxy"), "-db", "-f",
                               str(haproxy_conf(root, hport, ports))])
    runs: dict[str, list[WrkResult]] = {"direct": [], "haproxy": [], "entrega": []}
    with process(nginx, name="nginx", log=root / "nginx.log"), \
            process(haproxy, name="haproxy", log=root / "haproxy.log") as hproc:
        for p in (*ports.values(), hport):
            wait_port(p)
        async with embedded_router(root, ports) as (router, eport, epid):
            # rounds interleave the three paths, so a noisy neighbour hurts all alike;
            # each path's median round is reported
            for _ in range(rounds):
                runs["direct"].append(await asyncio.to_thread(run_wrk, ports["v1"],
                                                              duration_s))
                runs["haproxy"].append(await asyncio.to_thread(run_wrk, hport, duration_s,
                                                               hproc.pid))
                runs["entrega"].append(await asyncio.to_thread(run_wrk, eport, duration_s,
                                                               epid))
            shifting, changes = await weight_changes(router, ports, eport, duration_s)
            metrics = await router.metrics()
    med = {path: WrkResult(rps=median(r.rps for r in results),
                           p99_ms=median(r.p99_ms for r in results),
                           requests=sum(r.requests for r in results),
                           failed=sum(r.failed for r in results),
                           cpu_us=median(r.cpu_us for r in results))
           for path, results in runs.items()}
    d, h, e = med["direct"], med["haproxy"], med["entrega"]
    # asked in this process: the router runs with the same interpreter and environment
    compiled = build.compiled_modules()
    return {
        "rps": {"direct": round(d.rps), "haproxy": round(h.rps), "entrega": round(e.rps)},
        "p99_ms": {"direct": round(d.p99_ms, 3), "haproxy": round(h.p99_ms, 3),
                   "entrega": round(e.p99_ms, 3)},
        "ratio_vs_haproxy": round(e.rps / h.rps, 3),
        "p99_delta_ms": round(e.p99_ms - h.p99_ms, 3),
        "cpu_us_per_request": {"haproxy": round(h.cpu_us, 1), "entrega": round(e.cpu_us, 1)},
        # throughput the router would reach against HAProxy if it alone were the
        # bottleneck: the number to watch when wrk and nginx saturate their CPU first
        "cpu_ratio_vs_haproxy": round(h.cpu_us / e.cpu_us, 3) if e.cpu_us else None,
        "failed": {"direct": d.failed, "haproxy": h.failed, "entrega": e.failed},
        "rps_rounds": {path: [round(r.rps) for r in results] for path, results in runs.items()},
        "p99_rounds": {path: [r.p99_ms for r in results] for path, results in runs.items()},
        "weight_changes": changes,
        "weight_changes_failed": shifting.failed,
        "weight_changes_requests": shifting.requests,
        "weight_changes_rps": round(shifting.rps),
        "router_requests_counted": sum(m.requests for m in metrics.releases.values()),
        # the router's hot path compiled with mypyc (the default; setup.py), or the .py
        # files (ENTREGA_COMPILE=0 at install, ENTREGA_PURE_PYTHON=1 at run time)
        "compiled": bool(compiled),
        "compiled_modules": compiled,
        "settings": {"duration_s": duration_s, "rounds": rounds, "connections": CONNECTIONS,
                     "wrk_threads": 1, "weights": WEIGHTS, "body_bytes": 2,
                     "cpus": dict(CPUS) if (os.cpu_count() or 1) >= 2 else "not pinned"},
        "versions": versions(),
    }


def table(result: dict[str, object]) -> str:
    rps = result["rps"]
    p99 = result["p99_ms"]
    assert isinstance(rps, dict) and isinstance(p99, dict)
    lines = ["| path | req/s | p99 ms |", "|---|---:|---:|"]
    lines += [f"| {k} | {rps[k]:,} | {p99[k]:.2f} |" for k in ("direct", "haproxy", "entrega")]
    lines.append("")
    lines.append(f"entrega / haproxy throughput: {result['ratio_vs_haproxy']}  "
                 f"(p99 delta {result['p99_delta_ms']:+.2f} ms)")
    cpu = result["cpu_us_per_request"]
    assert isinstance(cpu, dict)
    lines.append(f"CPU per request: haproxy {cpu['haproxy']} us, entrega {cpu['entrega']} us "
                 f"(ratio {result['cpu_ratio_vs_haproxy']}; router "
                 f"{'compiled' if result['compiled'] else 'pure Python'})")
    lines.append(f"{result['weight_changes']} weight changes under load: "
                 f"{result['weight_changes_failed']} failed of "
                 f"{result['weight_changes_requests']:,} requests")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.router", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds per path; the medians are reported")
    p.add_argument("--cpus", default=",".join(f"{k}={v}" for k, v in CPUS.items()),
                   help="ROLE=CPULIST,... for proxy, wrk and nginx (empty: not pinned)")
    args = p.parse_args(argv)
    for item in args.cpus.split(","):
        role, _, cpus = item.partition("=")
        if role not in CPUS:
            p.error(f"--cpus: unknown role {role!r}, expected proxy, wrk or nginx")
        CPUS[role] = cpus
    result = run(args.duration, args.rounds)
    print(json.dumps(result, indent=1) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
