"""Optional native build of the embedded router's data path (everything else is in pyproject).

By default this builds the pure-Python package, exactly as without this file. With
``ENTREGA_COMPILE=1`` in the environment, the router's hot-path modules (below) are also
compiled to C extensions with mypyc, which takes ~10-15% off the router's CPU per request
(bench/router.py, ``cpu_us_per_request``; it reports ``"compiled"``):

    ENTREGA_COMPILE=1 pip install -e '.[test,stats]'    # or: make compile

It needs a C compiler and Python headers; mypy (which ships mypyc) is fetched as a build
requirement. If compiling fails, a warning is printed and the pure-Python modules are
installed: the .py sources always ship, and Python imports an extension module in
preference to the .py next to it.

Editable installs put the .so files next to the sources in src/ (they are gitignored):
after editing one of these modules, run ``make compile`` again, or ``make uncompile`` to
delete them and run the .py files.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: the modules every proxied request runs through (all of them compile as they are)
COMPILED_MODULES = [
    f"src/entrega/routers/embedded/{name}.py"
    for name in ("wire", "metrics", "cohort", "pool", "table", "upstream", "exchange", "proxy")
]
#: mypy (mypyc) for the build; tested with 2.4.1; ENTREGA_MYPY overrides it
MYPY_REQUIREMENT = os.environ.get("ENTREGA_MYPY", "mypy>=1.10")


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
    if os.environ.get("ENTREGA_COMPILE", "").strip().lower() not in ("1", "true", "yes", "on"):
        return {}
    try:
        from mypyc.build import mypycify
    except ImportError:
        # PEP 517 frontends first ask for build requirements (this answer), install them
        # into the build environment, then run this file again with mypyc importable.
        _warn("ENTREGA_COMPILE is set but mypyc is not importable: asking for "
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
