"""How the embedded router proves to entrega's server that it forwarded a request.

The router forwards ``/.entrega/*`` (user feedback) to the server and appends the
visitor's address to X-Forwarded-For; the server rate-limits feedback per visitor by that
address. Any process on the host can connect to the server from loopback and write any
X-Forwarded-For, so the server believes it only on requests that carry the router's key:
32 random bytes (hex) in ``<state>/router.key``, mode 0600, created once by whichever side
needs it first. The router reads it at start (``--control-plane-key-file``) and sends it as
``X-Entrega-Router-Key`` on the requests it forwards to the control plane, never to a
release's upstream. Only the state directory's owner can read it, so no other local
process can pass for the router; nothing about it is on a command line (``ps`` shows those).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

KEY_FILE = "router.key"
HEADER = "X-Entrega-Router-Key"

log = logging.getLogger("entrega.router")


def key_path(state_dir: Path) -> Path:
    return Path(state_dir) / KEY_FILE


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``, created (mode 0600) if there is none yet. Safe when the server
    and a router's starter race: the file appears whole (written aside, then linked) and
    the first one linked wins."""
    with contextlib.suppress(FileNotFoundError):
        key = path.read_bytes().strip()
        if key:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    try:
        os.link(aside, path)
    except FileExistsError:
        pass  # another process created it first: use theirs
    finally:
        aside.unlink()
    return path.read_bytes().strip()


def read_key(path: str | None) -> bytes:
    """The router's side: the key, or b"" (with a warning) when it cannot be read; the
    router then forwards without it and the server counts its visitors as one client."""
    if not path:
        return b""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        log.warning("no control plane key (%s): feedback from every visitor will be "
                    "rate-limited as one client", exc.strerror or exc)
        return b""
    if not key.isalnum():
        log.warning("the control plane key in %s is not hex: not sent", path)
        return b""
    return key
