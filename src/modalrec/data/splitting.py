"""Split protocols: random, per-user temporal, global temporal, leave-one-out, cold-item, fixed.

All protocols are deterministic for a seed and return a ``Split`` over the data set's id maps.
Filter (k-core, rating threshold) before splitting, never after (see ``filtering``).

Rounding rule of the per-user protocols (the MMRec reference split's rule): a user with ``n``
interactions gives ``k_test = max(1, floor(r_test * n + 0.5))`` interactions to test and then
``k_valid = max(1, floor(r_valid * n + 0.5))`` to validation (0 when that ratio is 0); the rest is
training. Should that leave no training interaction, validation and then test shrink (never below
one each). Users with fewer than 3 interactions keep them all in training. ``random`` with seed 0
on MovieLens-100K reproduces the reference split exactly (79,926 / 10,037 / 10,037): one
``numpy.random.default_rng(seed)``, users in index order, each user's items in item-index order
permuted once, the first ``k_test`` to test and the next ``k_valid`` to validation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from modalrec.data.interactions import Interactions
from modalrec.data.split import Split
from modalrec.errors import ConfigError, DataError

PROTOCOLS = ("random", "user-temporal", "global-temporal", "leave-one-out", "cold-item")
DEFAULT_RATIOS = (0.8, 0.1, 0.1)
MIN_SPLIT_USER = 3  # users with fewer interactions stay in training entirely
_EPS = 1e-9


def parse_ratios(value: str | Sequence[float] | None) -> tuple[float, float, float]:
    """Three non-negative numbers summing to 1 (train, valid, test), e.g. ``"0.8,0.1,0.1"``."""
    if value is None:
        return DEFAULT_RATIOS
    if isinstance(value, str):
        try:
            numbers = [float(part) for part in value.split(",")]
        except ValueError:
            raise ConfigError(f"ratios must be numbers, got {value!r}", where="--ratios",
                              hint="write them like 0.8,0.1,0.1") from None
    else:
        numbers = [float(v) for v in value]
    shown = ",".join(f"{v:g}" for v in numbers)
    if len(numbers) != 3:
        raise ConfigError(f"need 3 ratios (train, valid, test), got {len(numbers)}: {shown}",
                          where="--ratios", hint="write them like 0.8,0.1,0.1")
    if not all(math.isfinite(v) and v >= 0 for v in numbers):
        raise ConfigError(f"ratios must be non-negative numbers, got {shown}", where="--ratios")
    if abs(sum(numbers) - 1.0) > 1e-6:
        raise ConfigError(f"ratios must sum to 1, got {shown} (sum {sum(numbers):g})", where="--ratios")
    if numbers[0] == 0:
        raise ConfigError("the training ratio must be above 0", where="--ratios")
    return numbers[0], numbers[1], numbers[2]


def held_out_counts(n: np.ndarray, ratios: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-user (test, valid) counts under the rounding rule in the module docstring."""
    n = np.asarray(n, dtype=np.int64)
    _, r_valid, r_test = ratios
    k_test = _rounded(n, r_test)
    k_valid = _rounded(n, r_valid)
    eligible = n >= MIN_SPLIT_USER
    k_test = np.where(eligible, k_test, 0)
    k_valid = np.where(eligible, k_valid, 0)
    floor_valid = np.minimum(k_valid, 1)
    floor_test = np.minimum(k_test, 1)
    excess = np.maximum(k_test + k_valid - (n - 1), 0)
    cut = np.minimum(excess, k_valid - floor_valid)
    k_valid, excess = k_valid - cut, excess - cut
    k_test = k_test - np.minimum(excess, k_test - floor_test)
    return k_test, k_valid


def random_split(inter: Interactions, ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0) -> Split:
    """Per-user random split (see the module docstring for the rule and the reference parity)."""
    ratios = parse_ratios(ratios)
    counts = inter.user_counts()
    k_test, k_valid = held_out_counts(counts, ratios)
    part = np.zeros(inter.nnz, dtype=np.int8)
    rng = np.random.default_rng(seed)
    for user in np.flatnonzero(k_test + k_valid):
        start, n = int(inter.indptr[user]), int(counts[user])
        order = start + rng.permutation(n)
        part[order[: k_test[user]]] = 2
        part[order[k_test[user] : k_test[user] + k_valid[user]]] = 1
    return _from_labels(inter, part, "random", {"ratios": list(ratios), "seed": int(seed)})


def user_temporal_split(inter: Interactions, ratios: Sequence[float] = DEFAULT_RATIOS) -> Split:
    """Per user, the latest interactions go to test and the ones before to validation (ties in time:
    the higher item index counts as later)."""
    ratios = parse_ratios(ratios)
    timestamps = _require_timestamps(inter, "user-temporal")
    k_test, k_valid = held_out_counts(inter.user_counts(), ratios)
    part = _tail_labels(inter, timestamps, k_test, k_valid)
    return _from_labels(inter, part, "user-temporal", {"ratios": list(ratios)})


def global_temporal_split(inter: Interactions, ratios: Sequence[float] = DEFAULT_RATIOS) -> Split:
    """One time line for everybody: interactions before the ``r_train`` quantile of all timestamps
    train, those before the ``r_train + r_valid`` quantile validate, the rest test.

    A cut is a timestamp, so interactions at the same instant always land in the same part (the
    parts' shares can deviate a little from the ratios where many interactions share a time).
    """
    ratios = parse_ratios(ratios)
    timestamps = _require_timestamps(inter, "global-temporal")
    ordered = np.sort(timestamps)
    n = len(ordered)

    def cut(share: float) -> float:
        position = int(math.floor(share * n + 0.5 + _EPS))
        return math.inf if position >= n else float(ordered[position])

    valid_cut = cut(ratios[0])
    test_cut = cut(ratios[0] + ratios[1]) if ratios[2] > 0 else math.inf
    part = np.zeros(n, dtype=np.int8)
    part[timestamps >= valid_cut] = 1
    part[timestamps >= test_cut] = 2
    params = {"ratios": list(ratios), "valid_from": _plain(valid_cut), "test_from": _plain(test_cut)}
    return _from_labels(inter, part, "global-temporal", params)


def leave_one_out_split(inter: Interactions, seed: int = 0) -> Split:
    """Per user with at least 3 interactions: the last one (by time) to test, the one before to
    validation; without timestamps the two are drawn at random with ``seed``."""
    counts = inter.user_counts()
    eligible = (counts >= MIN_SPLIT_USER).astype(np.int64)
    if inter.timestamps is not None:
        part = _tail_labels(inter, inter.timestamps, eligible, eligible)
        return _from_labels(inter, part, "leave-one-out", {"order": "timestamp"})
    part = np.zeros(inter.nnz, dtype=np.int8)
    rng = np.random.default_rng(seed)
    for user in np.flatnonzero(eligible):
        chosen = int(inter.indptr[user]) + rng.permutation(int(counts[user]))[:2]
        part[chosen[0]], part[chosen[1]] = 2, 1
    return _from_labels(inter, part, "leave-one-out", {"order": "random", "seed": int(seed)})


def cold_item_split(inter: Interactions, ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0) -> Split:
    """Items (those with any interaction) are shuffled with ``seed`` and divided by the ratios, with
    the same rounding rule as per-user splits; every interaction of a validation (test) item goes to
    validation (test). Those items never occur in training, so only content can score them;
    ``Split.cold_items`` lists them (validation and test together)."""
    ratios = parse_ratios(ratios)
    candidates = np.flatnonzero(inter.item_counts() > 0)
    k_test, k_valid = (int(k[0]) for k in held_out_counts(np.array([len(candidates)]), ratios))
    shuffled = np.random.default_rng(seed).permutation(candidates)
    test_items = shuffled[:k_test]
    valid_items = shuffled[k_test : k_test + k_valid]
    item_part = np.zeros(inter.n_items, dtype=np.int8)
    item_part[valid_items] = 1
    item_part[test_items] = 2
    part = item_part[inter.items]
    params = {"ratios": list(ratios), "seed": int(seed), "valid_items": len(valid_items),
              "test_items": len(test_items)}
    split = _from_labels(inter, part, "cold-item", params)
    split.cold_items = np.sort(np.concatenate([valid_items, test_items])).astype(np.int64)
    return split


def fixed_split(train: Interactions, valid: Interactions, test: Interactions,
                params: dict | None = None) -> Split:
    """A split given from outside (imported files), kept as is."""
    return Split(train, valid, test, protocol="fixed", params=dict(params or {}))


def make_split(inter: Interactions, protocol: str, ratios: Sequence[float] | str | None = None,
               seed: int = 0) -> Split:
    """Dispatch by protocol name (one of ``PROTOCOLS``)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown split protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}",
                          where="--protocol")
    if inter.nnz == 0:
        raise DataError("cannot split a data set without interactions")
    if protocol == "leave-one-out":
        if ratios is not None:
            raise ConfigError("leave-one-out takes no ratios (one validation and one test item per user)",
                              where="--ratios")
        return leave_one_out_split(inter, seed)
    r = parse_ratios(ratios)
    if protocol == "random":
        return random_split(inter, r, seed)
    if protocol == "user-temporal":
        return user_temporal_split(inter, r)
    if protocol == "global-temporal":
        return global_temporal_split(inter, r)
    return cold_item_split(inter, r, seed)


# --- helpers -------------------------------------------------------------------------------------
def _rounded(n: np.ndarray, ratio: float) -> np.ndarray:
    """``max(1, round half up(ratio * n))``; the tiny epsilon makes ``0.7 * 5`` (3.4999... in
    binary) round to 4 as it does in decimal."""
    if ratio == 0:
        return np.zeros_like(n)
    return np.maximum(1, np.floor(ratio * n + 0.5 + _EPS).astype(np.int64))


def _tail_labels(inter: Interactions, timestamps: np.ndarray, k_test: np.ndarray,
                 k_valid: np.ndarray) -> np.ndarray:
    """Label each user's last ``k_test`` interactions (time, then item index) 2 and the ``k_valid``
    before them 1."""
    users, items = inter.users, inter.items
    order = np.lexsort((items, timestamps, users))  # entries grouped by user, in time order
    counts = inter.user_counts()
    rank = np.empty(inter.nnz, dtype=np.int64)
    rank[order] = np.arange(inter.nnz) - inter.indptr[users[order]]
    from_end = counts[users] - rank  # 1 for a user's latest interaction
    part = np.zeros(inter.nnz, dtype=np.int8)
    part[from_end <= k_test[users] + k_valid[users]] = 1
    part[from_end <= k_test[users]] = 2
    return part


def _from_labels(inter: Interactions, part: np.ndarray, protocol: str, params: dict) -> Split:
    return Split(inter.select(part == 0), inter.select(part == 1), inter.select(part == 2),
                 protocol=protocol, params=params)


def _require_timestamps(inter: Interactions, protocol: str) -> np.ndarray:
    if inter.timestamps is None:
        raise DataError(f"the {protocol} protocol needs timestamps, and this data set has none",
                        hint="use --protocol random or cold-item")
    return inter.timestamps


def _plain(value: float) -> int | None:
    return None if math.isinf(value) else int(value)
