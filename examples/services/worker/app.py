"""worker: the background worker of the three example services (stdlib only).

A worker answers no user, so a router's error rate cannot tell whether it works: its
release is judged by its health endpoint, which reports whether the job loop is alive and
recent, not merely whether the process answers HTTP. A stalled loop behind a healthy HTTP
thread is the failure this example exists to show.

The loop does one small job every ``JOB_INTERVAL_MS`` (default 100): it extends a sha256
chain (stand-in for real work such as reconciling stock), so ``/stats`` shows work done.

Run it with ``PORT=8003 python app.py``. It reads, from its working directory:

- ``VERSION``: the version it reports (else ``$ENTREGA_VERSION``, else ``dev``);
- ``behaviour.json`` (optional, re-read before every job and every request):
  ``{"stall": true}`` (the loop hangs in its job until the flag is gone),
  ``{"error_rate": 0.3}`` (that share of jobs fails, counted in ``/stats``),
  ``{"fail_health": true}``.

Routes: ``GET /healthz`` (200 while the loop has finished a job within ``STALL_AFTER_MS``,
default 1000, else 503 saying how long it has been), ``GET /stats`` (jobs done and failed,
the version), ``GET /slow?ms=N`` (headers at once, the body N ms later).

On SIGTERM it stops accepting connections, finishes the requests in flight and the job in
hand, and exits 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: How many sha256 rounds one job is: work the machine notices no more than a log line.
JOB_ROUNDS = 200


def read_version() -> str:
    try:
        return Path("VERSION").read_text().strip() or "dev"
    except OSError:
        return os.environ.get("ENTREGA_VERSION", "dev")


def read_behaviour() -> dict[str, Any]:
    """Today's ``behaviour.json``; a missing or unreadable file means behave well."""
    try:
        behaviour = json.loads(Path("behaviour.json").read_text())
    except (OSError, ValueError):
        return {}
    return behaviour if isinstance(behaviour, dict) else {}


class JobLoop:
    """The worker's loop on a thread of its own; the HTTP side only reads its counters."""

    def __init__(self, *, interval_s: float) -> None:
        self.interval_s = interval_s
        self.jobs_done = 0
        self.jobs_failed = 0
        self.checksum = hashlib.sha256(b"entrega worker").hexdigest()
        self.last_job_at = time.monotonic()  # a fresh loop counts as recent
        self.stalled = False
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="job-loop", daemon=True)

    def run(self) -> None:
        while not self.stopping.is_set():
            self.do_job(read_behaviour())
            self.stopping.wait(self.interval_s)

    def do_job(self, behaviour: dict[str, Any]) -> None:
        # A stall is a job that hangs (a lock never released, a call without a timeout):
        # the loop makes no progress while the process and its HTTP side look fine.
        while read_behaviour().get("stall") and not self.stopping.is_set():
            self.stalled = True
            self.stopping.wait(0.05)
        self.stalled = False
        if random.random() < float(behaviour.get("error_rate", 0)):
            self.jobs_failed += 1
        else:
            digest = bytes.fromhex(self.checksum)
            for _ in range(JOB_ROUNDS):
                digest = hashlib.sha256(digest + self.jobs_done.to_bytes(8, "big")).digest()
            self.checksum = digest.hex()
            self.jobs_done += 1
        self.last_job_at = time.monotonic()

    def since_last_job_ms(self) -> int:
        return int((time.monotonic() - self.last_job_at) * 1000)


class WorkerServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not keep the process alive
    block_on_close = False

    def __init__(self, address: tuple[str, int], loop: JobLoop, *, stall_after_ms: int) -> None:
        super().__init__(address, WorkerHandler)
        self.version = read_version()
        self.loop = loop
        self.stall_after_ms = stall_after_ms
        self.draining = False
        self.in_flight = 0
        self.idle = threading.Condition()

    def begin_request(self) -> None:
        with self.idle:
            self.in_flight += 1

    def end_request(self) -> None:
        with self.idle:
            self.in_flight -= 1
            self.idle.notify_all()

    def stop_accepting(self) -> None:
        self.draining = True
        self.shutdown()  # returns once serve_forever() has returned

    def wait_idle(self) -> None:
        with self.idle:
            self.idle.wait_for(lambda: self.in_flight == 0)


class WorkerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real services behind a proxy
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls
    server: WorkerServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the logs entrega keeps per release

    def do_GET(self) -> None:
        self.server.begin_request()
        try:
            self.route_get()
        finally:
            self.server.end_request()

    def route_get(self) -> None:
        url = urlsplit(self.path)
        loop = self.server.loop
        if url.path == "/healthz":
            since_ms = loop.since_last_job_ms()
            if read_behaviour().get("fail_health"):
                self.send(503, b"unhealthy\n", "text/plain")
            elif not loop.thread.is_alive():
                self.send(503, b"the job loop has ended\n", "text/plain")
            elif since_ms > self.server.stall_after_ms:
                self.send(503, f"the job loop has finished no job for {since_ms} ms "
                               f"(limit {self.server.stall_after_ms} ms)\n".encode(),
                          "text/plain")
            else:
                self.send(200, b"ok\n", "text/plain")
        elif url.path == "/stats":
            self.send_json(200, {"version": self.server.version, "jobs_done": loop.jobs_done,
                                 "jobs_failed": loop.jobs_failed,
                                 "since_last_job_ms": loop.since_last_job_ms(),
                                 "stalled": loop.stalled, "checksum": loop.checksum})
        elif url.path == "/slow":
            self.send_slow(int(parse_qs(url.query).get("ms", ["1000"])[0]))
        else:
            self.send_json(404, {"error": "not found", "version": self.server.version})

    def send_slow(self, ms: int) -> None:
        body = json.dumps({"version": self.server.version, "slept_ms": ms}).encode()
        self.send_headers(200, len(body), "application/json")
        self.wfile.flush()
        time.sleep(ms / 1000)
        self.wfile.write(body)

    def send_json(self, status: int, payload: object) -> None:
        self.send(status, json.dumps(payload).encode(), "application/json")

    def send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_headers(status, len(body), content_type)
        self.wfile.write(body)

    def send_headers(self, status: int, length: int, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("X-Version", self.server.version)
        if self.server.draining:
            self.close_connection = True  # tell keep-alive clients to go elsewhere
            self.send_header("Connection", "close")
        self.end_headers()


def main() -> None:
    loop = JobLoop(interval_s=float(os.environ.get("JOB_INTERVAL_MS", "100")) / 1000)
    address = (os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8003")))
    server = WorkerServer(address, loop,
                          stall_after_ms=int(os.environ.get("STALL_AFTER_MS", "1000")))

    def on_sigterm(signum: int, frame: object) -> None:
        # shutdown() blocks until serve_forever() returns, so it cannot run in this handler.
        threading.Thread(target=server.stop_accepting, daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    loop.thread.start()
    print(f"worker {server.version} listening on {address[0]}:"
          f"{server.server_port}, a job every {loop.interval_s * 1000:.0f} ms", flush=True)
    server.serve_forever()
    server.wait_idle()
    loop.stopping.set()
    loop.thread.join()  # the job in hand finishes: a half-done job is not left behind
    server.server_close()


if __name__ == "__main__":
    main()
