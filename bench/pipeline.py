"""How long entrega itself takes to carry a release from CI's webhook to production.

The example shop app is delivered through staging (verification on) and production
(canary 50% -> 100%, no bake time) by a real server. The clock runs from the signed
webhook's POST to production's rollout ending. ``app_start_s`` is what the app itself
costs: its own start-up time to a first healthy answer (measured alone, in the same run,
once per environment) plus the time its verification checks took; the rest is
``entrega_overhead_s``. The first release (v1) warms up; v2, a normal update, is measured.

    python -m bench.pipeline [--json] [--runs N]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from entrega.waiting import wait_until_sync

ROOT = Path(__file__).resolve().parents[1]
SHOP = ROOT / "examples" / "shop" / "app.py"
SECRET = "bench-secret"

CONFIG = """\
app: shop
server: {{listen: "127.0.0.1:{server}"}}
auth: {{webhook_secret_env: ENTREGA_BENCH_SECRET}}
run:
  command: "{python} app.py"
  health: {{path: /healthz, interval_s: 0.05, healthy_threshold: 2}}
  drain_s: 2
environments:
  - name: staging
    router: {{kind: embedded, listen: "127.0.0.1:{staging}"}}
    strategy: {{canary: {{steps: [{{weight: 100}}]}}}}
    verify:
      - http: {{path: /api/products, expect_status: 200, expect_body: "moka pot"}}
  - name: production
    router: {{kind: embedded, listen: "127.0.0.1:{production}"}}
    strategy: {{canary: {{steps: [{{weight: 50}}, {{weight: 100}}]}}}}
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def artifact(root: Path, version: str) -> bytes:
    path = root / "artifacts" / version
    path.mkdir(parents=True)
    shutil.copy(SHOP, path / "app.py")
    (path / "VERSION").write_text(version)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for item in sorted(path.iterdir()):
            tar.add(item, arcname=item.name)
    return buffer.getvalue()


def app_alone_start_s(workdir: Path) -> float:
    """The shop's own start-up: spawn to first healthy answer, polled every 2 ms."""
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(SHOP)], cwd=workdir,
                               env={**os.environ, "PORT": str(port)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                time.sleep(0.002)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def deliver(api: httpx.Client, version: str, body: bytes) -> tuple[float, float]:
    """POST the signed webhook; return (webhook -> production done, its wall start)."""
    request = api.build_request("POST", "/api/v1/releases", data={"version": version},
                                files={"artifact": (f"{version}.tar.gz", body)})
    content = request.read()
    mac = hmac.new(SECRET.encode(), content, hashlib.sha256).hexdigest()
    request.headers["X-Entrega-Signature-256"] = f"sha256={mac}"
    wall = time.time()
    started = time.perf_counter()
    answer = api.send(request)
    answer.raise_for_status()
    while True:
        view = api.get("/api/v1/pipeline").json()
        stage = next(r for r in view["releases"] if r["version"] == version)
        status = stage["environments"]["production"]["status"]
        if status == "succeeded":
            return time.perf_counter() - started, wall
        if status in ("rolled_back", "failed"):
            raise RuntimeError(f"{version} did not reach production: {status}")
        time.sleep(0.005)


def one_run(root: Path) -> dict[str, float]:
    ports = {k: free_port() for k in ("server", "staging", "production")}
    config = root / "entrega.yaml"
    config.write_text(CONFIG.format(python=sys.executable, **ports))
    env = {**os.environ, "ENTREGA_BENCH_SECRET": SECRET}
    log = (root / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "entrega", "server", "-c", str(config)],
                              cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    api = httpx.Client(base_url=f"http://127.0.0.1:{ports['server']}", timeout=30)
    try:
        def healthy() -> bool:
            try:
                if api.get("/healthz").status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise RuntimeError(f"server did not start: {root / 'server.log'}")
            return False

        if not wait_until_sync(healthy, timeout_s=30):
            raise RuntimeError(f"server did not start: {root / 'server.log'}")
        deliver(api, "v1", artifact(root, "v1"))         # warm-up: first release
        total, wall = deliver(api, "v2", artifact(root, "v2"))
        events = api.get("/api/v1/history", params={"limit": 500,
                                                    "after_id": 0}).json()
        verify_s = sum(e["data"].get("duration_s", 0.0) for e in events
                       if e["kind"] == "verified" and e["version"] == "v2")
        app_start = sum(app_alone_start_s(root / "artifacts" / "v2") for _ in range(2))
        app_s = app_start + verify_s
        return {"webhook_to_production_s": total, "app_start_s": app_s,
                "entrega_overhead_s": total - app_s, "app_alone_start_s": app_start / 2,
                "verification_s": verify_s}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
        subprocess.run([sys.executable, "-m", "entrega", "down", "-c", str(config)],
                       cwd=root, env=env, stdout=subprocess.DEVNULL, check=False)
        log.close()
        api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs", type=int, default=3, help="deliveries to take the median of")
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="entrega-bench-") as tmp:
            runs.append(one_run(Path(tmp)))
    result: dict[str, Any] = {key: round(statistics.median(r[key] for r in runs), 3)
                              for key in runs[0]}
    result["runs"] = args.runs
    result["target_overhead_s"] = 1.0
    result["command"] = "python -m bench.pipeline --json"
    if args.json:
        print(json.dumps(result))
        return
    print(f"webhook -> production   {result['webhook_to_production_s']:.3f} s "
          f"(median of {args.runs})")
    print(f"  the app itself        {result['app_start_s']:.3f} s "
          f"(start {result['app_alone_start_s']:.3f} s x 2 environments + checks "
          f"{result['verification_s']:.3f} s)")
    print(f"  entrega's overhead    {result['entrega_overhead_s']:.3f} s (target < 1 s)")


if __name__ == "__main__":
    main()
