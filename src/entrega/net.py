"""Network addresses shared by targets (which produce endpoints) and routers (which use them)."""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, order=True)
class Endpoint:
    """One instance's address. ``instance`` names it within its release (``"0"``, ``"1"``...)."""

    host: str
    port: int
    instance: str = "0"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def to_dict(self) -> dict[str, object]:
        """The route table's JSON form (read back, checked, by ``dataplane/routes.py``)."""
        return {"host": self.host, "port": self.port, "instance": self.instance}


def parse_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` or ``"[::1]:8080"`` -> (host, port). Raises ValueError."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


#: Listen addresses that mean "every interface": a process on this machine reaches them
#: on loopback.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def local_host(host: str) -> str:
    """How a process on this machine reaches a listener on ``host``."""
    return "127.0.0.1" if host in WILDCARD_HOSTS else host


def http_url(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 host in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def local_url(listen: str) -> str:
    """How a process on this machine reaches a server listening on ``listen``
    (``HOST:PORT``). Raises ValueError for what is not an address."""
    host, port = parse_address(listen)
    return http_url(local_host(host), port)


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free now (another process may still take it later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


#: AF_UNIX sun_path is 108 bytes including the terminating NUL; keep a margin.
MAX_SOCKET_PATH = 100


def unix_socket_path(directory: Path, filename: str, *, fallback_prefix: str,
                     max_bytes: int = MAX_SOCKET_PATH) -> Path:
    """``directory/filename``, or when that is longer than ``max_bytes`` (AF_UNIX's limit,
    or a lower one of the program that binds it), a stable path under /tmp named by a hash
    of it (the same directory always gets the same socket, so a restarted controller finds
    the one a running process listens on)."""
    preferred = directory / filename
    if len(os.fsencode(preferred)) <= max_bytes:
        return preferred
    digest = hashlib.sha256(os.fsencode(preferred.absolute())).hexdigest()[:16]
    return Path("/tmp") / f"{fallback_prefix}-{digest}.sock"
