"""One codec: typed values to plain data and back, wherever JSON crosses the store or a
process, and configuration sections to the domain values they describe.

What entrega reads back was written by another process, or by another version of entrega
(a rollout's stored state, a supervisor's state file): it is validated, never trusted. A
:class:`Codec` wraps a pydantic ``TypeAdapter`` over the domain's own frozen dataclasses,
so the pure core never sees pydantic, every field is checked, and a bad document raises
:class:`~entrega.errors.InvalidRecord` naming the record and the field instead of a
``KeyError`` (or an ``assert``) somewhere later. Fields a document has and the type does
not are ignored: a row written by a newer entrega still loads.

:func:`from_config` is the one mapping from a config section to a domain dataclass whose
fields carry the same names (``HealthConfig`` -> ``HealthCheck``...): a field added to
both needs no third edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from entrega.errors import InvalidRecord

T = TypeVar("T")


#: Errors whose message names a Python class ("an instance of RolloutState").
_NOT_AN_OBJECT = frozenset({"dataclass_type", "model_type", "dict_type", "model_attributes_type"})


def describe(exc: ValidationError, *, limit: int = 3) -> str:
    """The problems of a validation error as ``steps[0].weight: message``, in words (no
    class names)."""
    problems = []
    for error in exc.errors(include_url=False)[:limit]:
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}"
                        for part in error["loc"]).removeprefix(".") or "the document"
        message = ("expected a JSON object" if error["type"] in _NOT_AN_OBJECT
                   else error["msg"].removeprefix("Value error, "))
        problems.append(f"{where}: {message}")
    more = exc.error_count() - limit
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


class Codec(Generic[T]):
    """Dump ``T`` to JSON data and load it back, validating; ``what`` names the record in
    errors (``"the stored state of a rollout"``).

    ``dump`` gives plain JSON data (dicts, lists, strings, numbers; a str-enum as its
    value), with a type's own stored shape applied, so a JSON column writes the document
    it always wrote. The one exception is a non-finite float inside a free-form value (a
    metric's details): it becomes null, as JSON has no infinity (PostgreSQL refuses it).
    """

    def __init__(self, type_: Any, *, what: str) -> None:
        self._adapter: TypeAdapter[T] = TypeAdapter(type_)
        self.what = what

    def dump(self, value: T) -> Any:
        return self._adapter.dump_python(value, mode="json")

    def load(self, data: object) -> T:
        try:
            return self._adapter.validate_python(data)
        except ValidationError as exc:
            raise InvalidRecord(f"{self.what} is invalid: {describe(exc)}") from None

    def load_json(self, text: str | bytes) -> T:
        try:
            return self._adapter.validate_json(text)
        except ValidationError as exc:
            raise InvalidRecord(f"{self.what} is invalid: {describe(exc)}") from None


#: One adapter per domain type: building one costs far more than using it.
_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(cls: type[Any]) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    return adapter


def from_config(cls: type[T], section: BaseModel | Mapping[str, Any], **overrides: Any) -> T:
    """The domain dataclass ``cls`` from a config section with the same field names.

    The section's fields that ``cls`` does not have are left out; ``overrides`` give the
    ones the section does not have (or spells otherwise). Lists become tuples where
    ``cls`` wants them. Config is validated already, so a mismatch here is a programming
    error and raises pydantic's own error.
    """
    values = section.model_dump() if isinstance(section, BaseModel) else dict(section)
    return _adapter(cls).validate_python({**values, **overrides})
