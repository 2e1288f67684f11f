"""Token buckets: a burst, then the sustained rate; clients apart; the table bounded."""

from __future__ import annotations

import pytest

from entrega.feedback import TokenBuckets


@pytest.mark.parametrize(("times", "expected"), [
    ([0, 0, 0, 0], [0.0, 0.0, 0.0, 2.0]),
    ([0, 0, 0, 1, 2], [0.0, 0.0, 0.0, 1.0, 0.0]),
    ([0, 0, 0, 100, 100, 100, 100], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]),
], ids=["burst-then-wait", "refill", "full-again-never-more-than-burst"])
def test_bucket(times: list[float], expected: list[float]) -> None:
    buckets = TokenBuckets(rate_per_s=0.5, burst=3)
    assert [buckets.take("a", now=t) for t in times] == expected


def test_clients_have_their_own_buckets_and_the_table_is_bounded() -> None:
    buckets = TokenBuckets(rate_per_s=0.001, burst=1, max_clients=2)
    assert buckets.take("a", now=0) == 0.0 and buckets.take("b", now=0) == 0.0
    assert buckets.take("a", now=0) > 0
    buckets.take("c", now=0)  # "b" is the least recently seen: forgotten
    assert buckets.take("b", now=0) == 0.0


def test_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate_per_s=0, burst=1)
