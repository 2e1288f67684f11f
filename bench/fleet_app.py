"""The app both sides of ``bench.fleet`` deliver: a tiny stdlib HTTP server (no entrega).

It listens on ``$HOST:$PORT`` and answers ``GET /healthz`` and any other ``GET`` with its
version (the ``VERSION`` file of its working directory) and its host. The artifact it ships
in also holds ``payload.bin`` (random bytes, so that the artifact weighs what the benchmark
says and compression cannot shrink it); the app reads its size at start, as a real app
reads its assets, so an artifact unpacked wrong fails to start.

With ``$PIDFILE`` set it writes its pid there: that is how the Ansible playbook finds the
process to stop (entrega's host agent has its own supervision). On SIGTERM it stops
accepting, finishes the requests in flight and exits 0, as the shop example does.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = Path("VERSION").read_text().strip()
PAYLOAD_BYTES = Path("payload.bin").stat().st_size
HOST = os.environ.get("HOST", "127.0.0.1")


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.0, one request a connection: a stop is never held up by an idle keep-alive
    def do_GET(self) -> None:
        body = json.dumps({"version": VERSION, "host": HOST,
                           "payload_bytes": PAYLOAD_BYTES}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # ten hosts under load: the logs would only measure the disk


def main() -> None:
    server = ThreadingHTTPServer((HOST, int(os.environ["PORT"])), Handler)
    # the requests in flight finish before the exit (joined by server_close)
    server.daemon_threads = False
    server.block_on_close = True
    if os.environ.get("PIDFILE"):
        Path(os.environ["PIDFILE"]).write_text(str(os.getpid()))

    def stop(_signum: int, _frame: object) -> None:
        # shutdown() waits for serve_forever to return: not from its own thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever(poll_interval=0.05)
    server.server_close()


if __name__ == "__main__":
    main()
