"""The mann-whitney judge's statistics, written with the standard library, against known
values (scipy 1.17's ``mannwhitneyu(alternative="greater", method="asymptotic")`` and
numpy's default quantile): the judge needs no optional extra, and its numbers are still
the textbook's."""

from __future__ import annotations

import pytest

from entrega.analysis.judges.mann_whitney import compute_p_greater, compute_quantile, compute_u


def p_greater(x: list[float], y: list[float]) -> float:
    u, ties = compute_u(x, y)
    return compute_p_greater(u, len(x), len(y), ties)


@pytest.mark.parametrize(("x", "y", "u", "p"), [
    ([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], 0.0, 0.9966923245172357),
    ([6, 7, 8, 9, 10], [1, 2, 3, 4, 5], 25.0, 0.006092890177672406),
    ([1, 2, 2, 3, 3, 3, 4], [2, 3, 3, 4, 4, 5], 11.0, 0.9407675530642273),
    (list(range(20, 40)), list(range(30)), 550.0, 3.8658057518915043e-07),
    ([19, 22, 16, 29, 24], [20, 11, 17, 12], 17.0, 0.055673443266570206),
], ids=["separated-below", "separated-above", "ties", "overlap", "textbook"])
def test_u_and_p_value(x: list[float], y: list[float], u: float, p: float) -> None:
    assert compute_u(x, y)[0] == u
    assert p_greater(x, y) == pytest.approx(p, rel=1e-9)


def test_the_tie_term_counts_each_group_of_equal_values() -> None:
    # pooled: 1, 2 x3, 3 x5, 4 x3, 5 -> (27-3) + (125-5) + (27-3) = 168
    assert compute_u([1, 2, 2, 3, 3, 3, 4], [2, 3, 3, 4, 4, 5])[1] == 168.0


@pytest.mark.parametrize(("m", "n"), [(1, 0), (0, 0), (10, 10)], ids=["one-value", "none",
                                                                        "all-tied"])
def test_no_evidence_is_p_one(m: int, n: int) -> None:
    x, y = [5.0] * m, [5.0] * n
    assert p_greater(x, y) == 1.0


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([1, 2, 3, 4], 0.95, 3.8499999999999996),
    ([10.0, 20.0, 30.0], 0.5, 20.0),
    ([3, 1, 2], 0.9, 2.8),
    ([7.5], 0.95, 7.5),
    (list(range(1, 11)), 0.9, 9.1),
], ids=["p95-of-four", "median", "unsorted", "one-value", "p90-of-ten"])
def test_quantile_is_numpys_linear(values: list[float], q: float, expected: float) -> None:
    assert compute_quantile(values, q) == expected


def test_no_quantile_of_nothing() -> None:
    with pytest.raises(ValueError, match="no values"):
        compute_quantile([], 0.5)
