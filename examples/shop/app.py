"""shop: the sample web app entrega delivers in the demo and the tests (stdlib only).

Run it with ``PORT=8000 python app.py``. It reads, from its working directory:

- ``VERSION``: the version it reports (else ``$ENTREGA_VERSION``, else ``dev``);
- ``shop.json`` (optional, re-read on every request so a test or a demo can make a running
  release misbehave): ``{"error_rate": 0.2, "latency_ms": 50, "fail_health": false}``.

Routes: ``GET /healthz``, ``GET /`` and ``GET /api/products`` (the catalogue and the
version), ``GET /slow?ms=N`` (headers at once, the body N ms later, so a client can tell
the request is in flight) and ``POST /echo``.

On SIGTERM it stops accepting connections, lets the requests in flight finish and exits 0:
that is what lets entrega stop an old release without dropping a request.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

PRODUCTS = [
    {"id": 1, "name": "espresso cup", "price_cents": 900},
    {"id": 2, "name": "moka pot", "price_cents": 3200},
    {"id": 3, "name": "coffee beans, 1 kg", "price_cents": 2400},
]


def read_version() -> str:
    try:
        return Path("VERSION").read_text().strip() or "dev"
    except OSError:
        return os.environ.get("ENTREGA_VERSION", "dev")


def read_settings() -> dict:
    try:
        return json.loads(Path("shop.json").read_text())
    except (OSError, ValueError):
        return {}


class ShopServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not keep the process alive
    block_on_close = False

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, ShopHandler)
        self.version = read_version()
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


class ShopHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real services behind a proxy
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls
    server: ShopServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the logs entrega keeps per release

    def do_GET(self) -> None:
        self.server.begin_request()
        try:
            self.route_get()
        finally:
            self.server.end_request()

    def do_POST(self) -> None:
        self.server.begin_request()
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if urlsplit(self.path).path == "/echo":
                self.send(200, body, self.headers.get("Content-Type", "application/octet-stream"))
            else:
                self.send_json(404, {"error": "not found"})
        finally:
            self.server.end_request()

    def route_get(self) -> None:
        url = urlsplit(self.path)
        settings = read_settings()
        if url.path == "/healthz":
            if settings.get("fail_health"):
                self.send(503, b"unhealthy\n", "text/plain")
            else:
                self.send(200, b"ok\n", "text/plain")
        elif url.path == "/slow":
            self.send_slow(int(parse_qs(url.query).get("ms", ["1000"])[0]))
        elif url.path == "/" or url.path.startswith("/api/"):
            time.sleep(float(settings.get("latency_ms", 0)) / 1000)
            if random.random() < float(settings.get("error_rate", 0)):
                self.send_json(500, {"error": "injected failure", "version": self.server.version})
            elif url.path in ("/", "/api/products"):
                self.send_json(200, {"version": self.server.version, "products": PRODUCTS})
            else:
                self.send_json(404, {"error": "not found", "version": self.server.version})
        else:
            self.send_json(404, {"error": "not found"})

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
    server = ShopServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000"))))

    def on_sigterm(signum: int, frame: object) -> None:
        # shutdown() blocks until serve_forever() returns, so it cannot run in this handler.
        threading.Thread(target=server.stop_accepting, daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    print(f"shop {server.version} listening on {server.server_address[0]}:{server.server_port}",
          flush=True)
    server.serve_forever()
    server.wait_idle()
    server.server_close()
    # Handler threads still waiting on idle keep-alive sockets are daemons: exiting drops them.


if __name__ == "__main__":
    main()
