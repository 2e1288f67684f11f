"""Helpers for the host agent's tests: a tiny HTTP app in a release directory, and HTTP GET
with the standard library (the agent's side has nothing else either)."""

from __future__ import annotations

import shlex
import sys
import urllib.request
from pathlib import Path

from entrega.waiting import wait_until_sync

#: Answers every GET with "VERSION INSTANCE" on 127.0.0.1:$PORT.
TINY_APP = """\
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{os.environ['ENTREGA_VERSION']} {os.environ['ENTREGA_INSTANCE']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

#: Says why on stderr, then exits 3: a crash loop under its supervisor.
CRASHING_APP = """\
import sys
sys.stderr.write("tiny: DATABASE_URL is not set\\n")
sys.exit(3)
"""

#: No proxy from the environment: loopback only.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

COMMAND = f"{shlex.quote(sys.executable)} app.py"


def release_dir(root: Path, version: str, source: str = TINY_APP) -> Path:
    path = root / "releases" / version
    path.mkdir(parents=True)
    (path / "app.py").write_text(source)
    return path


def get(port: int) -> str | None:
    """The body of GET / on 127.0.0.1:port, or None while nothing answers there."""
    try:
        with _DIRECT.open(f"http://127.0.0.1:{port}/", timeout=2) as answer:
            return str(answer.read().decode())
    except OSError:
        return None


def answer_of(port: int, *, timeout_s: float = 10.0) -> str:
    body = wait_until_sync(lambda: get(port), timeout_s=timeout_s)
    assert body is not None, f"nothing answered on 127.0.0.1:{port} within {timeout_s} s"
    return body


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
