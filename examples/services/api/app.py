"""api: the JSON API of the three example services entrega delivers from one server (stdlib only).

The web front (``../web``) calls it on every request, so a release of this API that changes
its answers' shape breaks the web front while its own error rate stays 0: the case a
release group and cross-service analysis exist for.

Run it with ``PORT=8001 python app.py``. It reads, from its working directory:

- ``VERSION``: the version it reports (else ``$ENTREGA_VERSION``, else ``dev``);
- ``behaviour.json`` (optional, re-read on every request so a test or a demo can make a
  running release misbehave): ``{"error_rate": 0.3}`` (500 on that share of ``/api/``
  requests), ``{"latency_ms": 50}``, ``{"fail_health": true}`` and
  ``{"breaks_contract": true}``: every answer is still a 200, but ``items`` is renamed
  ``data`` and each item's ``name`` is ``title``, as a careless refactoring would do.

Routes: ``GET /healthz``, ``GET /api/items``, ``GET /api/items/{id}`` (both carry the
version), ``GET /slow?ms=N`` (headers at once, the body N ms later, so a client can tell
the request is in flight).

On SIGTERM it stops accepting connections, lets the requests in flight finish and exits 0:
that is what lets entrega stop an old release without dropping a request. Each of the
three services carries its own copy of that server loop (as ``examples/shop`` does) because
each directory is an artifact of its own, delivered without its neighbours.
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
from typing import Any
from urllib.parse import parse_qs, urlsplit

ITEMS = [
    {"id": 1, "name": "espresso cup", "stock": 12},
    {"id": 2, "name": "moka pot", "stock": 3},
    {"id": 3, "name": "coffee beans, 1 kg", "stock": 40},
]


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


def item_view(item: dict[str, Any], *, breaks_contract: bool) -> dict[str, Any]:
    if breaks_contract:  # the renamed field a caller reading ``name`` cannot find
        return {"id": item["id"], "title": item["name"], "stock": item["stock"]}
    return dict(item)


def list_answer(version: str, *, breaks_contract: bool) -> dict[str, Any]:
    items = [item_view(item, breaks_contract=breaks_contract) for item in ITEMS]
    return {"version": version, ("data" if breaks_contract else "items"): items}


def item_answer(version: str, item_id: str, *,
                breaks_contract: bool) -> tuple[int, dict[str, Any]]:
    found = [item for item in ITEMS if str(item["id"]) == item_id]
    if not found:
        return 404, {"error": f"no item {item_id!r}", "version": version}
    view = item_view(found[0], breaks_contract=breaks_contract)
    return 200, {"version": version, ("data" if breaks_contract else "item"): view}


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not keep the process alive
    block_on_close = False

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, ApiHandler)
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


class ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real services behind a proxy
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls
    server: ApiServer

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
        behaviour = read_behaviour()
        version = self.server.version
        if url.path == "/healthz":
            if behaviour.get("fail_health"):
                self.send(503, b"unhealthy\n", "text/plain")
            else:
                self.send(200, b"ok\n", "text/plain")
        elif url.path == "/slow":
            self.send_slow(int(parse_qs(url.query).get("ms", ["1000"])[0]))
        elif url.path == "/api/items" or url.path.startswith("/api/items/"):
            time.sleep(float(behaviour.get("latency_ms", 0)) / 1000)
            breaks_contract = bool(behaviour.get("breaks_contract"))
            if random.random() < float(behaviour.get("error_rate", 0)):
                self.send_json(500, {"error": "injected failure", "version": version})
            elif url.path == "/api/items":
                self.send_json(200, list_answer(version, breaks_contract=breaks_contract))
            else:
                item_id = url.path.removeprefix("/api/items/")
                self.send_json(*item_answer(version, item_id, breaks_contract=breaks_contract))
        else:
            self.send_json(404, {"error": "not found", "version": version})

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
    address = (os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8001")))
    server = ApiServer(address)

    def on_sigterm(signum: int, frame: object) -> None:
        # shutdown() blocks until serve_forever() returns, so it cannot run in this handler.
        threading.Thread(target=server.stop_accepting, daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    print(f"api {server.version} listening on {address[0]}:{server.server_port}",
          flush=True)
    server.serve_forever()
    server.wait_idle()
    server.server_close()
    # Handler threads still waiting on idle keep-alive sockets are daemons: exiting drops them.


if __name__ == "__main__":
    main()
