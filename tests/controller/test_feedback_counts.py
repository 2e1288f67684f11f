"""What the ``feedback`` metric is fed: the ratings of canary and stable given in the
environment since the analysis window began, read from a real (SQLite) store."""

from __future__ import annotations

import pytest

from entrega.analysis.feedback import FeedbackCounts
from entrega.controller.observe import count_ratings
from entrega.store import Store
from entrega.store.insights_repository import InsightsRepository

WINDOW_START = 1000.0


@pytest.fixture
def insights(store: Store) -> InsightsRepository:
    return InsightsRepository(store)


def rate(insights: InsightsRepository, version: str, rating: int | None, *, at: float,
         environment: str | None = "production", app: str = "shop") -> None:
    insights.add_feedback(app=app, version=version, environment=environment,
                          claimed_version=None, rating=rating,
                          comment=None if rating else "no stars", user_id=None, tags=[],
                          client="c", at=at)


def test_only_the_windows_ratings_of_this_environment_count(
        insights: InsightsRepository) -> None:
    for rating in (1, 2, 3, 5):
        rate(insights, "v2", rating, at=WINDOW_START + 1)
    rate(insights, "v2", 1, at=WINDOW_START)                 # the window's first instant
    rate(insights, "v2", 1, at=WINDOW_START - 0.5)           # before the window: not counted
    rate(insights, "v2", 1, at=WINDOW_START + 2, environment="staging")
    rate(insights, "v2", 1, at=WINDOW_START + 2, environment=None)
    rate(insights, "v2", 1, at=WINDOW_START + 2, app="other")
    rate(insights, "v2", None, at=WINDOW_START + 3)          # a comment alone is no rating
    for rating in (4, 5, 5, 2):
        rate(insights, "v1", rating, at=WINDOW_START + 4)
    rate(insights, "v0", 1, at=WINDOW_START + 4)             # neither canary nor stable

    counts = count_ratings(insights, app="shop", environment="production", canary="v2",
                           stable="v1", since=WINDOW_START)
    assert counts == FeedbackCounts(canary_ratings=5, canary_low=3, stable_ratings=4,
                                    stable_low=1)


def test_no_ratings_and_no_stable(insights: InsightsRepository) -> None:
    assert count_ratings(insights, app="shop", environment="production", canary="v2",
                         stable=None, since=WINDOW_START) == FeedbackCounts(0, 0, 0, 0)
    rate(insights, "v2", 2, at=WINDOW_START + 1)
    assert count_ratings(insights, app="shop", environment="production", canary="v2",
                         stable=None, since=WINDOW_START) == FeedbackCounts(1, 1, 0, 0)
