"""Is a difference between two runs real? Paired tests on per-user metric values.

Two runs are compared user by user (the evaluator keeps per-user arrays for exactly this): values
are aligned on the users both runs evaluated, the paired t-test and the Wilcoxon signed-rank test
come from ``scipy.stats``, and each comes with an effect size, because with thousands of users a
tiny difference is "significant". A family of comparisons (every model against a baseline, say) is
corrected with Holm's step-down method, which controls the family-wise error rate like Bonferroni
but rejects at least as much. Differences are always ``a - b``.

Conventions:
- Cohen's d for paired samples (d_z): ``mean(diff) / sd(diff)`` with ``ddof = 1``.
- Rank-biserial correlation (Kerby's simple difference): ``(R+ - R-) / (R+ + R-)`` over the ranks
  of ``|diff|`` that the Wilcoxon test uses (zero differences dropped under ``zero_method='wilcox'``,
  ranked then dropped under ``'pratt'``).
- Every difference zero: no evidence of a difference, so p = 1 and both effect sizes 0 (scipy's
  t-test would give NaN). A constant non-zero difference gives t = +-inf, p = 0, d = +-inf.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from modalrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ZERO_METHODS = ("wilcox", "pratt")


@dataclass(frozen=True)
class PairedTest:
    """One paired test of run ``a`` against run ``b`` on ``n`` common users."""

    test: str
    statistic: float
    p_value: float
    effect: str
    effect_size: float
    n: int
    mean_a: float
    mean_b: float

    @property
    def mean_diff(self) -> float:
        return self.mean_a - self.mean_b


def per_user(run: Any, metric: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(users, values)`` of a run: an ``EvaluationResult``-like object (``.users`` and
    ``.per_user[metric]``) or a ``(users, values)`` pair."""
    if hasattr(run, "per_user") and hasattr(run, "users"):
        if metric is None:
            raise ConfigError("name the metric to compare", hint="e.g. metric='recall@20'")
        if metric not in run.per_user:
            raise ConfigError(f"the run has no per-user values for {metric!r}",
                              hint=f"choose one of {', '.join(sorted(run.per_user))}")
        users, values = run.users, run.per_user[metric]
    else:
        try:
            users, values = run
        except (TypeError, ValueError):
            raise ConfigError("expected an EvaluationResult or a (users, values) pair") from None
    users = np.asarray(users)
    values = np.asarray(values, dtype=np.float64)
    if users.ndim != 1 or users.shape != values.shape:
        raise DataError(f"users {users.shape} and values {values.shape} must be 1-d and of one length")
    if len(np.unique(users)) != len(users):
        raise DataError("a user appears twice in one run's per-user values")
    if not np.isfinite(values).all():
        raise DataError("per-user values contain NaN or infinity")
    return users, values


def align(a: Any, b: Any, metric: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(users, values_a, values_b)`` on the users both runs evaluated, users ascending."""
    users_a, values_a = per_user(a, metric)
    users_b, values_b = per_user(b, metric)
    common, ia, ib = np.intersect1d(users_a, users_b, assume_unique=True, return_indices=True)
    if len(common) < max(len(users_a), len(users_b)):
        log.warning("runs evaluated different users: comparing on the %d common ones (%d and %d)",
                    len(common), len(users_a), len(users_b))
    return common, values_a[ia], values_b[ib]


def _differences(a: Any, b: Any, metric: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _, values_a, values_b = align(a, b, metric)
    if len(values_a) < 2:
        raise DataError(f"a paired test needs at least 2 common users, got {len(values_a)}",
                        hint="check that both runs were evaluated on the same split")
    return values_a - values_b, values_a, values_b


def cohens_d(diff: np.ndarray) -> float:
    """Cohen's d for paired samples: mean difference over its standard deviation (ddof 1)."""
    diff = np.asarray(diff, dtype=np.float64)
    if len(diff) < 2:
        raise DataError(f"Cohen's d needs at least 2 differences, got {len(diff)}")
    mean, sd = float(diff.mean()), float(diff.std(ddof=1))
    if sd == 0.0:
        return 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    return mean / sd


def rank_biserial(diff: np.ndarray, zero_method: str = "wilcox") -> float:
    """Matched-pairs rank-biserial correlation ``(R+ - R-) / (R+ + R-)``, in [-1, 1]."""
    _check_zero_method(zero_method)
    diff = np.asarray(diff, dtype=np.float64)
    if zero_method == "wilcox":
        diff = diff[diff != 0]
    ranks = stats.rankdata(np.abs(diff))
    r_plus, r_minus = float(ranks[diff > 0].sum()), float(ranks[diff < 0].sum())
    total = r_plus + r_minus
    return 0.0 if total == 0 else (r_plus - r_minus) / total


def paired_t_test(a: Any, b: Any, metric: str | None = None) -> PairedTest:
    """Paired t-test of ``a - b`` (scipy.stats.ttest_rel), with Cohen's d."""
    diff, values_a, values_b = _differences(a, b, metric)
    sd = float(diff.std(ddof=1))
    if sd == 0.0:  # scipy gives NaN (all zero) or a precision warning (constant)
        mean = float(diff.mean())
        statistic, p_value = (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    else:
        result = stats.ttest_rel(values_a, values_b)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return PairedTest("t-test", statistic, p_value, "cohen_d", cohens_d(diff), len(diff),
                      float(values_a.mean()), float(values_b.mean()))


def wilcoxon_test(a: Any, b: Any, metric: str | None = None, zero_method: str = "wilcox") -> PairedTest:
    """Wilcoxon signed-rank test of ``a - b`` (scipy.stats.wilcoxon), with the rank-biserial
    correlation. The statistic is scipy's (the smaller rank sum, two-sided)."""
    _check_zero_method(zero_method)
    diff, values_a, values_b = _differences(a, b, metric)
    if not diff.any():
        statistic, p_value = 0.0, 1.0
    else:
        result = stats.wilcoxon(diff, zero_method=zero_method)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return PairedTest("wilcoxon", statistic, p_value, "rank_biserial", rank_biserial(diff, zero_method),
                      len(diff), float(values_a.mean()), float(values_b.mean()))


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order: reject where ``adjusted <= alpha``.

    Sorted ascending, the i-th (0-based) of m is multiplied by ``m - i``; a running maximum keeps
    the adjusted values monotone, and they are capped at 1.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise DataError("Holm's correction takes a flat list of p-values")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise DataError("p-values must lie in [0, 1] (no NaN)")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) over seeds; the std of one seed is NaN."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise DataError("mean_std needs a non-empty 1-d list of values")
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan


def summarize_seeds(runs: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``{metric: {'mean', 'std', 'n'}}`` over several seeds' aggregate metrics (the metrics every
    run has)."""
    if not runs:
        raise DataError("no runs to summarise")
    names = [name for name in runs[0] if all(name in run for run in runs)]
    summary = {}
    for name in names:
        mean, std = mean_std([run[name] for run in runs])
        summary[name] = {"mean": mean, "std": std, "n": float(len(runs))}
    return summary


def bootstrap_ci(
    a: Any,
    b: Any,
    metric: str | None = None,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean difference ``a - b``, resampling users (pairs
    stay together). Deterministic for a seed; resamples are drawn in chunks to bound memory."""
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be positive, got {n_resamples}")
    diff, _, _ = _differences(a, b, metric)
    n = len(diff)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, (1 << 22) // n)
    for lo in range(0, n_resamples, chunk):
        hi = min(n_resamples, lo + chunk)
        means[lo:hi] = diff[rng.integers(0, n, size=(hi - lo, n))].mean(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _check_zero_method(zero_method: str) -> None:
    if zero_method not in ZERO_METHODS:
        raise ConfigError(f"unknown zero_method {zero_method!r}", hint=f"choose one of {', '.join(ZERO_METHODS)}")
