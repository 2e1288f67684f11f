"""Which build of the router's hot path runs: compiled by mypyc (the default), or the .py.

``pip install`` compiles the modules in ``HOT_PATH`` (every module of the ``http/``
folder: the folder is the list) to C extensions with mypyc (see setup.py;
``ENTREGA_COMPILE=0`` opts out, and a machine without a C compiler falls back to pure
Python). The .py sources always ship, and Python imports an extension module in
preference to the .py next to it, so two things can go wrong, and this module answers
both:

- an editable install whose .py files changed after the build runs the old compiled
  code: ``stale_modules`` names them (the router logs it, the test suite refuses to run);
- to run, debug or test the pure-Python fallback on a machine that has the build,
  ``ENTREGA_PURE_PYTHON=1`` in the environment makes the package import the .py files
  (``prefer_sources``, called from ``http/__init__.py``, before any of them loads).

This module itself is never compiled.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

PACKAGE = "entrega.dataplane.http"
_HTTP_DIR = Path(__file__).resolve().parent / "http"
#: the modules every proxied request runs through, compiled together (setup.py): the
#: modules of the http/ folder, read from it so that nothing else repeats the list
HOT_PATH = tuple(sorted(path.stem for path in _HTTP_DIR.glob("*.py")
                        if path.stem != "__init__"))
PURE_ENV = "ENTREGA_PURE_PYTHON"


def pure_python_requested() -> bool:
    return os.environ.get(PURE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Finds the hot-path modules as their .py files, before the path finder sees the
    compiled extension next to them."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != PACKAGE or name not in HOT_PATH:
            return None
        return importlib.util.spec_from_file_location(fullname, _HTTP_DIR / f"{name}.py")


def prefer_sources() -> None:
    """Import the hot path from its .py files from now on (idempotent)."""
    if not any(isinstance(finder, _SourcesFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourcesFirst())


def _extensions() -> dict[str, Path]:
    """Hot-path module -> the C extension it imports from, for those that are compiled."""
    found = {}
    for name in HOT_PATH:
        spec = importlib.util.find_spec(f"{PACKAGE}.{name}")
        if (spec is not None and spec.origin is not None
                and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)):
            found[name] = Path(spec.origin)
    return found


def compiled_modules() -> list[str]:
    """The hot-path modules that import as C extensions in this interpreter."""
    return list(_extensions())


def stale_modules() -> list[str]:
    """Compiled hot-path modules whose .py source is newer than their extension."""
    return [name for name, extension in _extensions().items()
            if (source := _HTTP_DIR / f"{name}.py").exists()
            and source.stat().st_mtime > extension.stat().st_mtime]
