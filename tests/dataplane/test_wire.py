"""Header names are recognised whatever their case, through the cheap ``name_key`` filter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from entrega.dataplane.http import wire
from entrega.dataplane.http.cohort import CohortMatcher
from entrega.dataplane.routes import CohortRule

SPECIAL = sorted(set(wire.REQUEST_SPECIAL) | set(wire.RESPONSE_SPECIAL))


def spelt(name: bytes, upper: list[bool]) -> bytes:
    return bytes(c - 32 if up and 97 <= c <= 122 else c
                 for c, up in zip(name, upper[:len(name)], strict=True))


@given(st.sampled_from(SPECIAL), st.lists(st.booleans(), min_size=20, max_size=20))
def test_every_spelling_of_a_special_header_passes_the_filter(name: bytes,
                                                              upper: list[bool]) -> None:
    variant = spelt(name, upper)
    key = wire.name_key(variant)
    assert key == wire.name_key(name)
    if name in wire.REQUEST_SPECIAL:
        assert key in wire.REQUEST_KEYS
    if name in wire.RESPONSE_SPECIAL:
        assert key in wire.RESPONSE_KEYS


@given(st.lists(st.booleans(), min_size=20, max_size=20))
def test_cohort_headers_pass_the_filter_in_any_case(upper: list[bool]) -> None:
    matcher = CohortMatcher(CohortRule(release="v2", header="X-Entrega-Cohort",
                                       header_value="beta", user_header="X-User-Id"),
                            default_app="shop")
    for name in (b"x-entrega-cohort", b"x-user-id"):
        assert wire.name_key(spelt(name, upper)) in matcher.request_keys


def test_common_headers_are_filtered_out() -> None:
    # the point of the filter: these are passed on without a lowercase and a lookup
    for name in (b"Date", b"Server", b"Content-Type", b"ETag", b"Accept-Ranges",
                 b"Last-Modified", b"User-Agent", b"Accept", b"Accept-Language"):
        assert wire.name_key(name) not in wire.REQUEST_KEYS | wire.RESPONSE_KEYS
