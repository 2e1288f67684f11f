"""What crosses between the controller and the host agent: plain records, checked by hand.

The host agent (:mod:`.host`, driven in process by the local target or through
:mod:`.hostctl` by one command per operation) takes and gives only what JSON can carry:
the records below turn into JSON with ``dataclasses.asdict`` and come back with
``from_json``. A remote host has no pydantic, so a request is checked here field by field,
with the standard library, and a field that is missing, of the wrong type or unknown
(a typo must not pass for a default) is a :class:`~entrega.errors.BadRequest` naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from entrega.errors import BadRequest


@dataclasses.dataclass(frozen=True)
class ReleaseSpec:
    """How to run one release's instances on a host.

    ``command`` is a shell line run in ``path`` (the unpacked release on that host) with
    ``$PORT`` and ``ENTREGA_APP``, ``ENTREGA_VERSION``, ``ENTREGA_ENVIRONMENT``,
    ``ENTREGA_INSTANCE`` set on top of ``env`` and the host's ``PATH``/``HOME``/``LANG``:
    nothing else of the agent's environment. ``ports`` (low, high), inclusive, bounds the
    instances' ports; None: ports the kernel picks.
    """

    version: str
    path: str
    command: str
    env: dict[str, str]
    instances: int
    ports: tuple[int, int] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReleaseSpec:
        env = field(data, "env", dict)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise BadRequest("field 'env': expected an object of strings")
        ports = field(data, "ports", list, optional=True)
        if ports is not None and not (
                len(ports) == 2 and all(_is_int(p) and 0 < p < 65536 for p in ports)
                and ports[0] <= ports[1]):
            raise BadRequest("field 'ports': expected [low, high], two ports with low <= high")
        return cls(version=field(data, "version", str), path=field(data, "path", str),
                   command=field(data, "command", str), env=dict(env),
                   instances=field(data, "instances", int),
                   ports=None if ports is None else (ports[0], ports[1]))


@dataclasses.dataclass(frozen=True)
class ObservedInstance:
    """One instance directory as found now; ``alive`` means supervised now.

    ``status`` is the supervisor's (``running``, ``backoff``...), ``stopped``, or ``lost``
    when its supervisor died without writing so. ``pid`` is the app's (None between two
    runs, or when not alive); times are Unix seconds."""

    version: str
    instance: str
    port: int
    alive: bool
    status: str
    pid: int | None
    supervisor_pid: int
    restarts: int
    started_at: float | None
    last_exit_code: int | None
    directory: str


@dataclasses.dataclass(frozen=True)
class InstanceReport:
    """What the supervisor knows of one instance that a health probe cannot see.

    ``exits``: how often its app has exited so far (the crash-loop rule counts them from
    when probing began); ``note``: why it may be failing, in words ("" when nothing is
    wrong that the supervisor knows of); ``stderr``: the tail of the current run's stderr
    (the whole log's when that run wrote nothing), formatted to end an error message."""

    instance: str
    exits: int
    restarts: int
    last_exit_code: int | None
    note: str
    stderr: str


_KINDS: dict[type, str] = {str: "a string", int: "an integer", dict: "an object",
                           list: "a list", float: "a number"}


def field(data: Mapping[str, Any], name: str, kind: type, *, optional: bool = False) -> Any:
    """``data[name]`` if it is of ``kind`` (an int counts as a float; a bool as neither);
    None when ``optional`` and missing or null. Raises :class:`BadRequest` otherwise."""
    value = data.get(name)
    if value is None:
        if optional:
            return None
        raise BadRequest(f"field {name!r} is missing: expected {_KINDS[kind]}")
    accepted: tuple[type, ...] = (int, float) if kind is float else (kind,)
    if isinstance(value, bool) or not isinstance(value, accepted):
        raise BadRequest(f"field {name!r}: expected {_KINDS[kind]}, got {_json_kind(value)}")
    return value


def refuse_unknown(data: Mapping[str, Any], known: set[str], *, operation: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadRequest(f"{operation}: unknown field {unknown[0]!r}",
                         hint="expected only " + ", ".join(sorted(known)))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "true or false"
    for kind, words in _KINDS.items():
        if isinstance(value, kind):
            return words
    return "another kind of value"


#: The fields of :class:`ReleaseSpec` as a request carries them.
RELEASE_FIELDS = {f.name for f in dataclasses.fields(ReleaseSpec)}
