"""The build of entrega: pyproject.toml has everything but the compiled router.

``pip install`` compiles the embedded router's hot-path modules (every module of
src/entrega/dataplane/http/, below) to C extensions with mypyc, which halves the router's
CPU per request in pure-Python terms (bench/router.py reports ``"compiled"`` and
``cpu_us_per_request``). mypy, which ships mypyc, is a build requirement (pyproject's
[build-system]); the build needs a C compiler and the Python headers.
``ENTREGA_COMPILE=0`` in the environment skips it:

    ENTREGA_COMPILE=0 pip install -e .

If compiling fails (no compiler, no headers), a warning is printed and the pure-Python
modules are installed: the .py sources always ship, and Python imports an extension
module in preference to the .py next to it. ``ENTREGA_PURE_PYTHON=1`` at run time imports
the .py files even where the build exists (entrega/dataplane/build.py).

Editable installs put the .so files next to the sources in src/ (they are gitignored):
after editing one of these modules, run ``make install`` (which rebuilds when they
change) or pip install -e . again; the router logs a warning and the test suite stops
when a compiled module is older than its source.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: the modules every proxied request runs through: those of the http/ folder, which is the
#: list (entrega.dataplane.build.HOT_PATH reads the same folder; setup.py must not import
#: the package it builds)
COMPILED_MODULES = sorted(
    path.as_posix() for path in Path("src/entrega/dataplane/http").glob("*.py")
    if path.name != "__init__.py")
#: mypy (mypyc) for the build; tested with 2.4.1; ENTREGA_MYPY overrides it
MYPY_REQUIREMENT = os.environ.get("ENTREGA_MYPY", "mypy==2.4.1")


def _warn(message: str) -> None:
    print(f"entrega setup.py: {message}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python when the extensions do not all build.

    It is all or nothing: the modules call each other natively, so a compiled module must
    not meet an interpreted one of the same group. setuptools copies in-place builds to
    src/ only after every extension built; whatever a failed build left in build/ is
    deleted so that no wheel ships half of it.
    """

    def run(self) -> None:
        inplace = getattr(self, "inplace", 0)
        try:
            super().run()
        except Exception as exc:  # no compiler, no Python headers, ...
            _warn(f"compiling the router failed ({exc}); installing pure Python instead")
            self.inplace = 0
            for path in self.get_outputs():
                if os.path.exists(path):
                    os.remove(path)
            self.inplace = inplace
            self.extensions.clear()


def _compiled() -> dict[str, object]:
    if os.environ.get("ENTREGA_COMPILE", "").strip().lower() in ("0", "false", "no", "off"):
        return {}
    try:
        from mypyc.build import mypycify
    except ImportError:
        # PEP 517 frontends first ask for build requirements (this answer), install them
        # into the build environment, then run this file again with mypyc importable.
        _warn("mypyc is not importable: asking for "
              f"{MYPY_REQUIREMENT} as a build requirement")
        return {"setup_requires": [MYPY_REQUIREMENT]}
    try:
        # Not pyproject's [tool.mypy]: its pydantic plugin is not in the build environment.
        ext_modules = mypycify(["--config-file=", "--ignore-missing-imports", *COMPILED_MODULES],
                               opt_level="3", group_name="entrega_router")
    except (Exception, SystemExit) as exc:  # mypyc reports type errors with SystemExit
        _warn(f"mypyc cannot compile the router ({exc!r}); installing pure Python instead")
        return {}
    return {"setup_requires": [MYPY_REQUIREMENT], "ext_modules": ext_modules,
            "cmdclass": {"build_ext": OptionalBuildExt}}


setup(**_compiled())
