"""Cohort matching and the murmur3 hash behind user buckets (pure, no processes)."""

from __future__ import annotations

import pytest

from entrega.dataplane.http.cohort import (
    CohortMatcher,
    cookie_value,
    murmur3_32,
    user_bucket,
)
from entrega.dataplane.routes import CohortRule

# Published MurmurHash3 x86_32 vectors (SMHasher / the reference test list).
VECTORS = [
    (b"", 0, 0),
    (b"", 1, 0x514E28B7),
    (b"", 0xFFFFFFFF, 0x81F16F39),
    (b"\xff\xff\xff\xff", 0, 0x76293B50),
    (b"\x21\x43\x65\x87", 0, 0xF55B516B),
    (b"\x21\x43\x65\x87", 0x5082EDEE, 0x2362F9DE),
    (b"\x21\x43\x65", 0, 0x7E4A8634),
    (b"\x21\x43", 0, 0xA0F7B07A),
    (b"\x21", 0, 0x72661CF4),
    (b"\x00\x00\x00\x00", 0, 0x2362F9DE),
    (b"hello", 0, 0x248BFA47),
    (b"Hello, world!", 0x9747B28C, 0x24884CBA),
    (b"The quick brown fox jumps over the lazy dog", 0, 0x2E4FF723),
    (b"The quick brown fox jumps over the lazy dog", 0x9747B28C, 0x2FA826CD),
]


@pytest.mark.parametrize(("data", "seed", "expected"), VECTORS,
                         ids=[f"{d[:12]!r}-seed{s:x}" for d, s, _ in VECTORS])
def test_murmur3_known_vectors(data: bytes, seed: int, expected: int) -> None:
    assert murmur3_32(data, seed) == expected


def test_user_bucket_is_stable_and_spread() -> None:
    assert user_bucket("shop", "alice") == murmur3_32(b"shop:alice") % 100 + 1
    buckets = [user_bucket("shop", f"user-{i}") for i in range(10_000)]
    assert min(buckets) == 1 and max(buckets) == 100
    share = sum(b <= 20 for b in buckets) / len(buckets)
    assert 0.18 < share < 0.22  # ~20% of users are in buckets 1..20


def test_cookie_value() -> None:
    header = b'theme=dark; entrega-cohort="bob"; x=1'
    assert cookie_value(header, b"entrega-cohort") == b"bob"
    assert cookie_value(header, b"x") == b"1"
    assert cookie_value(header, b"missing") is None


def _matcher(**kw: object) -> CohortMatcher:
    return CohortMatcher(CohortRule(release="v2", **kw), default_app="shop")  # type: ignore[arg-type]


@pytest.mark.parametrize(("rule", "values", "expected"), [
    ({"header": "X-Beta"}, {b"x-beta": b"1"}, True),
    ({"header": "X-Beta"}, {}, False),
    ({"header": "X-Beta", "header_value": "yes"}, {b"x-beta": b"yes"}, True),
    ({"header": "X-Beta", "header_value": "yes"}, {b"x-beta": b"no"}, False),
    ({"user_header": "X-User", "users": frozenset({"alice"})}, {b"x-user": b"alice"}, True),
    ({"user_header": "X-User", "users": frozenset({"alice"})}, {b"x-user": b"mallory"}, False),
    ({"user_cookie": "uid", "users": frozenset({"bob"})}, {b"cookie": b"a=1; uid=bob"}, True),
    ({"user_cookie": "uid", "users": frozenset({"bob"})}, {b"cookie": b"uid=eve"}, False),
    ({"user_header": "X-User", "percent": 100}, {b"x-user": b"anyone"}, True),
    ({"user_header": "X-User", "percent": 0}, {b"x-user": b"anyone"}, False),
    ({"user_header": "X-User", "percent": 100}, {}, False),
], ids=["header", "header-absent", "header-value", "header-value-differs", "allowlist-header",
        "not-in-allowlist", "allowlist-cookie", "cookie-not-in-allowlist", "percent-100",
        "percent-0", "no-user-id"])
def test_cohort_matching(rule: dict[str, object], values: dict[bytes, bytes],
                         expected: bool) -> None:
    assert _matcher(**rule).matches(values) is expected


def test_cohort_percent_uses_app_and_user_bucket() -> None:
    users = [f"u{i}" for i in range(200)]
    inside = [u for u in users if user_bucket("shop", u) <= 30]
    matcher = _matcher(user_header="X-User", percent=30)
    assert [u for u in users if matcher.matches({b"x-user": u.encode()})] == inside
    other_app = CohortMatcher(CohortRule(release="v2", user_header="X-User", percent=30,
                                         app="other"), default_app="shop")
    assert [u for u in users if other_app.matches({b"x-user": u.encode()})] != inside
