"""Significance tests: against scipy on known inputs, against hand-computed values, edge cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from modalrec.errors import ConfigError, DataError
from modalrec.evaluation.evaluator import EvaluationResult
from modalrec.evaluation.significance import (
    align,
    bootstrap_ci,
    cohens_d,
    holm,
    mean_std,
    paired_t_test,
    rank_biserial,
    summarize_seeds,
    wilcoxon_test,
)


def run(users, values, metric="recall@20"):
    values = np.asarray(values, dtype=np.float64)
    return EvaluationResult({metric: float(values.mean())}, {metric: values}, np.asarray(users), 0, 0.0)


# --- alignment -----------------------------------------------------------------------------------
def test_align_on_common_users():
    a = run([0, 1, 2, 3, 7], [0.0, 0.1, 0.2, 0.3, 0.7])
    b = ([7, 3, 2, 1, 9], [1.7, 1.3, 1.2, 1.1, 1.9])  # a (users, values) pair, any order
    users, va, vb = align(a, b, "recall@20")
    assert users.tolist() == [1, 2, 3, 7]
    assert va.tolist() == [0.1, 0.2, 0.3, 0.7]
    assert vb.tolist() == [1.1, 1.2, 1.3, 1.7]


def test_align_errors():
    with pytest.raises(ConfigError, match="name the metric"):
        align(run([0, 1], [0, 1]), run([0, 1], [0, 1]))
    with pytest.raises(ConfigError, match="ndcg@10"):
        align(run([0, 1], [0, 1]), run([0, 1], [0, 1]), "ndcg@10")
    with pytest.raises(DataError, match="twice"):
        align(([0, 0], [1.0, 2.0]), ([0, 1], [1.0, 2.0]))
    with pytest.raises(DataError, match="one length"):
        align(([0, 1, 2], [1.0, 2.0]), ([0, 1], [1.0, 2.0]))
    with pytest.raises(DataError, match="NaN"):
        align(([0, 1], [1.0, np.nan]), ([0, 1], [1.0, 2.0]))


# --- paired t-test and Cohen's d -----------------------------------------------------------------
def test_t_test_and_cohens_d_by_hand():
    a = ([0, 1, 2, 3], [2.0, 3.0, 5.0, 10.0])
    b = ([0, 1, 2, 3], [1.0, 1.0, 2.0, 4.0])  # differences 1, 2, 3, 6: mean 3, var 14/3
    sd = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 3)
    t = 3 / (sd / math.sqrt(4))
    result = paired_t_test(a, b)
    assert result.statistic == pytest.approx(t)
    assert result.p_value == pytest.approx(2 * stats.t.sf(t, df=3))
    assert result.effect == "cohen_d" and result.effect_size == pytest.approx(3 / sd)
    assert cohens_d(np.array([1.0, 2.0, 3.0, 6.0])) == pytest.approx(3 / sd)
    assert (result.n, result.mean_a, result.mean_b, result.mean_diff) == (4, 5.0, 2.0, 3.0)


def test_t_test_matches_scipy_on_random_runs():
    rng = np.random.default_rng(0)
    users = np.arange(500)
    va, vb = rng.random(500), rng.random(500) * 0.9
    result = paired_t_test(run(users, va), run(users, vb), "recall@20")
    expected = stats.ttest_rel(va, vb)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-12)


def test_all_differences_zero_give_p_one():
    values = np.array([0.0, 0.5, 0.5, 1.0])
    for test in (paired_t_test, wilcoxon_test):
        result = test(([0, 1, 2, 3], values), ([0, 1, 2, 3], values.copy()))
        assert result.p_value == 1.0 and result.statistic == 0.0 and result.effect_size == 0.0


def test_constant_difference():
    result = paired_t_test(([0, 1, 2], [1.0, 2.0, 3.0]), ([0, 1, 2], [0.5, 1.5, 2.5]))
    assert result.p_value == 0.0 and result.statistic == math.inf and result.effect_size == math.inf
    assert wilcoxon_test(([0, 1, 2], [1.0, 2.0, 3.0]), ([0, 1, 2], [0.5, 1.5, 2.5])).effect_size == 1.0


def test_fewer_than_two_users_is_a_clear_error():
    for test in (paired_t_test, wilcoxon_test, bootstrap_ci):
        with pytest.raises(DataError, match="at least 2 common users, got 1"):
            test(([0, 5], [1.0, 2.0]), ([5, 6], [0.0, 1.0]))  # only user 5 in common
    with pytest.raises(DataError, match="at least 2"):
        cohens_d(np.array([1.0]))


# --- Wilcoxon and the rank-biserial correlation ----------------------------------------------------
def exact_wilcoxon_p(diff):
    """Two-sided exact p by enumerating every sign pattern of the ranks (no ties, no zeros)."""
    ranks = stats.rankdata(np.abs(diff))
    r_plus = ranks[diff > 0].sum()
    t = min(r_plus, ranks.sum() - r_plus)
    sums = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(diff))]
    return min(1.0, 2 * sum(s <= t for s in sums) / len(sums))


def test_wilcoxon_by_hand():
    diff = np.array([1.0, 2.0, 3.0, 4.0, -5.0, 6.0, 7.0, 8.0])  # ranks 1..8, R- = 5, R+ = 31
    a, b = (np.arange(8), diff + 10.0), (np.arange(8), np.full(8, 10.0))
    result = wilcoxon_test(a, b)
    assert result.statistic == 5.0
    assert result.p_value == pytest.approx(exact_wilcoxon_p(diff))
    assert result.p_value == pytest.approx(20 / 256)  # 10 of 256 sign patterns have R+ <= 5, two-sided
    assert result.effect == "rank_biserial" and result.effect_size == pytest.approx((31 - 5) / 36)


def test_rank_biserial_by_hand_with_zeros_and_ties():
    diff = np.array([1.0, -2.0, 3.0, 4.0, -5.0, 0.0])
    assert rank_biserial(diff) == pytest.approx((8 - 7) / 15)  # zero dropped: ranks 1..5
    # pratt: the zero takes rank 1 and is then dropped: ranks 2..6, R+ = 2+4+5, R- = 3+6
    assert rank_biserial(diff, "pratt") == pytest.approx((11 - 9) / 20)
    ties = np.array([1.0, -1.0, 2.0])  # ranks 1.5, 1.5, 3
    assert rank_biserial(ties) == pytest.approx((4.5 - 1.5) / 6)
    with pytest.raises(ConfigError, match="zero_method"):
        rank_biserial(diff, "zsplit")


def test_wilcoxon_matches_scipy_on_per_user_like_data():
    rng = np.random.default_rng(1)
    va = rng.integers(0, 4, 300) / 4  # many ties and zero differences, like per-user recall
    vb = rng.integers(0, 4, 300) / 4
    for zero_method in ("wilcox", "pratt"):
        result = wilcoxon_test((np.arange(300), va), (np.arange(300), vb), zero_method=zero_method)
        expected = stats.wilcoxon(va - vb, zero_method=zero_method)
        assert result.statistic == pytest.approx(expected.statistic)
        assert result.p_value == pytest.approx(expected.pvalue, rel=1e-12)


# --- Holm ------------------------------------------------------------------------------------------
def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(holm([0.02]), [0.02])
    assert holm([]).shape == (0,)
    with pytest.raises(DataError, match="p-values"):
        holm([0.1, float("nan")])
    with pytest.raises(DataError, match="p-values"):
        holm([1.2])


def test_holm_agrees_with_the_step_down_procedure():
    """Adjusted p <= alpha exactly when Holm's step-down procedure rejects the hypothesis."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        m = int(rng.integers(1, 9))
        p = rng.random(m) ** 3
        alpha = float(rng.choice([0.01, 0.05, 0.1]))
        rejected = np.zeros(m, dtype=bool)
        for step, index in enumerate(np.argsort(p, kind="stable")):
            if p[index] > alpha / (m - step):
                break
            rejected[index] = True
        assert np.array_equal(holm(p) <= alpha, rejected)


# --- seeds and bootstrap ---------------------------------------------------------------------------
def test_mean_std_over_seeds():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    mean, std = mean_std([0.25])
    assert mean == 0.25 and math.isnan(std)
    with pytest.raises(DataError):
        mean_std([])
    summary = summarize_seeds([{"recall@20": 0.1, "ndcg@20": 0.2}, {"recall@20": 0.3}])
    assert list(summary) == ["recall@20"]
    assert summary["recall@20"]["mean"] == pytest.approx(0.2)
    assert summary["recall@20"]["std"] == pytest.approx(math.sqrt(0.02))
    assert summary["recall@20"]["n"] == 2


def test_bootstrap_matches_a_plain_reference_and_is_seeded():
    rng = np.random.default_rng(2)
    n = 1500  # n_resamples * n > 2^22: the resamples are drawn in several chunks
    va, vb = rng.random(n), rng.random(n)
    a, b = (np.arange(n), va), (np.arange(n), vb)
    low, high = bootstrap_ci(a, b, n_resamples=4000, confidence=0.9, seed=3)
    plain = np.random.default_rng(3)
    means = (va - vb)[plain.integers(0, n, size=(4000, n))].mean(axis=1)
    assert (low, high) == pytest.approx(tuple(np.percentile(means, [5, 95])), rel=1e-12)
    assert bootstrap_ci(a, b, n_resamples=4000, confidence=0.9, seed=3) == (low, high)
    assert bootstrap_ci(a, b, n_resamples=4000, confidence=0.9, seed=4) != (low, high)


def test_bootstrap_interval_covers_the_normal_approximation():
    rng = np.random.default_rng(9)
    n = 4000
    diff = rng.normal(0.02, 0.1, n)
    low, high = bootstrap_ci((np.arange(n), diff), (np.arange(n), np.zeros(n)), n_resamples=2000, seed=0)
    half = 1.96 * diff.std(ddof=1) / math.sqrt(n)
    assert low < diff.mean() < high
    assert low == pytest.approx(diff.mean() - half, abs=0.15 * half)
    assert high == pytest.approx(diff.mean() + half, abs=0.15 * half)
    with pytest.raises(ConfigError, match="confidence"):
        bootstrap_ci((np.arange(n), diff), (np.arange(n), diff), confidence=95)
