"""Every exception entrega defines lives in ``entrega/errors.py``, under ``EntregaError``,
and the module's docstring draws all of them (one tree, as httpx's ``_exceptions.py``)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from entrega import errors

SRC = Path(errors.__file__).resolve().parent
#: Programs sent to a fleet host as source (python3 -c): they cannot import entrega, so
#: their own refusal is theirs, turned into entrega's errors where the answer is read.
HOST_PROGRAMS = {SRC / "targets" / "ssh" / "hostside.py"}
OURS = {name for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__}


def _base_names(node: ast.ClassDef) -> list[str]:
    names = []
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.append(base.id)
        elif isinstance(base, ast.Attribute):
            names.append(base.attr)
    return names


def test_no_exception_class_outside_errors_py() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == Path(errors.__file__).resolve() or path in HOST_PROGRAMS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and any(
                    name.endswith(("Error", "Exception")) or name in OURS
                    for name in _base_names(node)):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.name}")
    assert found == [], "exception classes outside errors.py:\n" + "\n".join(found)


def test_one_root_and_the_docstring_draws_every_class() -> None:
    assert errors.__doc__ is not None
    for name in OURS:
        cls = getattr(errors, name)
        assert cls is errors.EntregaError or issubclass(cls, errors.EntregaError), name
        assert f"── {name} " in errors.__doc__ or name == "EntregaError", \
            f"{name} is missing from the tree in errors.py's docstring"
