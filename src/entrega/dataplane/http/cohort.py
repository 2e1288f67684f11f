"""Cohort matching: which requests go to the cohort's release whatever the weights.

A user's bucket is ``murmur3_32(f"{app}:{user_id}") % 100 + 1`` (1..100), so the same user
lands in the same bucket on every request, on every router, and after restarts; raising
``percent`` only adds users (nobody flips back and forth). murmur3 x86_32 with seed 0 is
the hash HAProxy, Envoy and most feature-flag tools use for this, so buckets computed
elsewhere agree with ours.
"""

from __future__ import annotations

from entrega.dataplane.http import wire
from entrega.dataplane.routes import CohortRule

_C1 = 0xCC9E2D51
_C2 = 0x1B873593
_M32 = 0xFFFFFFFF


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86_32 of ``data`` as an unsigned 32-bit int."""
    h = seed & _M32
    length = len(data)
    end = length & ~3
    for i in range(0, end, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _C1) & _M32
        k = ((k << 15) | (k >> 17)) & _M32
        k = (k * _C2) & _M32
        h ^= k
        h = ((h << 13) | (h >> 19)) & _M32
        h = (h * 5 + 0xE6546B64) & _M32
    tail = length & 3
    if tail:
        k = int.from_bytes(data[end:], "little")
        k = (k * _C1) & _M32
        k = ((k << 15) | (k >> 17)) & _M32
        k = (k * _C2) & _M32
        h ^= k
    h ^= length
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def user_bucket(app: str, user_id: str) -> int:
    """The user's stable bucket, 1..100."""
    return murmur3_32(f"{app}:{user_id}".encode()) % 100 + 1


#: Buckets of recently seen users: murmur3 in Python costs a few microseconds, a dict
#: lookup a few tens of nanoseconds. Cleared whole when full (cheap, and rare).
_BUCKET_CACHE_MAX = 65536


def cookie_value(cookie_header: bytes, name: bytes) -> bytes | None:
    """The value of cookie ``name`` in a ``Cookie:`` header, or None."""
    for part in cookie_header.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            return value.strip().strip(b'"')
    return None


class CohortMatcher:
    """A ``CohortRule`` compiled for the data path (lowercased byte header names)."""

    __slots__ = ("release", "header", "header_value", "user_header", "user_cookie",
                 "users", "percent", "app", "header_names", "request_keys", "_buckets")

    def __init__(self, rule: CohortRule, *, default_app: str) -> None:
        self.release = rule.release
        self.header = rule.header.lower().encode("latin-1") if rule.header else None
        self.header_value = (rule.header_value.encode("latin-1")
                             if rule.header_value is not None else None)
        self.user_header = rule.user_header.lower().encode("latin-1") if rule.user_header else None
        self.user_cookie = rule.user_cookie.encode("latin-1") if rule.user_cookie else None
        self.users = rule.users
        self.percent = rule.percent
        self.app = rule.app or default_app
        names = {n for n in (self.header, self.user_header) if n}
        if self.user_cookie:
            names.add(b"cookie")
        #: lowercased names of the request headers ``matches`` needs to see
        self.header_names = frozenset(names)
        #: ``wire.name_key`` of every request header the data path must look at
        self.request_keys = wire.REQUEST_KEYS | {wire.name_key(name) for name in names}
        self._buckets: dict[bytes, int] = {}

    def matches(self, values: dict[bytes, bytes]) -> bool:
        """``values``: lowercased header name -> value, for the names in ``header_names``."""
        return self.classify(values)[0]

    def classify(self, values: dict[bytes, bytes]) -> tuple[bool, int]:
        """(does the request match the rule, its user's bucket 1..100 or 0 without a user id).

        ``values``: lowercased header name -> value, for the names in ``header_names``.
        """
        if self.header is not None:
            value = values.get(self.header)
            if value is not None and (self.header_value is None or value == self.header_value):
                return True, 0
        user: bytes | None = None
        if self.user_header is not None:
            user = values.get(self.user_header)
        if user is None and self.user_cookie is not None:
            cookies = values.get(b"cookie")
            if cookies is not None:
                user = cookie_value(cookies, self.user_cookie)
        if not user:
            return False, 0
        bucket = self._buckets.get(user)
        if bucket is None:
            if len(self._buckets) >= _BUCKET_CACHE_MAX:
                self._buckets.clear()
            bucket = self._buckets[user] = user_bucket(self.app, user.decode("latin-1"))
        if self.users and user.decode("latin-1") in self.users:
            return True, bucket
        return bucket <= self.percent, bucket
