"""The ``feedback`` metric: users' low ratings (1-2), canary against stable, judged by the
sequential test through ``evaluate_window`` as the controller calls it."""

from __future__ import annotations

import random

import pytest

from entrega.analysis.evaluate import evaluate_window, uses_feedback
from entrega.analysis.feedback import FeedbackCounts, judge_feedback
from entrega.analysis.judges import SequentialRule
from entrega.config import DEFAULT_METRICS, MetricConfig

#: Router snapshots with no requests at all: the feedback metric must not need any.
EMPTY = {"started_at": 1.0, "releases": {}}
FEEDBACK = {"feedback": DEFAULT_METRICS["feedback"]}


def judge(counts: FeedbackCounts | None, *, stable: str | None = "v1",
          metrics: dict[str, MetricConfig] | None = None):
    return evaluate_window(metrics or FEEDBACK, baseline=EMPTY, latest=EMPTY, canary="v2",
                           stable=stable, feedback=counts)


@pytest.mark.parametrize(("counts", "stable", "allowed", "words"), [
    pytest.param(FeedbackCounts(20, 12, 60, 3), "v1", {"fail"},
                 "canary's share of low ratings is more than 5 points above stable's "
                 "(max_increase: 0.05), with evidence", id="rated-clearly-worse-fails"),
    pytest.param(FeedbackCounts(12, 10, 40, 2), "v1", {"fail"},
                 "canary 83% low (10 of 12 ratings), stable 5% (2 of 40 ratings)",
                 id="few-ratings-all-low-fails-before-min-ratings"),
    pytest.param(FeedbackCounts(60, 6, 180, 18), "v1", {"pass", "inconclusive"},
                 "canary 10% low (6 of 60 ratings), stable 10% (18 of 180 ratings)",
                 id="rated-alike-does-not-fail"),
    pytest.param(FeedbackCounts(60, 8, 180, 18), "v1", {"pass", "inconclusive"},
                 "of 60 ratings", id="slightly-worse-within-margin-does-not-fail"),
    pytest.param(FeedbackCounts(0, 0, 50, 5), "v1", {"no-data"}, "no canary ratings yet",
                 id="no-canary-ratings-is-no-data"),
    pytest.param(FeedbackCounts(0, 0, 0, 0), "v1", {"no-data"}, "no canary ratings yet",
                 id="no-ratings-at-all-is-no-data"),
    pytest.param(FeedbackCounts(5, 0, 100, 10), "v1", {"inconclusive"},
                 "5 canary ratings, need 30 (min_requests: 30)", id="too-few-canary-ratings"),
    pytest.param(FeedbackCounts(40, 2, 0, 0), "v1", {"inconclusive"},
                 "no stable ratings to compare with", id="no-stable-ratings"),
    pytest.param(FeedbackCounts(40, 2, 0, 0), None, {"inconclusive"},
                 "no stable ratings to compare with", id="no-stable-release"),
    pytest.param(None, "v1", {"no-data"}, "ratings were not read", id="not-read"),
])
def test_feedback_verdicts(counts, stable, allowed, words):
    verdict, reason, metrics = judge(counts, stable=stable)
    (metric,) = metrics
    assert metric.metric == "feedback" and metric.verdict in allowed, metric
    assert words in metric.reason
    # Users read ratings, not the judge's requests and errors (the setting keeps its name).
    words_read = metric.reason.replace("min_requests", "")
    assert "request" not in words_read and "error" not in words_read
    assert verdict == ("fail" if metric.verdict == "fail" else
                       "pass" if metric.verdict == "pass" else "inconclusive")
    assert reason.startswith("feedback")


def test_no_ratings_is_never_a_pass():
    for counts in (None, FeedbackCounts(0, 0, 0, 0), FeedbackCounts(0, 0, 500, 0),
                   FeedbackCounts(29, 0, 500, 50)):
        assert judge(counts)[0] != "pass", counts


def test_the_numbers_are_kept_for_explain():
    _, _, (metric,) = judge(FeedbackCounts(20, 12, 60, 3))
    assert metric.canary == pytest.approx(0.6) and metric.stable == pytest.approx(0.05)
    details = metric.details
    assert (details["canary_ratings"], details["canary_low"], details["stable_ratings"],
            details["stable_low"]) == (20, 12, 60, 3)
    assert details["log_evidence"] >= details["fail_at"] and details["alpha"] == 0.01
    assert not {"canary_requests", "canary_errors"} & set(details)
    assert "low-rating counts" in details["test"]


def test_a_step_with_feedback_and_error_rate_fails_on_feedback_alone():
    metrics = {"error-rate": DEFAULT_METRICS["error-rate"], **FEEDBACK}
    snapshot = {"started_at": 1.0, "releases": {
        "v1": {"requests": 900, "errors_5xx": 1, "latency_buckets": []},
        "v2": {"requests": 100, "errors_5xx": 0, "latency_buckets": []}}}
    verdict, reason, verdicts = evaluate_window(
        metrics, baseline=EMPTY, latest=snapshot, canary="v2", stable="v1",
        feedback=FeedbackCounts(20, 12, 60, 3))
    assert verdict == "fail" and reason.startswith("feedback:")
    assert [v.verdict for v in verdicts] == ["inconclusive", "fail"]  # 100 clean requests
    # are not yet evidence that the canary's error rate is below 1%


@pytest.mark.parametrize(("metrics", "expected"), [
    pytest.param({"error-rate": DEFAULT_METRICS["error-rate"]}, False, id="error-rate"),
    pytest.param(FEEDBACK, True, id="the-built-in"),
    pytest.param({"ratings": MetricConfig(judge="sequential", measure="feedback")}, True,
                 id="by-measure"),
    pytest.param({"feedback": MetricConfig(judge="sequential", measure="error-rate")}, False,
                 id="named-so-but-measuring-errors"),
])
def test_ratings_are_read_only_when_a_metric_judges_them(metrics, expected):
    assert uses_feedback(metrics) is expected


def test_a_metric_of_another_name_measures_feedback():
    cfg = MetricConfig(judge="sequential", measure="feedback", max_ratio=2.0)
    _, _, (metric,) = judge(FeedbackCounts(40, 30, 120, 12), metrics={"ratings": cfg})
    assert metric.metric == "ratings" and metric.verdict == "fail"
    assert "above 2x stable's (max_ratio: 2)" in metric.reason


def test_a_healthy_canary_rarely_fails_however_often_it_is_checked():
    """The sequential guarantee, on ratings: canary and stable rated alike (20% low),
    judged after every single rating, fail at most alpha (1%) of runs. Without a margin
    (max_increase 0), the strictest case: a margin only ever removes failures."""
    rule = SequentialRule(max_increase=0.0)
    rng = random.Random(12)
    runs, failed = 100, 0
    for _ in range(runs):
        c, s = [0, 0], [0, 0]
        for _ in range(300):  # a quarter of the ratings are the canary's
            side = c if rng.random() < 0.25 else s
            side[0] += 1
            side[1] += rng.random() < 0.2
            counts = FeedbackCounts(c[0], c[1], s[0], s[1])
            if judge_feedback("feedback", rule, counts, has_stable=True).verdict == "fail":
                failed += 1
                break
    assert failed / runs <= 0.02, failed


def test_a_clearly_worse_canary_is_caught_within_a_few_dozen_ratings():
    """Detection, on the same stream: 50% low for the canary against 10% for stable."""
    rng = random.Random(7)
    caught_after = []
    for _ in range(50):
        c, s = [0, 0], [0, 0]
        for _ in range(600):
            canary = rng.random() < 0.25
            side = c if canary else s
            side[0] += 1
            side[1] += rng.random() < (0.5 if canary else 0.1)
            if judge(FeedbackCounts(c[0], c[1], s[0], s[1]))[0] == "fail":
                caught_after.append(c[0])
                break
    assert len(caught_after) == 50
    caught_after.sort()
    assert caught_after[25] <= 40, caught_after


def test_a_canary_rated_like_stable_passes_on_a_few_dozen_ratings():
    """Pass on evidence, with the built-in margin: 40 canary ratings with 2 low ones are
    evidence that its share of low ratings is below half."""
    snapshot = {"started_at": 1.0, "releases": {
        "v1": {"requests": 900, "errors_5xx": 0, "latency_buckets": []},
        "v2": {"requests": 100, "errors_5xx": 0, "latency_buckets": []}}}
    _, _, (metric,) = evaluate_window(FEEDBACK, baseline=EMPTY, latest=snapshot, canary="v2",
                                      stable="v1", feedback=FeedbackCounts(40, 2, 120, 7))
    assert metric.verdict == "pass", metric.reason
