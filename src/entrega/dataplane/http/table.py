"""The live route table: ``Routes`` compiled for the data path.

A table is immutable once built and the proxy holds exactly one reference to the live
one, so ``PUT /routes`` swaps every rule at once (weights, cohort, preview): a request
sees either the old table or the new one, never a mix. A request keeps the
``ReleaseRoute`` it picked, so it finishes on that release even if the release is removed
meanwhile.

Weights are integer percents summing to 100, compiled into a 100-slot array: picking is
one ``random()`` and one index, and over many requests each release gets exactly its share
in expectation. An all-zero (or empty) weight map is allowed: only cohort traffic is routed
and everything else gets 503.

The cohort's release takes the first slots, then the others in name order. A user with an
id is routed by slot ``bucket - 1`` instead of a random one, so the cohort release gets the
users of buckets ``1..weight``: as its weight (or the cohort's percent, which uses the same
buckets) grows, users only ever move to it, never back and forth.

Pins: a client without a user id is drawn a slot (0..99) at random and keeps it in the
``entrega-pin`` cookie as ``<tag>.<slot>``, where the tag names the table's ``pin_salt``
(the rollout's id, set by the controller). Within one rollout the visitor is routed by its
slot exactly as a user by its bucket: it stays on one release, and as the canary's weight
grows it only ever moves to the canary (10% -> 50% keeps the first 10%). A pin drawn in
another rollout (another tag), or none, or a forged one, is drawn again: old pins cannot
keep a visitor on stable through a whole rollout, and one rollout's canary visitors are
not the next one's. A rollback gives stable every slot, so it moves every visitor back.
The ``entrega-release`` cookie names the release the visitor was served (feedback intake
reads it); it is set again whenever that changes, and never decides a route.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from urllib.parse import quote

from entrega.dataplane.http.cohort import CohortMatcher
from entrega.dataplane.http.metrics import ReleaseStats
from entrega.dataplane.http.pool import EndpointPool
from entrega.dataplane.routes import Routes, pin_tag, weight_slots
from entrega.net import Endpoint

_random = random.random

#: the release a visitor was served (informative: feedback attribution reads it)
PIN_COOKIE = "entrega-release"
#: a visitor's draw, ``<tag>.<slot>``: what its route is computed from
DRAW_COOKIE = "entrega-pin"
_COOKIE_ATTRIBUTES = b"; Path=/; HttpOnly; SameSite=Lax\r\n"
#: characters allowed unquoted in a cookie value (RFC 6265 cookie-octet, minus ``%``)
_COOKIE_SAFE = "!#$&'()*+-./:<=>?@[]^_`{|}~"


def pin_value(version: str) -> bytes:
    """The ``entrega-release`` cookie value naming ``version`` (percent-quoted if needed)."""
    return quote(version, safe=_COOKIE_SAFE).encode("ascii")


class ReleaseRoute:
    """One release as the data path sees it: its pools in round-robin, its counters."""

    __slots__ = ("version", "pools", "stats", "release_header", "pin", "pin_header", "_next")

    def __init__(self, version: str, pools: list[EndpointPool], stats: ReleaseStats, *,
                 release_header: bool = True) -> None:
        self.version = version
        self.pools = pools
        self.stats = stats
        #: precomputed response header line naming the release
        self.release_header = (b"X-Entrega-Release: " + version.encode("latin-1") + b"\r\n"
                               if release_header else b"")
        self.pin = pin_value(version)
        #: the release header plus the Set-Cookie that pins a client to this release
        self.pin_header = self.release_header + (
            b"Set-Cookie: " + PIN_COOKIE.encode() + b"=" + self.pin + _COOKIE_ATTRIBUTES)
        self._next = 0

    def next_pool(self) -> EndpointPool:
        """The next endpoint in round-robin order (the release has at least one)."""
        pools = self.pools
        i = self._next
        self._next = i + 1 if i + 1 < len(pools) else 0
        return pools[i]


class RouteTable:
    __slots__ = ("routes", "releases", "slots", "cohort", "cohort_route", "preview",
                 "draws", "draw_headers")

    def __init__(
        self,
        routes: Routes,
        *,
        pool_for: Callable[[Endpoint], EndpointPool],
        stats_for: Callable[[str], ReleaseStats],
        app: str = "",
    ) -> None:
        routes.validate()
        self.routes = routes
        self.releases = {
            version: ReleaseRoute(version, [pool_for(e) for e in endpoints], stats_for(version))
            for version, endpoints in routes.backends.items()
        }
        first = routes.cohort.release if routes.cohort else None
        #: 100 entries (or none): slot -> release, the cohort's release first, then by name
        self.slots = [self.releases[version] for version in weight_slots(routes.weights, first)]
        self.cohort = CohortMatcher(routes.cohort, default_app=app) if routes.cohort else None
        self.cohort_route = self.releases[routes.cohort.release] if routes.cohort else None
        self.preview = self.releases[routes.preview] if routes.preview else None
        tag = pin_tag(routes.pin_salt).encode()
        values = [draw_value(tag, slot) for slot in range(len(self.slots))]
        #: ``entrega-pin`` cookie value drawn under this table's salt -> its slot
        self.draws = {value: slot for slot, value in enumerate(values)}
        #: slot -> the response headers of a fresh draw: release, and both cookies
        self.draw_headers = [
            route.pin_header + b"Set-Cookie: " + DRAW_COOKIE.encode() + b"=" + value
            + _COOKIE_ATTRIBUTES for route, value in zip(self.slots, values, strict=True)]

    def draw(self) -> int:
        """A fresh slot for a visitor (0..99), or -1 when no release takes non-cohort
        traffic."""
        return int(_random() * 100) if self.slots else -1

    def pick(self) -> ReleaseRoute | None:
        """A release by weight, or None when no release takes non-cohort traffic."""
        slot = self.draw()
        return self.slots[slot] if slot >= 0 else None

    def pick_for_bucket(self, bucket: int) -> ReleaseRoute | None:
        """The release of a user in ``bucket`` (1..100) by weight, stable for that user."""
        slots = self.slots
        return slots[bucket - 1] if slots else None

    def endpoints(self) -> set[tuple[str, int]]:
        return {(e.host, e.port) for eps in self.routes.backends.values() for e in eps}


def draw_value(tag: bytes, slot: int) -> bytes:
    """The ``entrega-pin`` cookie value of ``slot`` drawn under the salt named ``tag``."""
    return tag + b".%d" % slot
