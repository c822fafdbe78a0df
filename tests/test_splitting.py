"""Split protocols: partition, determinism and per-protocol guarantees (hypothesis), the rounding
rule against a plain-Python reference, and exact parity with the MMRec reference split."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shared_data_path
from data_files import write_ml100k
from modalrec.data.dataset import Dataset
from modalrec.data.interactions import Interactions
from modalrec.data.sources.movielens import import_movielens
from modalrec.data.splitting import (
    PROTOCOLS,
    cold_item_split,
    global_temporal_split,
    leave_one_out_split,
    make_split,
    parse_ratios,
    random_split,
    user_temporal_split,
)
from modalrec.errors import ConfigError, DataError

RATIOS = [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.5, 0.5, 0.0), (0.7, 0.0, 0.3), (1.0, 0.0, 0.0),
          (0.34, 0.33, 0.33), (0.2, 0.4, 0.4)]


@st.composite
def interaction_sets(draw, timestamps: bool = True) -> Interactions:
    n_users = draw(st.integers(1, 12))
    n_items = draw(st.integers(1, 12))
    keys = np.array(sorted(draw(st.sets(st.integers(0, n_users * n_items - 1), min_size=1))), dtype=np.int64)
    times = np.array(draw(st.lists(st.integers(0, 15), min_size=len(keys), max_size=len(keys)))) \
        if timestamps else None
    return Interactions.from_arrays(keys // n_items, keys % n_items, n_users, n_items,
                                    ratings=(np.arange(len(keys)) % 5 + 1), timestamps=times)


def entries(inter: Interactions) -> dict[tuple[int, int], tuple]:
    ratings = inter.ratings if inter.ratings is not None else [None] * inter.nnz
    times = inter.timestamps if inter.timestamps is not None else [None] * inter.nnz
    return {(int(u), int(i)): (r, t) for u, i, r, t in zip(inter.users, inter.items, ratings, times)}


def assert_partition(inter: Interactions, split) -> None:
    parts = [entries(split.part(name)) for name in ("train", "valid", "test")]
    assert sum(len(p) for p in parts) == inter.nnz
    union: dict = {}
    for part in parts:
        assert not set(part) & set(union)
        union.update(part)
    assert union == entries(inter)


def reference_counts(n: int, ratios) -> tuple[int, int]:
    """The documented rule in decimal arithmetic: round half up, at least 1, leave 1 for training."""
    if n < 3:
        return 0, 0

    def k(r: float) -> int:
        return 0 if r == 0 else max(1, math.floor(Fraction(str(r)) * n + Fraction(1, 2)))

    k_test, k_valid = k(ratios[2]), k(ratios[1])
    while k_test + k_valid > n - 1 and k_valid > 1:
        k_valid -= 1
    while k_test + k_valid > n - 1 and k_test > 1:
        k_test -= 1
    return k_test, k_valid



@settings(max_examples=120, deadline=None)
@given(inter=interaction_sets(), ratios=st.sampled_from(RATIOS), seed=st.integers(0, 3))
def test_random_split_properties(inter, ratios, seed):
    split = random_split(inter, ratios, seed)
    assert_partition(inter, split)
    counts = inter.user_counts()
    for user, n in enumerate(counts):
        k_test, k_valid = reference_counts(int(n), ratios)
        assert split.test.user_counts()[user] == k_test
        assert split.valid.user_counts()[user] == k_valid
        if n >= 3:
            assert split.train.user_counts()[user] >= 1
            assert ratios[2] == 0 or k_test >= 1
            assert ratios[1] == 0 or k_valid >= 1
    again = random_split(inter, ratios, seed)
    for name in ("train", "valid", "test"):
        assert again.part(name) == split.part(name)


@settings(max_examples=100, deadline=None)
@given(inter=interaction_sets(), ratios=st.sampled_from(RATIOS))
def test_user_temporal_split_properties(inter, ratios):
    split = user_temporal_split(inter, ratios)
    assert_partition(inter, split)
    for user, n in enumerate(inter.user_counts()):
        k_test, k_valid = reference_counts(int(n), ratios)
        assert split.test.user_counts()[user] == k_test and split.valid.user_counts()[user] == k_valid

        def moments(part, u=user):
            lo, hi = part.indptr[u], part.indptr[u + 1]
            return sorted(zip(part.timestamps[lo:hi].tolist(), part.indices[lo:hi].tolist()))

        train, valid, test = (moments(split.part(p)) for p in ("train", "valid", "test"))
        ordered = train + valid + test
        assert ordered == sorted(ordered)  # train before valid before test, ties by item index


@settings(max_examples=100, deadline=None)
@given(inter=interaction_sets(), ratios=st.sampled_from(RATIOS))
def test_global_temporal_split_properties(inter, ratios):
    split = global_temporal_split(inter, ratios)
    assert_partition(inter, split)
    times = [split.part(p).timestamps for p in ("train", "valid", "test")]
    present = [t for t in times if len(t)]
    for earlier, later in zip(present, present[1:]):
        assert earlier.max() < later.min()  # one time line; equal times share a part
    # the cut is the timestamp at the r_train quantile; train is everything strictly before it
    target = math.floor(Fraction(str(ratios[0])) * inter.nnz + Fraction(1, 2))
    later = [t for t in times[1:] if len(t)]
    if later:
        cut = min(t.min() for t in later)
        assert len(times[0]) <= target < len(times[0]) + int((inter.timestamps == cut).sum())
    else:
        assert target >= inter.nnz


@settings(max_examples=100, deadline=None)
@given(inter=interaction_sets(), seed=st.integers(0, 3))
def test_leave_one_out_properties(inter, seed):
    split = leave_one_out_split(inter, seed)
    assert_partition(inter, split)
    for user, n in enumerate(inter.user_counts()):
        expected = 1 if n >= 3 else 0
        assert split.test.user_counts()[user] == expected and split.valid.user_counts()[user] == expected
        if expected:
            lo, hi = inter.indptr[user], inter.indptr[user + 1]
            order = sorted(zip(inter.timestamps[lo:hi].tolist(), inter.indices[lo:hi].tolist()))
            assert split.test.user_items(user).tolist() == [order[-1][1]]
            assert split.valid.user_items(user).tolist() == [order[-2][1]]


@settings(max_examples=60, deadline=None)
@given(inter=interaction_sets(timestamps=False), seed=st.integers(0, 3))
def test_leave_one_out_without_time_is_random_but_deterministic(inter, seed):
    split = leave_one_out_split(inter, seed)
    assert_partition(inter, split)
    assert split.params["order"] == "random"
    again = leave_one_out_split(inter, seed)
    assert again.test == split.test and again.valid == split.valid


@settings(max_examples=120, deadline=None)
@given(inter=interaction_sets(), ratios=st.sampled_from(RATIOS), seed=st.integers(0, 3))
def test_cold_item_split_properties(inter, ratios, seed):
    split = cold_item_split(inter, ratios, seed)
    assert_partition(inter, split)
    cold = set(split.cold_items.tolist())
    assert not cold & set(split.train.items.tolist())  # only content can score them
    assert cold == set(split.valid.items.tolist()) | set(split.test.items.tolist())
    valid_items, test_items = set(split.valid.items.tolist()), set(split.test.items.tolist())
    assert not valid_items & test_items  # all of an item's interactions sit in one part
    n_items = int((inter.item_counts() > 0).sum())
    k_test, k_valid = reference_counts(n_items, ratios)
    assert (len(test_items), len(valid_items)) == (k_test, k_valid)
    assert split.cold_items.tolist() == sorted(cold)


def _larger(seed: int = 7) -> Interactions:
    rng = np.random.default_rng(seed)
    keys = np.unique(rng.integers(0, 60 * 50, 1500))
    return Interactions.from_arrays(keys // 50, keys % 50, 60, 50, timestamps=rng.integers(0, 10_000, len(keys)))


@pytest.mark.parametrize("protocol", ["random", "cold-item"])
def test_different_seeds_give_different_splits(protocol):
    inter = _larger()
    a, b = make_split(inter, protocol, seed=0), make_split(inter, protocol, seed=1)
    assert a.sizes() != b.sizes() or a.test != b.test
    assert make_split(inter, protocol, seed=0).test == a.test


def test_loo_seeds_differ_without_timestamps():
    inter = _larger()
    plain = Interactions(inter.n_users, inter.n_items, inter.indptr, inter.indices)
    assert leave_one_out_split(plain, 0).test != leave_one_out_split(plain, 1).test


@pytest.mark.parametrize("text", ["0.8,0.1", "0.8,0.1,0.2", "-0.1,0.6,0.5", "a,b,c", "0,0.5,0.5",
                                  "nan,0.5,0.5", "0.8,0.1,0.1,0"])
def test_bad_ratios_name_the_option(text):
    with pytest.raises(ConfigError) as err:
        parse_ratios(text)
    assert err.value.where == "--ratios"


def test_parse_ratios_accepts_text_and_sequences():
    assert parse_ratios("0.8, 0.1, 0.1") == (0.8, 0.1, 0.1)
    assert parse_ratios([0.6, 0.2, 0.2]) == (0.6, 0.2, 0.2)
    assert parse_ratios(None) == (0.8, 0.1, 0.1)


def test_protocol_errors():
    inter = _larger()
    plain = Interactions(inter.n_users, inter.n_items, inter.indptr, inter.indices)
    for protocol in ("user-temporal", "global-temporal"):
        with pytest.raises(DataError) as err:
            make_split(plain, protocol)
        assert "timestamps" in err.value.message
    with pytest.raises(ConfigError) as err:
        make_split(inter, "leave-one-out", ratios="0.8,0.1,0.1")
    assert err.value.where == "--ratios"
    with pytest.raises(ConfigError):
        make_split(inter, "alphabetical")
    assert set(PROTOCOLS) == {"random", "user-temporal", "global-temporal", "leave-one-out", "cold-item"}


def test_split_is_saved_with_the_dataset(tmp_path):
    dataset = import_movielens(write_ml100k(tmp_path))
    dataset.save(tmp_path / "ds")
    for protocol in PROTOCOLS:
        split = make_split(dataset.interactions, protocol, seed=3)
        dataset.save_split(split)
        loaded = Dataset.load(tmp_path / "ds").split
        assert loaded.protocol == protocol and loaded.params == split.params
        for name in ("train", "valid", "test"):
            assert loaded.part(name) == split.part(name)
        assert (loaded.cold_items is None) == (split.cold_items is None)


@pytest.mark.data
def test_random_split_reproduces_the_reference_split():
    """Seed 0 on MovieLens-100K gives exactly the MMRec reference split (not just its sizes)."""
    from modalrec.data.sources.mmrec import import_mmrec

    reference, _ = import_mmrec(shared_data_path("ml100k-mmrec-ref"), features=False)
    split = random_split(reference.interactions, (0.8, 0.1, 0.1), seed=0)
    assert split.sizes() == {"train": 79_926, "valid": 10_037, "test": 10_037}
    for name in ("train", "valid", "test"):
        assert split.part(name) == reference.split.part(name)
