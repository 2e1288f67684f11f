"""Pidfiles: how a detached program tells whoever comes later which pid it runs as.

The program writes its own pidfile once it is ready (the embedded router: once its control
socket answers), and removes it when it exits, only if the file still names it (a newer
instance may have written its own meanwhile). Readers take the first word of the file,
so pidfiles that carry more (HAProxy's lists its workers after the master) read the same.
A pidfile alone proves nothing: the pid may have been recycled since, which is why
:meth:`ProcessRunner.adopt` checks the command line too.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def read_pidfile(path: Path) -> int | None:
    """The pid in ``path`` (its first word); None when the file is missing or holds none."""
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def write_pidfile(path: Path, pid: int | None = None) -> None:
    """Write ``pid`` (default: this process's) to ``path``."""
    Path(path).write_text(f"{os.getpid() if pid is None else pid}\n")


def remove_pidfile(path: Path) -> None:
    """Remove ``path`` if it names this process; a newer program's pidfile stays."""
    with contextlib.suppress(OSError):
        if read_pidfile(path) == os.getpid():
            os.unlink(path)
