"""The evaluator against a slow, obviously-correct per-user reference on random data."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import random_split
from modalrec.data.interactions import Interactions
from modalrec.data.split import Split
from modalrec.errors import ConfigError, ModelError
from modalrec.evaluation import chunked_topk
from modalrec.evaluation.chunked_topk import factors_are_safe
from modalrec.evaluation.evaluator import CPU_BATCH_BYTES, HELD_OUT_TIE_SEED, Evaluator, gini
from modalrec.evaluation.metrics import RANKING_METRICS

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# --- the slow reference ---------------------------------------------------------------------
def reference(scores, target, exclude, popularity, cutoffs, threshold=None, graded=False, held_out=False):
    """Per-user loops and sorted(); returns (metrics, per_user {name: {user: value}}, n_skipped).
    ``held_out``: only the items that occur in ``target`` are candidates."""
    n_users, n_items = scores.shape
    rows = {}  # user -> {item: gain}
    rated = Counter()
    for user, item, rating in zip(target.users.tolist(), target.items.tolist(),
                                  (target.ratings if target.ratings is not None else np.ones(target.nnz)).tolist()):
        rated[user] += 1
        if threshold is None:
            gain = 1.0
        elif rating >= threshold:
            gain = 2.0 ** (rating - threshold + 1) - 1 if graded else 1.0
        else:
            continue
        rows.setdefault(user, {})[item] = gain
    # ties: lower item index first; among held-out candidates, a fixed random order of the items
    order = np.random.default_rng(HELD_OUT_TIE_SEED).permutation(n_items) if held_out else np.arange(n_items)
    tie_rank = {int(item): r for r, item in enumerate(order)}
    masked = {}
    for part in exclude:
        for user, item in zip(part.users.tolist(), part.items.tolist()):
            masked.setdefault(user, set()).add(item)
    pop = [0] * n_items
    for item in popularity.items.tolist():
        pop[item] += 1
    self_info = [-math.log2(max(p, 1) / n_users) for p in pop]

    per_user = {f"{m}@{k}": {} for k in cutoffs for m in RANKING_METRICS}
    counts = {k: [0] * n_items for k in cutoffs}
    info = {k: [] for k in cutoffs}
    for user in sorted(rows):
        gains = rows[user]
        n_rel = len(gains)
        allowed = set(target.items.tolist()) if held_out else set(range(n_items))
        candidates = [i for i in range(n_items) if i in allowed and i not in masked.get(user, set())]
        ranking = sorted(candidates, key=lambda i: (-float(scores[user, i]), tie_rank[i]))
        for k in cutoffs:
            top = ranking[:k]
            hits = [gains.get(i, 0.0) > 0 for i in top]
            dcg = sum(gains.get(i, 0.0) / math.log2(r + 2) for r, i in enumerate(top))
            ideal = sorted(gains.values(), reverse=True)[:k]
            idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
            found, precisions = 0, 0.0
            for r, hit in enumerate(hits):
                if hit:
                    found += 1
                    precisions += found / (r + 1)
            first = next((r + 1 for r, hit in enumerate(hits) if hit), None)
            per_user[f"recall@{k}"][user] = sum(hits) / n_rel
            per_user[f"precision@{k}"][user] = sum(hits) / k
            per_user[f"ndcg@{k}"][user] = dcg / idcg
            per_user[f"hr@{k}"][user] = float(any(hits))
            per_user[f"map@{k}"][user] = precisions / min(k, n_rel)
            per_user[f"mrr@{k}"][user] = 1.0 / first if first else 0.0
            for i in top:
                counts[k][i] += 1
                info[k].append(self_info[i])
    metrics = {name: (sum(v.values()) / len(v) if v else 0.0) for name, v in per_user.items()}
    for k in cutoffs:
        c = counts[k]
        n_candidates = len(set(target.items.tolist())) if held_out else n_items
        metrics[f"coverage@{k}"] = sum(1 for x in c if x > 0) / max(1, n_candidates)
        metrics[f"novelty@{k}"] = sum(info[k]) / len(info[k]) if info[k] else 0.0
        total = sum(c)  # Gini by mean absolute difference, no sorting
        metrics[f"gini@{k}"] = (sum(abs(a - b) for a in c for b in c) / (2 * n_items * total)) if total else 0.0
    n_skipped = sum(1 for user in rated if user not in rows)
    return metrics, per_user, n_skipped


def assert_matches_reference(result, expected_metrics, expected_per_user, expected_skipped):
    assert result.n_skipped == expected_skipped
    users = sorted(next(iter(expected_per_user.values())))
    assert result.users.tolist() == users
    assert set(result.metrics) == set(expected_metrics)
    for name, value in expected_metrics.items():
        assert result.metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    for name, by_user in expected_per_user.items():
        np.testing.assert_allclose(result.per_user[name], [by_user[u] for u in users], rtol=1e-9, atol=1e-12,
                                   err_msg=name)


class MatrixModel:
    """A 'model' whose scores are a fixed matrix; returns the same cached tensor each time, so
    an evaluator that writes into the scorer's output would be caught."""

    def __init__(self, scores: np.ndarray, device: str = "cpu") -> None:
        self.matrix = torch.as_tensor(scores, dtype=torch.float32, device=device)
        self.cache: dict[bytes, torch.Tensor] = {}

    def score(self, users: np.ndarray) -> torch.Tensor:
        key = np.asarray(users).tobytes()
        if key not in self.cache:
            self.cache[key] = self.matrix[torch.as_tensor(users, device=self.matrix.device)]
        return self.cache[key]


class FactorModel(MatrixModel):
    """A factorised 'model' (score = user . item), whose factors the evaluator ranks itself on
    CPU; integer factors keep the products exact, whatever the summation order."""

    def __init__(self, users: np.ndarray, items: np.ndarray, device: str = "cpu") -> None:
        super().__init__(users.astype(np.float64) @ items.T.astype(np.float64), device)
        self.factors = tuple(torch.as_tensor(f, dtype=torch.float32, device=device) for f in (users, items))

    def scoring_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.factors


def make_split(rng, n_users, n_items, density, cold_users=0, overlap=False):
    """Random split with ratings 1-5; the first ``cold_users`` users get no held-out items.
    ``overlap``: some held-out items are also validation items (masked, yet still relevant)."""
    keys = np.flatnonzero(rng.random(n_users * n_items) < density)
    users, items = keys // n_items, keys % n_items
    part = rng.choice(3, size=len(keys), p=[0.5, 0.2, 0.3])
    part[(users < cold_users) & (part == 2)] = 0
    ratings = rng.integers(1, 6, len(keys))
    parts = [(users[part == p], items[part == p], ratings[part == p]) for p in range(3)]
    if overlap:
        copy = rng.random(len(parts[2][0])) < 0.3
        parts[1] = tuple(np.concatenate([v, t[copy]]) for v, t in zip(parts[1], parts[2]))
    return Split(*(Interactions.from_arrays(u, i, n_users, n_items, r) for u, i, r in parts), protocol="random")


# --- property test against the reference ------------------------------------------------------
@st.composite
def cases(draw):
    n_users = draw(st.integers(1, 12))
    n_items = draw(st.sampled_from([1, 3, 8, 25, 60]))
    density = draw(st.sampled_from([0.1, 0.3, 0.7, 0.95]))  # 0.95: fewer candidates than k
    levels = draw(st.sampled_from([2, 4, 1000]))  # few levels: many ties
    cutoffs = draw(st.lists(st.sampled_from([1, 2, 5, 10, 20, 100]), min_size=1, max_size=3, unique=True))
    threshold = draw(st.sampled_from([None, None, 3, 4]))
    graded = threshold is not None and draw(st.booleans())
    mask_valid = draw(st.booleans())
    overlap = draw(st.booleans())
    held_out = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return n_users, n_items, density, levels, cutoffs, threshold, graded, mask_valid, overlap, held_out, seed


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=80, deadline=None)
@given(case=cases())
def test_matches_reference_on_random_data(device, case):
    n_users, n_items, density, levels, cutoffs, threshold, graded, mask_valid, overlap, held_out, seed = case
    rng = np.random.default_rng(seed)
    split = make_split(rng, n_users, n_items, density, cold_users=min(2, n_users - 1), overlap=overlap)
    factored = levels != 1000 and seed % 2 == 0  # half the cases: a factorised model
    if factored:
        factors = [rng.integers(0, levels, size=(n, 2)) for n in (n_users, n_items)]
        scores = (factors[0] @ factors[1].T).astype(np.float32)
    else:
        scores = rng.integers(0, levels, size=(n_users, n_items)).astype(np.float32)
    exclude = [split.train, split.valid] if mask_valid else [split.train]
    expected = reference(scores, split.test, exclude, split.train, cutoffs, threshold, graded, held_out)
    results = []
    for batch_size in (1, 7, None):
        evaluator = Evaluator(cutoffs=cutoffs, relevance_threshold=threshold, graded=graded,
                              mask_valid_on_test=mask_valid, batch_size=batch_size, device=device,
                              candidates="held-out" if held_out else "all")
        model = FactorModel(*factors, device) if factored else MatrixModel(scores, device)
        results.append(evaluator.evaluate(model, split, "test"))
        assert torch.equal(model.matrix.cpu(), torch.from_numpy(scores))
        assert all(torch.equal(v, model.matrix[torch.as_tensor(np.frombuffer(k, dtype=np.int64).copy(), device=device)])
                   for k, v in model.cache.items()), "the evaluator wrote into the scorer's output"
    assert_matches_reference(results[0], *expected)
    for other in results[1:]:  # batch size changes nothing, to the bit
        assert other.metrics == results[0].metrics
        assert np.array_equal(other.users, results[0].users) and other.n_skipped == results[0].n_skipped
        for name, values in results[0].per_user.items():
            assert np.array_equal(other.per_user[name], values)


@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference_on_large_catalog(device):
    """Enough items for the chunked top-k path, integer scores with heavy ties, and a
    graded threshold."""
    rng = np.random.default_rng(3)
    n_users, n_items = 30, 1200
    split = make_split(rng, n_users, n_items, 0.03, cold_users=3)
    scores = rng.integers(0, 40, size=(n_users, n_items)).astype(np.float32)
    scores[:10] = rng.standard_normal((10, n_items))  # and some rows without ties
    cutoffs = [5, 20, 50]
    expected = reference(scores, split.test, [split.train, split.valid], split.train, cutoffs, 4, True)
    for batch_size in (4, None):
        evaluator = Evaluator(cutoffs=cutoffs, relevance_threshold=4, graded=True, batch_size=batch_size, device=device)
        assert_matches_reference(evaluator.evaluate(MatrixModel(scores, device), split), *expected)


def test_factors_ranked_in_place_match_the_scores(monkeypatch):
    """The fused CPU path for factorised models (several BLAS blocks of users, ties, masks of
    train and validation) gives the scorer path's results to the bit; factors that are NaN, or
    so large that a product could overflow, go through the scorer and are caught there."""
    monkeypatch.setattr(chunked_topk, "FACTOR_ROWS", (32, 32))  # blocks of 32 users, the last one short
    rng = np.random.default_rng(5)
    n_users, n_items = 300, 700
    split = make_split(rng, n_users, n_items, 0.02, cold_users=3)
    users, items = rng.integers(-3, 4, size=(n_users, 3)), rng.integers(-3, 4, size=(n_items, 3))
    model = FactorModel(users, items)
    evaluator = Evaluator(cutoffs=[5, 20, 50])
    fused = evaluator.evaluate(model, split)
    by_scores = evaluator.run(model.score, split.test, [split.train, split.valid], popularity=split.train)
    assert fused.metrics == by_scores.metrics
    for name, values in by_scores.per_user.items():
        assert np.array_equal(fused.per_user[name], values), name
    assert_matches_reference(fused, *reference(model.matrix.numpy(), split.test, [split.train, split.valid],
                                                split.train, [5, 20, 50]))
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # users split over three threads
    try:
        assert evaluator.evaluate(model, split).metrics == fused.metrics
    finally:
        torch.set_num_threads(threads)
    model.factors[1][7, 0] = float("nan")
    model.matrix[:, 7] = float("nan")
    model.cache.clear()
    with pytest.raises(ModelError, match="NaN"):
        evaluator.evaluate(model, split)
    huge = FactorModel(users * 1e16, items * 1e16)
    assert not factors_are_safe(*huge.factors)
    assert evaluator.evaluate(huge, split).metrics == fused.metrics


def test_run_with_train_only_mask_and_valid_part():
    """evaluate(part='valid') masks train only; mask_valid_on_test=False masks train only on test."""
    rng = np.random.default_rng(11)
    split = make_split(rng, 15, 30, 0.4)
    scores = rng.integers(0, 3, size=(15, 30)).astype(np.float32)
    for part, evaluator in (("valid", Evaluator(cutoffs=[3, 10])),
                            ("test", Evaluator(cutoffs=[3, 10], mask_valid_on_test=False))):
        expected = reference(scores, split.part(part), [split.train], split.train, [3, 10])
        assert_matches_reference(evaluator.evaluate(MatrixModel(scores), split, part), *expected)


# --- hand-computed cases (MMRec conventions) --------------------------------------------------
def one_user_split(test_items, test_ratings=None, train_items=(), n_items=6):
    def inter(items, ratings=None):
        items = np.asarray(items, dtype=np.int64)
        return Interactions.from_arrays(np.zeros(len(items)), items, 1, n_items, ratings)
    return Split(inter(train_items, None if test_ratings is None else np.full(len(train_items), 5)),
                 inter([], None if test_ratings is None else np.zeros(0)),
                 inter(test_items, test_ratings), protocol="fixed")


def test_mmrec_conventions_by_hand():
    # Ranking by score: items 3, 0, 1, 5, 4, 2 (item 2 is a training item, masked).
    split = one_user_split(test_items=[1, 3, 4], train_items=[2])
    scores = np.array([[5.0, 4.0, 9.0, 6.0, 1.0, 2.0]])
    result = Evaluator(cutoffs=[2, 5]).evaluate(MatrixModel(scores), split)
    m = result.metrics
    assert m["recall@2"] == pytest.approx(1 / 3)  # hits / |test items|, not / k
    assert m["precision@2"] == pytest.approx(1 / 2)
    assert m["ndcg@2"] == pytest.approx(1 / (1 + 1 / math.log2(3)))  # ideal over min(|test|, k) = 2
    assert m["hr@2"] == 1.0 and m["mrr@2"] == 1.0
    assert m["map@2"] == pytest.approx(1 / 2)  # (1/1) / min(2, 3)
    assert m["recall@5"] == pytest.approx(1.0)
    assert m["precision@5"] == pytest.approx(3 / 5)
    dcg = 1 + 1 / math.log2(4) + 1 / math.log2(6)  # hits at ranks 1, 3, 5
    assert m["ndcg@5"] == pytest.approx(dcg / (1 + 1 / math.log2(3) + 1 / math.log2(4)))  # ideal over 3
    assert m["map@5"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert m["coverage@2"] == pytest.approx(2 / 6)
    assert m["coverage@5"] == pytest.approx(5 / 6)
    # novelty: popularity from train (item 2 once, 1 user), others floored at 1 -> 0 bits each.
    assert m["novelty@5"] == pytest.approx(0.0)
    assert m["gini@2"] == pytest.approx(gini(np.array([1, 0, 0, 1, 0, 0])))


def test_graded_gains_by_hand():
    # Relevance threshold 4: item 1 (5 stars) gain 3, item 3 (4 stars) gain 1, item 4 (2 stars) not relevant.
    split = one_user_split(test_items=[1, 3, 4], test_ratings=[5, 4, 2])
    scores = np.array([[0.0, 3.0, 0.0, 5.0, 9.0, 0.0]])  # ranking 4, 3, 1, 0, 2, 5
    m = Evaluator(cutoffs=[2, 3], relevance_threshold=4, graded=True).evaluate(MatrixModel(scores), split).metrics
    assert m["recall@2"] == pytest.approx(1 / 2)  # 2 relevant items
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (3 + 1 / math.log2(3)))
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3) + 3 / math.log2(4)) / (3 + 1 / math.log2(3)))
    assert m["mrr@2"] == pytest.approx(1 / 2)
    binary = Evaluator(cutoffs=[2], relevance_threshold=4).evaluate(MatrixModel(scores), split).metrics
    assert binary["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_cutoff_beyond_catalog_and_few_candidates():
    split = one_user_split(test_items=[0, 5], train_items=[1, 2, 3])  # 3 unmasked items: 0, 4, 5
    scores = np.array([[1.0, 9.0, 9.0, 9.0, 2.0, 0.0]])  # ranking 4, 0, 5
    m = Evaluator(cutoffs=[10]).evaluate(MatrixModel(scores), split).metrics
    assert m["precision@10"] == pytest.approx(2 / 10)
    assert m["recall@10"] == pytest.approx(1.0)
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert m["map@10"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["coverage@10"] == pytest.approx(3 / 6)  # masked items are never counted as recommended


def test_masked_held_out_item_is_never_a_hit():
    """A held-out item that is also a training item is masked: it counts in the denominator
    (MMRec) but can never be a hit, even when fewer candidates than k remain."""
    split = one_user_split(test_items=[0, 2], train_items=[1, 2], n_items=3)
    m = Evaluator(cutoffs=[5]).evaluate(MatrixModel(np.array([[0.0, 5.0, 9.0]])), split).metrics
    assert m["recall@5"] == pytest.approx(1 / 2)
    assert m["ndcg@5"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert m["coverage@5"] == pytest.approx(1 / 3)


def test_users_without_relevant_items_are_skipped_and_counted():
    n_items = 5
    target = Interactions.from_arrays([0, 0, 1, 3], [1, 2, 3, 4], 5, n_items, ratings=[5, 2, 1, 4])
    empty = Interactions.empty_like(target)
    scores = torch.zeros(5, n_items)
    result = Evaluator(cutoffs=[2], relevance_threshold=4).run(lambda u: scores[u], target, [empty], empty)
    assert result.users.tolist() == [0, 3]  # user 1 only rated 1 star; users 2, 4 hold nothing out
    assert result.n_skipped == 1
    assert len(result.per_user["recall@2"]) == 2


def test_no_evaluable_user():
    target = Interactions.from_arrays([0], [1], 2, 3, ratings=[1])
    result = Evaluator(cutoffs=[5], relevance_threshold=4).run(lambda u: torch.zeros(len(u), 3), target, [], None)
    assert result.n_skipped == 1 and len(result.users) == 0
    assert result.metrics["recall@5"] == 0.0 and result.per_user["ndcg@5"].shape == (0,)


# --- errors and side effects ------------------------------------------------------------------
def test_relevance_does_not_modify_the_target():
    split = random_split(seed=4)
    before = (split.test.indptr.copy(), split.test.indices.copy(), split.test.ratings.copy())
    Evaluator(relevance_threshold=4, graded=True).relevance(split.test)
    assert all(np.array_equal(a, b) for a, b in zip(before, (split.test.indptr, split.test.indices,
                                                             split.test.ratings)))


def test_errors():
    split = random_split()
    with pytest.raises(ConfigError, match="cutoffs"):
        Evaluator(cutoffs=[0])
    with pytest.raises(ConfigError, match="threshold"):
        Evaluator(graded=True)
    with pytest.raises(ConfigError, match="'all' or 'held-out'"):
        Evaluator(candidates="cold")
    unrated = Interactions(split.test.n_users, split.test.n_items, split.test.indptr, split.test.indices)
    with pytest.raises(ConfigError, match="needs ratings"):
        Evaluator(relevance_threshold=4).run(lambda u: torch.zeros(len(u), 40), unrated, [])
    with pytest.raises(ConfigError, match="shape"):
        Evaluator().run(lambda u: torch.zeros(len(u), 39), split.test, [split.train])
    with pytest.raises(ModelError, match="NaN"):
        Evaluator().run(lambda u: torch.full((len(u), 40), float("nan")), split.test, [split.train])
    other = Interactions.from_arrays([0], [0], 3, 3)
    with pytest.raises(ConfigError, match="shape"):
        Evaluator().run(lambda u: torch.zeros(len(u), 40), split.test, [other])


def test_held_out_candidates_break_ties_in_a_random_item_order():
    """A model that scores every new item alike must not profit from item ids that follow
    popularity. Half the users hold out items 0-4, half items 50-99: under the index rule a
    constant scorer would find all of the first half's items (recall 0.5 on average)."""
    n_users, n_items = 100, 100
    first = np.repeat(np.arange(50), 5), np.tile(np.arange(5), 50)
    second = np.repeat(np.arange(50, 100), 50), np.tile(np.arange(50, 100), 50)
    target = Interactions.from_arrays(np.concatenate([first[0], second[0]]), np.concatenate([first[1], second[1]]),
                                      n_users, n_items)
    empty = Interactions.from_arrays([], [], n_users, n_items)
    result = Evaluator(cutoffs=[5], candidates="held-out").run(lambda u: torch.zeros(len(u), n_items), target, [empty])
    order = np.random.default_rng(HELD_OUT_TIE_SEED).permutation(n_items)
    top = [i for i in order if i < 5 or i >= 50][:5]
    expected = 0.5 * sum(i < 5 for i in top) / 5 + 0.5 * sum(i >= 50 for i in top) / 50
    assert result.metrics["recall@5"] == pytest.approx(expected)
    assert expected < 0.25


def test_batch_size_from_memory_budget():
    assert Evaluator(batch_size=5).batch_users(10**6) == 5
    assert Evaluator(memory_mb=1).batch_users(10**6) == 1
    # Off the CPU only the memory budget counts (batch_users does not touch the device).
    small = Evaluator(memory_mb=64, device="cuda").batch_users(50_000)
    large = Evaluator(memory_mb=512, device="cuda").batch_users(50_000)
    assert 1 <= small < large
    assert large * 50_000 * 4 * 3 <= 512 << 20 < (large + 1) * 50_000 * 4 * 3  # three float32 rows per user
    # On CPU batches are also capped to about CPU_BATCH_BYTES of scores.
    assert Evaluator(memory_mb=512).batch_users(50_000) == CPU_BATCH_BYTES // (4 * 50_000) < large
    assert Evaluator(memory_mb=8).batch_users(50_000) == (8 << 20) // (12 * 50_000)


def test_accepts_other_dtypes_and_devices_of_scores():
    split = random_split(seed=2)
    scores = torch.from_numpy(np.random.default_rng(2).standard_normal((60, 40)))  # float64
    a = Evaluator(cutoffs=[5]).run(lambda u: scores[u], split.test, [split.train], split.train)
    b = Evaluator(cutoffs=[5]).run(lambda u: scores[u].float(), split.test, [split.train], split.train)
    assert a.metrics == b.metrics


def test_metric_table_by_hand() -> None:
    from modalrec.evaluation.metrics import metric_table

    # user 0: relevant items 5 (gain 3) and 7 (gain 1), ranked [2, 5, 7]; user 1: relevant 4 and
    # 9 (gain 1 each), ranked [4, 0, -] with the third rank empty (no candidate left).
    top = np.array([[2, 5, 7], [4, 0, 0]])
    ranked = np.array([[True, True, True], [True, True, False]])
    ptr, items, gains = np.array([0, 2, 4]), np.array([5, 7, 4, 9]), np.array([3.0, 1.0, 1.0, 1.0], np.float32)
    table = metric_table(top, ranked, np.array([0, 1]), ptr, items, gains, np.array([1, 3, 10]))
    by_name = {f"{name}@{k}": table[:, i, j] for i, name in enumerate(RANKING_METRICS)
               for j, k in enumerate([1, 3, 10])}
    assert by_name["ndcg@3"].tolist() == pytest.approx([(3 / math.log2(3) + 1 / 2) / (3 + 1 / math.log2(3)),
                                                        1 / (1 + 1 / math.log2(3))])
    assert by_name["ndcg@10"].tolist() == by_name["ndcg@3"].tolist()  # read at rank min(k, K)
    assert by_name["recall@1"].tolist() == [0.0, 0.5] and by_name["recall@3"].tolist() == [1.0, 0.5]
    assert by_name["precision@3"].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert by_name["precision@10"].tolist() == pytest.approx([0.2, 0.1])  # hits / k, not / K
    assert by_name["hr@1"].tolist() == [0.0, 1.0]
    assert by_name["map@3"].tolist() == pytest.approx([(1 / 2 + 2 / 3) / 2, 1 / 2])
    assert by_name["mrr@1"].tolist() == [0.0, 1.0] and by_name["mrr@3"].tolist() == [0.5, 1.0]
