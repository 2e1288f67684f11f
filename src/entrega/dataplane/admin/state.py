"""The router's persisted route table (``--state``), so a restarted router serves the
last routes it was given without waiting for the controller.

Written with write-to-temp + fsync + rename + fsync of the directory: after a crash at
any point the file holds either the old table or the new one, whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from entrega.dataplane.routes import Routes


def save_routes(path: Path, routes: Routes) -> None:
    data = routes.to_dict()
    data.pop("draining", None)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_routes(path: Path) -> Routes | None:
    """The saved table, or None when there is none. Raises ValueError if it is unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return parse_routes(text)


def parse_routes(text: str | bytes) -> Routes:
    """``Routes.to_dict()`` JSON -> Routes; ValueError with a readable reason otherwise
    (the shape only: ``Routes.validate`` checks the rules)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from None
    try:
        return Routes.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"not a route table ({exc}); expected "
                         "{backends: {release: [{host, port, instance}]}, weights: "
                         "{release: percent}, cohort: {...} | null, preview: release | null}"
                         ) from None
