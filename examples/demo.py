#!/usr/bin/env python3
"""The entrega demo: four deliveries of the sample shop app, with traffic all along.

- v1 is the first release: straight to 100%;
- v2 goes out by canary (10% -> analysis -> 50% -> analysis -> 100%) and is promoted;
- v3 answers 5xx on 30% of its requests: the analysis fails and entrega rolls back by
  itself, all traffic back on v2 at once, then v3 stopped;
- v4 goes out blue-green: preview, verification, switch, v2 kept warm, then stopped.

Simulated users call the shop through entrega's router the whole time. The last line is
one JSON object; ``failed_requests`` counts every request that failed for any reason
other than v3's own injected errors, and must be 0.

Run with ``make demo`` (or ``python examples/demo.py`` inside the venv).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

HERE = Path(__file__).resolve().parent
WORK = HERE / ".demo"
console = Console(stderr=True, highlight=False)

# The traffic the simulated users send, in requests per second, over this many connections.
USERS_RPS = 120
USERS_CONNECTIONS = 8
DASHBOARD_PORT = 7070
# The share of visits after which the visitor rates the release (1-5, with a comment).
RATING_SHARE = 0.04
HAPPY_COMMENTS = ["fast as ever", "found the moka pot at once", "", "works", "nice"]
BROKEN_COMMENTS = ["the page failed to load", "error 500 at checkout?", "broken again"]

DELIVERIES = [  # version, strategy, shop.json, expected outcome
    ("v1", None, {}, "promoted"),
    ("v2", "canary", {}, "promoted"),
    ("v3", "canary", {"error_rate": 0.3}, "rolled_back"),
    ("v4", "blue-green", {}, "promoted"),
]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        # As servers do: connections of an earlier run in TIME_WAIT don't hold the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def write_config(server: int, router: int, preview: int) -> Path:
    config = WORK / "entrega.yaml"
    config.write_text(f"""\
app: shop
server: {{listen: "127.0.0.1:{server}"}}
feedback: {{rate_per_minute: 100000, burst: 1000}}   # every simulated user is 127.0.0.1
insights: {{sample_interval_s: 1}}                     # a short demo: dense plots
run:
  command: "{sys.executable} app.py"
  health: {{path: /healthz, interval_s: 0.2, healthy_threshold: 3}}
  drain_s: 5
environments:
  - name: production
    target: {{kind: local, instances: 2}}
    router: {{kind: embedded, listen: "127.0.0.1:{router}", preview_listen: "127.0.0.1:{preview}"}}
    strategy:
      canary:
        steps:
          - weight: 10
          - analysis: {{duration_s: 6, metrics: [error-rate, latency-p95]}}
          - weight: 50
          - analysis: {{duration_s: 6, metrics: [error-rate, latency-p95]}}
          - weight: 100
      blue-green: {{auto_promote: true, scale_down_delay_s: 4}}
    analysis:                     # the statistical judges (entrega's defaults), tuned
      # a step passes on evidence: a demo's canary gets tens of requests a second, so its
      # margins are wider than the defaults (an error rate surely below 20%, a p95 surely
      # within 2x stable's), which a few hundred clean requests can show
      error-rate: {{judge: sequential, max_increase: 0.002, min_requests: 30, pass_rate: 0.2}}
      latency-p95: {{judge: quantile, max_ratio: 1.5, pass_ratio: 2, min_requests: 20}}
    verify:
      - http: {{path: /healthz, expect_status: 200}}
      - http: {{path: /api/products, expect_status: 200, expect_body: "moka pot"}}
""")
    return config


def build_artifact(version: str, settings: dict[str, Any]) -> Path:
    """An artifact is a directory: the app, its VERSION, and its settings."""
    path = WORK / "artifacts" / version
    path.mkdir(parents=True)
    shutil.copy(HERE / "shop" / "app.py", path / "app.py")
    (path / "VERSION").write_text(version + "\n")
    if settings:
        (path / "shop.json").write_text(json.dumps(settings))
    return path


class Users:
    """Simulated users: a steady stream of requests through the router."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.by_release: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.failures: list[str] = []
        self.requests = 0
        self.ratings: defaultdict[str, list[int]] = defaultdict(list)
        self.random = random.Random(7)
        self._stop = asyncio.Event()

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=USERS_CONNECTIONS,
                              max_keepalive_connections=USERS_CONNECTIONS)
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            interval = USERS_CONNECTIONS / USERS_RPS
            await asyncio.gather(*(self._user(client, interval, i)
                                   for i in range(USERS_CONNECTIONS)))

    async def _user(self, client: httpx.AsyncClient, interval: float, n: int) -> None:
        next_at = time.monotonic() + n * interval / USERS_CONNECTIONS
        while not self._stop.is_set():
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            self.requests += 1
            # A new anonymous visitor each time: the router pins each visitor to the release
            # it first got (a cookie), so one shared cookie jar would be a single user.
            client.cookies.clear()
            try:
                response = await client.get(self.url + "/api/products")
            except httpx.HTTPError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            release = response.headers.get("x-entrega-release", "?")
            self.by_release[release] += 1
            if response.status_code >= 500:
                if response.status_code == 500 and b"injected failure" in response.content:
                    self.injected[release] += 1
                else:
                    self.failures.append(f"{response.status_code} from {release}: "
                                         f"{response.text[:80]}")
            # People who hit an error are the ones who tell you about it.
            share = 1.0 if response.status_code >= 500 else RATING_SHARE
            if self.random.random() < share:
                await self._rate(client, response, release)

    async def _rate(self, client: httpx.AsyncClient, response: httpx.Response,
                    release: str) -> None:
        """Some visitors rate what they got, through the app's own address: the router
        forwards /.entrega/feedback to entrega and names the release from their pin."""
        broken = response.status_code >= 500
        rating = self.random.choice([1, 1, 2] if broken else [3, 4, 4, 5, 5, 5])
        comment = self.random.choice(BROKEN_COMMENTS if broken else HAPPY_COMMENTS)
        pin = response.cookies.get("entrega-release") or release
        try:
            answer = await client.post(self.url + "/.entrega/feedback",
                                       json={"rating": rating, "comment": comment},
                                       cookies={"entrega-release": pin})
        except httpx.HTTPError as exc:
            self.failures.append(f"feedback: {type(exc).__name__}: {exc}")
            return
        if answer.status_code == 201:
            self.ratings[release].append(rating)

    def stop(self) -> None:
        self._stop.set()


class Demo:
    def __init__(self, api: str) -> None:
        self.api = httpx.Client(base_url=api, timeout=30,
                                headers={"X-Entrega-Actor": "demo"})
        self.started = time.time()
        self.seen_event = 0

    def show_new_events(self) -> None:
        for event in self.api.get("/api/v1/history", params={"after_id": self.seen_event,
                                                             "limit": 500}).json():
            self.seen_event = event["id"]
            style = {"rolled_back": "bold red", "promoted": "bold green", "failed": "red",
                     "traffic": "cyan", "error": "red"}.get(event["kind"], "")
            console.print(f"[dim]{event['time'] - self.started:6.1f}s[/] "
                          f"[{style}]{event['kind']:<12}[/{style}] {event['message']}"
                          if style else
                          f"[dim]{event['time'] - self.started:6.1f}s[/] "
                          f"{event['kind']:<12} {event['message']}")

    def deliver(self, version: str, strategy: str | None, artifact: Path) -> dict[str, Any]:
        console.rule(f"[bold]{version}[/] by {strategy or 'first release'}")
        # The bytes go up first (the server reads no path it is handed), then the deploy.
        meta = {"commit_sha": f"demo-{version}", "commit_time": commit_time()}
        self.api.post("/api/v1/releases",
                      data={"version": version, "deploy": "false", "meta": json.dumps(meta)},
                      files={"artifact": ("build.tar.gz", pack(artifact))}).raise_for_status()
        response = self.api.post("/api/v1/environments/production/deploy",
                                 json={"version": version, "strategy": strategy})
        response.raise_for_status()
        rollout_id = response.json()["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.show_new_events()
            view = self.api.get(f"/api/v1/rollouts/{rollout_id}").json()
            if view["phase"] in ("succeeded", "rolled_back", "failed"):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"rollout of {version} did not finish within 60 s")
        return dict(view)

    def wait_stopped(self, version: str, timeout_s: float = 30) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in self.api.get("/api/v1/history", params={"limit": 500}).json():
                if event["kind"] == "stopped" and event["version"] == version:
                    self.show_new_events()
                    return dict(event)
            time.sleep(0.2)
        return None


def pack(directory: Path) -> bytes:
    """The artifact as the .tar.gz a CI job would upload."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


def commit_time() -> str:
    """When the change was committed: a few minutes before its delivery, for lead time."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))


def outcome_of(view: dict[str, Any]) -> str:
    return {"succeeded": "promoted"}.get(view["phase"], view["phase"])


def rollback_timings(view: dict[str, Any], stopped: dict[str, Any] | None) -> dict[str, Any]:
    """detect_s: canary first takes traffic -> rollback decided; rollback_s: decided ->
    the router sends everything to stable; stop_s: decided -> canary stopped."""
    events = view["events"]
    version = view["version"]
    exposed = next(e["time"] for e in events
                   if e["kind"] == "traffic" and e["data"]["weights"].get(version, 0) > 0)
    decided = next(e["time"] for e in events if e["kind"] == "rolled_back")
    restored = next(e["time"] for e in events if e["kind"] == "traffic"
                    and e["time"] >= decided and version not in e["data"]["weights"])
    return {"detect_s": round(decided - exposed, 2), "rollback_s": round(restored - decided, 3),
            "stop_s": round(stopped["time"] - decided, 2) if stopped else None,
            "reason": view["message"]}


def main() -> int:
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    # A fixed server port when it is free, so `make dashboard` has a URL to remember.
    server_port = DASHBOARD_PORT if port_is_free(DASHBOARD_PORT) else free_port()
    router_port, preview_port = free_port(), free_port()
    config = write_config(server_port, router_port, preview_port)
    artifacts = {v: build_artifact(v, settings) for v, _, settings, _ in DELIVERIES}
    entrega = [sys.executable, "-m", "entrega"]
    log = (WORK / "server.log").open("w")
    server = subprocess.Popen([*entrega, "server", "-c", str(config)], stdout=log,
                              stderr=subprocess.STDOUT, cwd=WORK)
    api = f"http://127.0.0.1:{server_port}"
    started = time.monotonic()
    summary: dict[str, Any] = {"deliveries": []}
    users: Users | None = None
    loop = asyncio.new_event_loop()
    users_task = None
    try:
        while True:
            try:
                if httpx.get(api + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() - started > 30:
                raise RuntimeError(f"entrega server did not start; see {WORK / 'server.log'}")
            time.sleep(0.1)
        console.print(f"entrega server on {api}; users call http://127.0.0.1:{router_port}")
        demo = Demo(api)

        for version, strategy, _, expected in DELIVERIES:
            view = demo.deliver(version, strategy, artifacts[version])
            entry: dict[str, Any] = {"version": version,
                                     "strategy": strategy or "first-release",
                                     "outcome": outcome_of(view),
                                     "duration_s": round((view["finished_at"] or time.time())
                                                         - view["created_at"], 2)}
            if view["phase"] == "rolled_back":
                stopped = demo.wait_stopped(version)
                # Read the rollout again: its last events (traffic restored) come after
                # the phase that ended the wait above.
                view = demo.api.get(f"/api/v1/rollouts/{view['id']}").json()
                entry.update(rollback_timings(view, stopped))
            summary["deliveries"].append(entry)
            if users_task is None:
                # Users arrive once the shop is open (v1 serving).
                users = Users(f"http://127.0.0.1:{router_port}")
                users_task = loop.create_task(users.run())
                threading_loop(loop)
            if entry["outcome"] != expected:
                console.print(f"[red]{version}: expected {expected}, got {entry['outcome']}")
        # Let v4's scale-down finish under traffic, so the switch's tail is measured too.
        demo.wait_stopped("v2")
        time.sleep(1.0)
    finally:
        if users is not None:
            loop.call_soon_threadsafe(users.stop)
        stop_thread_loop(loop, users_task)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        subprocess.run([*entrega, "down", "-c", str(config)], cwd=WORK,
                       stdout=subprocess.DEVNULL, check=False)
        log.close()

    assert users is not None
    summary["requests"] = users.requests
    summary["failed_requests"] = len(users.failures)
    summary["requests_by_release"] = dict(sorted(users.by_release.items()))
    summary["injected_errors"] = dict(users.injected)
    summary["ratings"] = {v: {"count": len(r), "mean": round(sum(r) / len(r), 2)}
                          for v, r in sorted(users.ratings.items()) if r}
    summary["duration_s"] = round(time.monotonic() - started, 1)
    console.rule("summary")
    for line in users.failures[:10]:
        console.print(f"[red]failed request:[/] {line}")
    console.print(f"{users.requests} requests, {len(users.failures)} failed "
                  f"(v3's own injected errors not counted: {sum(users.injected.values())})")
    print(json.dumps(summary), flush=True)
    console.print(f"\nThe dashboard of this demo (history, scorecards, feedback, DORA): "
                  f"[bold]make dashboard[/], then open http://127.0.0.1:{server_port}/")
    ok = summary["failed_requests"] == 0 and [d["outcome"] for d in summary["deliveries"]] \
        == [d[3] for d in DELIVERIES]
    return 0 if ok else 1


# The users run on an event loop in a thread of their own, so the demo's own polling
# (plain, blocking httpx) never delays them.
_thread = None


def threading_loop(loop: asyncio.AbstractEventLoop) -> None:
    import threading

    global _thread
    _thread = threading.Thread(target=loop.run_forever, daemon=True)
    _thread.start()


def stop_thread_loop(loop: asyncio.AbstractEventLoop, task: asyncio.Task[None] | None) -> None:
    if _thread is None:
        return
    if task is not None:
        deadline = time.monotonic() + 15
        while not task.done() and time.monotonic() < deadline:
            time.sleep(0.05)
    loop.call_soon_threadsafe(loop.stop)
    _thread.join(timeout=5)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
