"""Finding an instance's supervisor and reading what it left: the host agent's lookups.

A supervisor is recognised by its pid *and* its command line (its program and its
instance directory), since pids are recycled; what it left is its state file and its
logs, quoted in errors by their last lines. Standard library only, like the rest of the
host agent (:mod:`.host`).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from entrega.dataplane.instances.supervisor import FORMER_MODULES, MODULE
from entrega.errors import TargetError
from entrega.runner import LocalRunner, ProcessRunner

#: Lines of stderr quoted in errors: enough for a traceback's last frames and message.
STDERR_TAIL_LINES = 8

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def supervisor_marks(pid: int, instance_dir: Path,
                     runner: ProcessRunner) -> tuple[str, ...] | None:
    """What the supervisor ``pid`` of ``instance_dir`` has on its command line (its program,
    today's or the one it ran under before the data plane was a package of its own, and its
    directory), or None when ``pid`` is no such supervisor (gone, or a reused pid)."""
    for name in (MODULE, *FORMER_MODULES):
        marks = (name, str(instance_dir))
        if runner.is_running(pid, marks=marks):
            return marks
    return None


def supervisor_alive(pid: int, instance_dir: Path, runner: ProcessRunner | None = None) -> bool:
    """True when ``pid`` runs and is the supervisor of ``instance_dir`` (not a reused pid)."""
    return supervisor_marks(pid, instance_dir, runner or LocalRunner()) is not None


def check_name(what: str, name: str) -> None:
    """Versions and environments name directories: nothing that climbs out of them."""
    if not SAFE_NAME.match(name):
        raise TargetError(f"cannot use {what} {name!r} as the name of a directory of instances",
                          hint="use letters, digits, '.', '_', '+' and '-'")


def port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As servers do, so that connections of a previous run in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def quote_tail(path: Path, *, start: int = 0) -> str:
    """The last lines of a log (from byte ``start`` on), formatted to end an error message."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(start, f.tell() - 4096))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()][-STDERR_TAIL_LINES:]
    if not lines:
        return ""
    return f"; {path.name} ends with:\n" + "\n".join(f"  {line}" for line in lines)
