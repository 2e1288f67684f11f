"""The route table: what the controller tells a router, and the rules every table obeys.

Both sides of the data plane use it. The controller builds a ``Routes`` and hands it to a
router adapter (``routers/``); the embedded router receives it as JSON on its control
socket (``PUT /routes``), persists it (``routes.json``) and compiles it for the data path
(``http/table.py``); the HAProxy adapter renders it into maps. So it lives at the bottom
of the data plane and imports nothing of the controller.

The rules of a table are written once, in :meth:`Routes.validate`: every router kind
refuses the same tables with the same sentences (a router may refuse more, what it cannot
express: HAProxy's map syntax limits release names). JSON from another process or a file
is read by :meth:`Routes.from_dict`, which checks the type of every field and names the one
that is wrong (``backends['v2'][0].port: ...``), so a bad body is a clear 400 and never a
crash. Neither runs per request: a table is checked when it is set, then compiled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from entrega.net import Endpoint


@dataclass(frozen=True)
class CohortRule:
    """Requests that go to ``release`` whatever the weights (selected users first).

    A request matches if it carries ``header`` (with ``header_value`` when set), or its
    user id (from ``user_header`` or ``user_cookie``) is in ``users``, or that user id's
    stable hash bucket (murmur3 of ``"<app>:<user id>"`` mapped to 1..100) is
    ``<= percent``.
    """

    release: str
    header: str | None = None
    header_value: str | None = None
    user_header: str | None = None
    user_cookie: str | None = None
    users: frozenset[str] = frozenset()
    percent: int = 0
    app: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "release": self.release, "header": self.header, "header_value": self.header_value,
            "user_header": self.user_header, "user_cookie": self.user_cookie,
            "users": sorted(self.users), "percent": self.percent, "app": self.app,
        }

    @classmethod
    def from_dict(cls, data: object, *, where: str = "cohort") -> CohortRule:
        """``to_dict()`` JSON -> CohortRule. Raises ValueError naming the wrong field."""
        obj = _object(data, where)
        users = _field(obj, "users", [])
        if not isinstance(users, list):
            raise ValueError(f"{where}.users: expected a list of user ids, "
                             f"got {_kind(users)}")
        return cls(
            release=_text(_required(obj, "release", where), f"{where}.release"),
            header=_optional_text(obj.get("header"), f"{where}.header"),
            header_value=_optional_text(obj.get("header_value"), f"{where}.header_value"),
            user_header=_optional_text(obj.get("user_header"), f"{where}.user_header"),
            user_cookie=_optional_text(obj.get("user_cookie"), f"{where}.user_cookie"),
            users=frozenset(_text(user, f"{where}.users[{i}]") for i, user in enumerate(users)),
            percent=_whole(_field(obj, "percent", 0), f"{where}.percent"),
            app=_optional_text(obj.get("app"), f"{where}.app") or "",
        )


@dataclass(frozen=True)
class Routes:
    """The whole route table of one router."""

    #: release version -> its instances' endpoints
    backends: dict[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    #: release version -> percent of traffic (sums to 100 when not empty)
    weights: dict[str, int] = field(default_factory=dict)
    cohort: CohortRule | None = None
    #: release served alone on the preview listener (blue-green), if any
    preview: str | None = None
    #: get_routes only: releases removed from backends that still have requests in flight
    draining: dict[str, int] = field(default_factory=dict)
    #: Salt of the sticky-pin draw (the rollout's id): a pin cookie drawn under another
    #: salt (an earlier rollout) is redrawn, so old pins cannot starve a new canary.
    pin_salt: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "backends": {r: [e.to_dict() for e in eps] for r, eps in self.backends.items()},
            "weights": dict(self.weights),
            "cohort": self.cohort.to_dict() if self.cohort else None,
            "preview": self.preview,
            "draining": dict(self.draining),
            "pin_salt": self.pin_salt,
        }

    @classmethod
    def from_dict(cls, data: object) -> Routes:
        """``to_dict()`` JSON -> Routes, every field's type checked; ValueError naming the
        wrong field otherwise (``weights['v2']: expected a whole number, got "50%"``).
        Only the shape: :meth:`validate` checks the rules."""
        obj = _object(data, "the route table")
        backends = _mapping(_field(obj, "backends", {}), "backends")
        cohort = obj.get("cohort")
        return cls(
            backends={release: _endpoints(eps, f"backends[{release!r}]")
                      for release, eps in backends.items()},
            weights={release: _whole(weight, f"weights[{release!r}]") for release, weight
                     in _mapping(_field(obj, "weights", {}), "weights").items()},
            cohort=None if cohort is None else CohortRule.from_dict(cohort),
            preview=_optional_text(obj.get("preview"), "preview"),
            draining={release: _whole(count, f"draining[{release!r}]") for release, count
                      in _mapping(_field(obj, "draining", {}), "draining").items()},
            pin_salt=_optional_text(obj.get("pin_salt"), "pin_salt") or "",
        )

    def validate(self) -> None:
        """Raise ValueError with a sentence naming what is wrong with this table.

        The rules of every router: release names are printable ASCII (they go into a
        response header), endpoints are addresses, weights are percents of releases that
        have endpoints and sum to 100 (or are all 0: only the cohort is routed), and the
        cohort's and the preview's releases have endpoints.
        """
        for version, endpoints in self.backends.items():
            if not version or not version.isprintable() or not version.isascii():
                raise ValueError(f"release name {version!r} must be non-empty printable ASCII")
            for endpoint in endpoints:
                if not 0 < endpoint.port < 65536 or not endpoint.host:
                    raise ValueError(f"release {version!r}: bad endpoint {endpoint.address!r}")
        for version, weight in self.weights.items():
            if version not in self.backends:
                raise ValueError(f"weights name release {version!r} which is not in backends")
            if not 0 <= weight <= 100:
                raise ValueError(f"weight of release {version!r} is {weight}, expected 0..100")
            if weight and not self.backends[version]:
                raise ValueError(f"release {version!r} has weight {weight} but no endpoints")
        total = sum(self.weights.values())
        if total not in (0, 100):
            raise ValueError(f"weights must sum to 100 (or all be 0), they sum to {total}")
        cohort = self.cohort
        if cohort is not None:
            if not self.backends.get(cohort.release):
                raise ValueError(f"cohort release {cohort.release!r} has no endpoints in "
                                 "backends")
            if not 0 <= cohort.percent <= 100:
                raise ValueError(f"cohort percent is {cohort.percent}, expected 0..100")
        if self.preview is not None and not self.backends.get(self.preview):
            raise ValueError(f"preview release {self.preview!r} has no endpoints in backends")

    def same_table(self, other: Routes) -> bool:
        """True when both route the same way (ignores ``draining``)."""
        return (self.backends == other.backends and self.weights == other.weights
                and self.cohort == other.cohort and self.preview == other.preview
                and self.pin_salt == other.pin_salt)


def pin_tag(pin_salt: str) -> str:
    """The short, cookie-safe name of a pin salt that a router writes into each visitor's
    draw cookie: a draw carrying another tag was made in another rollout and is redrawn.
    (8 hex digits of sha256: a collision between two rollouts' tags, about one in four
    billion, only means their visitors keep their draw.)"""
    return hashlib.sha256(pin_salt.encode()).hexdigest()[:8]


def weight_slots(weights: Mapping[str, int], first: str | None) -> list[str]:
    """Slot -> release for ``weights`` (percents summing to 100, or none): ``first`` (the
    cohort's release) takes the first slots, then the others in name order.

    With two releases this makes every slot's release monotone in the weights: raising one
    release's weight only moves slots to it, so users and pinned visitors never flip back.
    Every router kind routes by these slots (the embedded router's table, HAProxy's
    weights map), so a user is on the same release whichever router serves it.
    """
    slots: list[str] = []
    for version, weight in sorted(weights.items(), key=lambda vw: (vw[0] != first, vw[0])):
        slots.extend([version] * weight)
    return slots


# -- reading JSON: every check names where it looked (``backends['v1'][0].port``) ----------

def _endpoints(value: object, where: str) -> tuple[Endpoint, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of endpoints, got {_kind(value)}")
    return tuple(_endpoint(item, f"{where}[{i}]") for i, item in enumerate(value))


def _endpoint(value: object, where: str) -> Endpoint:
    obj = _object(value, where)
    host = _text(_required(obj, "host", where), f"{where}.host")
    port = _whole(_required(obj, "port", where), f"{where}.port")
    instance = _text(obj.get("instance", "0"), f"{where}.instance")
    return Endpoint(host=host, port=port, instance=instance)


def _object(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object, got {_kind(value)}")
    return value


def _mapping(value: object, where: str) -> dict[str, object]:
    obj = _object(value, where)
    for key in obj:
        _text(key, f"{where} key")
    return obj


def _required(obj: Mapping[str, object], key: str, where: str) -> object:
    if key not in obj:
        raise ValueError(f"{where}: missing field {key!r}")
    return obj[key]


def _field(obj: Mapping[str, object], key: str, default: object) -> object:
    """``obj[key]``, or ``default`` when it is missing or null."""
    value = obj.get(key)
    return default if value is None else value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {_kind(value)}")
    return value


def _optional_text(value: object, where: str) -> str | None:
    return None if value is None else _text(value, where)


def _whole(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: expected a whole number, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    """How a JSON value reads in an error: its JSON type, and the value when short."""
    if value is None:
        return "null"
    kind = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), "a value")
    shown = json.dumps(value, default=str)
    return f"{kind} {shown}" if len(shown) <= 40 else kind
