"""web: the web front of the three example services; it calls the API on every request
(stdlib only).

It is the caller that shows the damage when an API release changes its answers' shape: the
API still answers 200, but this front cannot read the answer and answers 502, so *its*
error rate rises. entrega's cross-service analysis watches exactly that.

Run it with ``PORT=8002 API_URL=http://127.0.0.1:8001 python app.py`` (``API_URL``: the
API's address, normally the API's router, so the front follows the API's rollouts like any
user would). It reads, from its working directory:

- ``VERSION``: the version it reports (else ``$ENTREGA_VERSION``, else ``dev``);
- ``behaviour.json`` (optional, re-read on every request): ``{"error_rate": 0.3}`` (500 on
  that share of ``GET /``), ``{"latency_ms": 50}``, ``{"fail_health": true}``.

Routes: ``GET /`` (the items as HTML; as JSON with ``Accept: application/json`` or
``?format=json``), ``GET /healthz`` (this front's own health: an API outage shows in the
front's answers, not by taking its instances out of the router), ``GET /slow?ms=N``.

The API is called over a few kept-alive connections (``API_TIMEOUT_MS``, default 2000, per
call). A kept-alive connection the other side closed before answering is retried once on a
new one, as browsers do: that is the router or the API recycling idle connections, not a
failure. On SIGTERM the front stops accepting connections, finishes the requests in flight
(their API calls included) and exits 0.
"""

from __future__ import annotations

import html
import http.client
import json
import os
import queue
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: Idle connections to the API kept for the next requests; more are opened when busy.
API_IDLE_CONNECTIONS = 8


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


class ApiFailed(Exception):
    """The API could not be reached, or answered something this front cannot use: a 502."""


def read_items(payload: object) -> tuple[str, list[dict[str, Any]]]:
    """The API's version and items from its ``GET /api/items`` answer, or ApiFailed naming
    what is missing: the contract this front depends on, checked, not assumed."""
    if not isinstance(payload, dict):
        raise ApiFailed("the API's answer is not a JSON object")
    items = payload.get("items")
    if not isinstance(items, list):
        raise ApiFailed("the API's answer has no 'items' list")
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("id"), int):
            raise ApiFailed("an item in the API's answer has no 'id' and 'name'")
    return str(payload.get("version", "?")), items


class ApiClient:
    """``GET`` on the API over a small pool of kept-alive connections (thread-safe)."""

    def __init__(self, base_url: str, *, timeout_s: float) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"API_URL must be http://HOST:PORT, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.scheme = url.scheme
        self.host = url.hostname
        try:
            self.port = url.port
        except ValueError:
            raise ValueError(f"API_URL has no valid port: {base_url!r}") from None
        self.prefix = url.path.rstrip("/")
        self.timeout_s = timeout_s
        self.idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue()

    def _connect(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.scheme == "https" else \
            http.client.HTTPConnection
        return kind(self.host, self.port, timeout=self.timeout_s)

    def get_json(self, path: str) -> object:
        """The decoded JSON of a 200 answer to ``GET path``; ApiFailed otherwise."""
        try:
            connection, reused = self.idle.get_nowait(), True
        except queue.Empty:
            connection, reused = self._connect(), False
        try:
            try:
                status, body, keep = self._exchange(connection, path)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connection.close()
                if not reused:
                    raise
                # The idle connection was closed under us before any answer: once more, new.
                connection = self._connect()
                status, body, keep = self._exchange(connection, path)
        except TimeoutError as exc:
            connection.close()
            raise ApiFailed(f"the API at {self.base_url} did not answer within "
                            f"{self.timeout_s * 1000:.0f} ms") from exc
        except ConnectionRefusedError as exc:
            raise ApiFailed(f"the API at {self.base_url} refused the connection") from exc
        except http.client.HTTPException as exc:
            connection.close()
            raise ApiFailed(f"the API at {self.base_url} broke off its answer") from exc
        except OSError as exc:
            connection.close()
            reason = exc.strerror or "the connection failed"
            raise ApiFailed(f"the API at {self.base_url} could not be reached: {reason}") \
                from exc
        if keep and self.idle.qsize() < API_IDLE_CONNECTIONS:
            self.idle.put(connection)
        else:
            connection.close()
        if status != 200:
            raise ApiFailed(f"the API at {self.base_url} answered {status}")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ApiFailed(f"the API at {self.base_url} answered something that is not JSON") \
                from exc

    def _exchange(self, connection: http.client.HTTPConnection,
                  path: str) -> tuple[int, bytes, bool]:
        connection.request("GET", self.prefix + path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read()
        return response.status, body, not response.will_close


def render_page(version: str, api_version: str, items: list[dict[str, Any]]) -> bytes:
    rows = "".join(f"<li>{html.escape(item['name'])}</li>" for item in items)
    return (f"<!doctype html><html><head><meta charset=utf-8><title>shop front</title></head>"
            f"<body><h1>Our items</h1><ul>{rows}</ul><footer>web {html.escape(version)}, "
            f"api {html.escape(api_version)}</footer></body></html>\n").encode()


def render_error(version: str, reason: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset=utf-8><title>shop front</title></head>"
            f"<body><h1>Sorry, the shop is unavailable</h1><p>{html.escape(reason)}</p>"
            f"<footer>web {html.escape(version)}</footer></body></html>\n").encode()


class WebServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not keep the process alive
    block_on_close = False

    def __init__(self, address: tuple[str, int], api: ApiClient) -> None:
        super().__init__(address, WebHandler)
        self.version = read_version()
        self.api = api
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


class WebHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real services behind a proxy
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls
    server: WebServer

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
        if url.path == "/healthz":
            if behaviour.get("fail_health"):
                self.send(503, b"unhealthy\n", "text/plain")
            else:
                self.send(200, b"ok\n", "text/plain")
        elif url.path == "/slow":
            self.send_slow(int(parse_qs(url.query).get("ms", ["1000"])[0]))
        elif url.path == "/":
            time.sleep(float(behaviour.get("latency_ms", 0)) / 1000)
            self.send_front(url.query, fail=random.random() < float(
                behaviour.get("error_rate", 0)))
        else:
            self.send_json(404, {"error": "not found", "version": self.server.version})

    def send_front(self, query: str, *, fail: bool) -> None:
        version = self.server.version
        wants_json = parse_qs(query).get("format") == ["json"] or (
            "application/json" in self.headers.get("Accept", "")
            and "text/html" not in self.headers.get("Accept", ""))
        status, reason = 200, ""
        if fail:
            status, reason = 500, "injected failure"
        else:
            try:
                api_version, items = read_items(self.server.api.get_json("/api/items"))
            except ApiFailed as exc:
                status, reason = 502, str(exc)
        if wants_json and status != 200:
            self.send_json(status, {"error": reason, "version": version})
        elif wants_json:
            self.send_json(200, {"version": version, "api_version": api_version,
                                 "items": [{"id": i["id"], "name": i["name"]} for i in items]})
        elif status != 200:
            self.send(status, render_error(version, reason), "text/html; charset=utf-8")
        else:
            self.send(200, render_page(version, api_version, items), "text/html; charset=utf-8")

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


def main() -> int:
    api_url = os.environ.get("API_URL", "")
    if not api_url:
        print("web: API_URL is not set: set it to the API's address, "
              "for example API_URL=http://127.0.0.1:8001", file=sys.stderr)
        return 2
    try:
        api = ApiClient(api_url, timeout_s=float(os.environ.get("API_TIMEOUT_MS", "2000")) / 1000)
    except ValueError as exc:
        print(f"web: {exc}", file=sys.stderr)
        return 2
    address = (os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8002")))
    server = WebServer(address,
                       api)

    def on_sigterm(signum: int, frame: object) -> None:
        # shutdown() blocks until serve_forever() returns, so it cannot run in this handler.
        threading.Thread(target=server.stop_accepting, daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigterm)
    print(f"web {server.version} listening on {address[0]}:{server.server_port}"
          f", calling the API at {api.base_url}", flush=True)
    server.serve_forever()
    server.wait_idle()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
