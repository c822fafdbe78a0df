"""Filtering: duplicates, the rating threshold and the k-core, each checked against a slow
reference written independently of the implementation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_files import write_elliot, write_folder_source, write_ml100k
from modalrec.data.filtering import apply_filters, deduplicate, k_core, k_core_mask, min_rating
from modalrec.data.sources.elliot import import_elliot
from modalrec.data.sources.folder import import_folder
from modalrec.data.sources.movielens import import_movielens
from modalrec.data.splitting import random_split
from modalrec.errors import ConfigError


def slow_k_core(pairs: list[tuple[int, int]], user_k: int, item_k: int) -> set[tuple[int, int]]:
    """Remove one violating node at a time until none is left (the definition, not the algorithm)."""
    edges = set(pairs)
    while True:
        users: dict[int, int] = {}
        items: dict[int, int] = {}
        for u, i in edges:
            users[u] = users.get(u, 0) + 1
            items[i] = items.get(i, 0) + 1
        bad_user = next((u for u, c in sorted(users.items()) if c < user_k), None)
        if bad_user is not None:
            edges = {(u, i) for u, i in edges if u != bad_user}
            continue
        bad_item = next((i for i, c in sorted(items.items()) if c < item_k), None)
        if bad_item is None:
            return edges
        edges = {(u, i) for u, i in edges if i != bad_item}


pair_lists = st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), max_size=120, unique=True)


@settings(max_examples=150, deadline=None)
@given(pairs=pair_lists, user_k=st.integers(0, 5), item_k=st.integers(0, 5))
def test_k_core_matches_the_slow_reference(pairs, user_k, item_k):
    users = np.array([u for u, _ in pairs], dtype=np.int64)
    items = np.array([i for _, i in pairs], dtype=np.int64)
    keep = k_core_mask(users, items, user_k, item_k)
    kept = {(int(u), int(i)) for u, i in zip(users[keep], items[keep])}
    assert kept == slow_k_core(pairs, user_k, item_k)
    # the core property holds on what is kept
    if kept:
        assert min(np.bincount(users[keep])[np.unique(users[keep])]) >= user_k
        assert min(np.bincount(items[keep])[np.unique(items[keep])]) >= item_k


@settings(max_examples=80, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=10, unique=True),
       user_k=st.integers(1, 3), item_k=st.integers(1, 3))
def test_k_core_is_the_largest_valid_subgraph(pairs, user_k, item_k):
    """Brute force over every subset of interactions: the k-core equals the union of all subsets
    in which every present user has >= user_k and every present item >= item_k interactions."""
    def valid(subset):
        users = [u for u, _ in subset]
        items = [i for _, i in subset]
        return all(users.count(u) >= user_k for u in users) and all(items.count(i) >= item_k for i in items)

    union: set[tuple[int, int]] = set()
    for bits in range(1 << len(pairs)):
        subset = [p for k, p in enumerate(pairs) if bits >> k & 1]
        if valid(subset):
            union |= set(subset)
    users = np.array([u for u, _ in pairs], dtype=np.int64)
    items = np.array([i for _, i in pairs], dtype=np.int64)
    keep = k_core_mask(users, items, user_k, item_k)
    assert {(int(u), int(i)) for u, i in zip(users[keep], items[keep])} == union


def test_dedup_policies_on_hand_made_rows():
    frame = pd.DataFrame({
        "user_id": ["a", "a", "b", "a", "a"],
        "item_id": ["x", "x", "x", "y", "x"],
        "rating": [1.0, 2.0, 5.0, 4.0, 3.0],
        "timestamp": [30, 10, 5, 7, 30],
    })
    last, removed = deduplicate(frame, "last")
    assert removed == 2
    # (a, x): timestamps 30, 10, 30 -> the latest is 30, and the later line of the two wins
    assert last.values.tolist() == [["b", "x", 5.0, 5], ["a", "y", 4.0, 7], ["a", "x", 3.0, 30]]
    first, _ = deduplicate(frame, "first")
    assert first.values.tolist() == [["a", "x", 2.0, 10], ["b", "x", 5.0, 5], ["a", "y", 4.0, 7]]
    mean, _ = deduplicate(frame, "mean")
    assert mean.values.tolist() == [["a", "x", 2.0, 30], ["b", "x", 5.0, 5], ["a", "y", 4.0, 7]]
    no_time, _ = deduplicate(frame.drop(columns="timestamp"), "last")
    assert no_time.values.tolist() == [["b", "x", 5.0], ["a", "y", 4.0], ["a", "x", 3.0]]
    with pytest.raises(ConfigError):
        deduplicate(frame, "random")


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("xyz"), st.integers(1, 5),
                               st.integers(0, 3)), min_size=1, max_size=30))
def test_dedup_last_matches_a_dictionary(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    out, removed = deduplicate(frame, "last")
    best: dict[tuple[str, str], tuple[int, int, int]] = {}
    for position, (u, i, r, t) in enumerate(rows):
        if (u, i) not in best or (t, position) >= best[(u, i)][:2]:
            best[(u, i)] = (t, position, r)
    assert removed == len(rows) - len(best)
    assert {(u, i): (int(t), int(r)) for u, i, r, t in out.values} == {k: (v[0], v[2]) for k, v in best.items()}


def test_k_core_on_a_dataset_reindexes_and_keeps_content(tmp_path):
    files = write_folder_source(tmp_path)
    dataset = import_folder(files["interactions"], files["items"], files["images"], user_col="uid",
                            item_col="iid", rating_col="stars", timestamp_col="when")
    core = k_core(dataset, 2, 2)
    # users: alice p1 p2, bob p1 p3, carol p2 p4 ; items p1 (alice, bob) and p2 (alice, carol) survive,
    # then bob and carol have 1 each -> gone -> p1, p2 have 1 each -> gone: the 2-core is empty.
    assert core.interactions.nnz == 0
    core = k_core(dataset, 1, 2)
    assert list(core.item_ids) == ["p1", "p2"]
    assert list(core.user_ids) == ["alice", "bob", "carol"]
    assert list(core.items["item_id"]) == ["p1", "p2"]
    assert core.items["image_path"].tolist() == dataset.items.set_index("item_id").loc[["p1", "p2"],
                                                                                        "image_path"].tolist()
    step = core.provenance["filters"][-1]
    assert step["step"] == "k_core" and step["interactions"] == [6, 4] and step["items"] == [5, 2]
    frame = core.interactions.to_frame()
    assert sorted(zip(frame.user, frame.item)) == [(0, 0), (0, 1), (1, 0), (2, 1)]


def test_min_rating_keeps_the_rating_column(tmp_path):
    dataset = import_movielens(write_ml100k(tmp_path))
    kept = min_rating(dataset, 4)
    assert kept.interactions.ratings is not None and kept.interactions.ratings.min() >= 4
    assert kept.interactions.nnz == int((dataset.interactions.ratings >= 4).sum())
    # movie 4 only has ratings 1, 5, 4 -> stays; every user keeps >= 1 -> all users stay
    assert kept.n_users == 3
    assert kept.provenance["filters"][0]["threshold"] == 4.0
    no_ratings = import_folder(_implicit(tmp_path))
    with pytest.raises(ConfigError) as err:
        min_rating(no_ratings, 3)
    assert err.value.where == "--min-rating"


def _implicit(tmp_path):
    path = tmp_path / "implicit.csv"
    path.write_text("user_id,item_id\n1,2\n2,2\n")
    return path


def test_apply_filters_threshold_then_core(tmp_path):
    dataset = import_movielens(write_ml100k(tmp_path))
    filtered = apply_filters(dataset, min_rating_threshold=4, user_k=2, item_k=1)
    ratings = dataset.interactions.ratings
    keep = ratings >= 4
    inter = dataset.interactions
    reference = slow_k_core(list(zip(inter.users[keep].tolist(), inter.items[keep].tolist())), 2, 1)
    assert filtered.interactions.nnz == len(reference)
    assert [f["step"] for f in filtered.provenance["filters"]] == ["min_rating", "k_core"]


def test_filters_keep_a_fixed_split_and_drop_a_made_one(tmp_path):
    paths = write_elliot(tmp_path)
    dataset = import_elliot(paths["train"], paths["valid"], paths["test"])
    filtered = min_rating(dataset, 3)
    assert filtered.split is not None and filtered.split.protocol == "fixed"
    total = sum(filtered.split.sizes().values())
    assert total == filtered.interactions.nnz == int((dataset.interactions.ratings >= 3).sum())
    assert filtered.split.train.ratings.min() >= 3
    made = dataset.with_split(random_split(dataset.interactions, seed=0))
    assert min_rating(made, 3).split is None
    assert min_rating(made, 3).provenance["filters"][-1]["dropped_split"] == "random"
