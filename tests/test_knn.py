"""ItemKNN and the chunked top-k similarity against a slow dense numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from modalrec.data.interactions import Interactions
from modalrec.errors import ConfigError
from modalrec.models.knn import ItemKNN, ItemKNNParams
from modalrec.models.similarity import topk_similarity, weight_rows


def dense_similarity(rows: np.ndarray, similarity: str, shrink: float, alpha: float = 0.5) -> np.ndarray:
    """Every pair, written out loop by loop from the definitions (no shared code)."""
    n = rows.shape[0]
    out = np.zeros((n, n))
    for c in range(n):
        for i in range(n):
            dot = float(rows[c] @ rows[i])
            sc, si = float(rows[c] @ rows[c]), float(rows[i] @ rows[i])
            if similarity == "cosine":
                denom = np.sqrt(sc) * np.sqrt(si)
            elif similarity == "asymmetric":
                denom = sc**alpha * si ** (1 - alpha)
            else:
                denom = sc + si - dot
            denom += shrink
            out[c, i] = dot / denom if denom > 0 else 0.0
    return out


def prune(full: np.ndarray, k: int) -> np.ndarray:
    """Keep each row's k largest off-diagonal values (ties: lower index), drop zeros."""
    n = full.shape[0]
    out = np.zeros_like(full)
    for c in range(n):
        candidates = sorted((i for i in range(n) if i != c), key=lambda i: (-full[c, i], i))[:k]
        for i in candidates:
            out[c, i] = full[c, i]
    return out


def binary_items(n_items: int = 30, n_users: int = 25, density: float = 0.25, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_items, n_users)) < density).astype(np.float64)
    dense[3] = 0.0  # an item with no interactions: similarity 0 (or shrunk 0), never NaN
    return sp.csr_matrix(dense)


@pytest.mark.parametrize("similarity", ["cosine", "asymmetric", "jaccard"])
@pytest.mark.parametrize("shrink", [0.0, 3.0])
def test_topk_matches_dense_reference(similarity: str, shrink: float) -> None:
    rows = binary_items()
    k = 5
    got = topk_similarity(rows, k, similarity, shrink, alpha=0.3)
    expected = prune(dense_similarity(rows.toarray(), similarity, shrink, alpha=0.3), k)
    assert got.shape == (30, 30)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.toarray(), expected, rtol=1e-6, atol=1e-7)
    assert np.diff(got.indptr).max() <= k
    assert got.diagonal().sum() == 0


def test_asymmetric_half_is_cosine_and_not_symmetric_otherwise() -> None:
    rows = binary_items(seed=1)
    cos = topk_similarity(rows, 29, "cosine")
    half = topk_similarity(rows, 29, "asymmetric", alpha=0.5)
    np.testing.assert_allclose(cos.toarray(), half.toarray(), rtol=1e-6)
    skew = topk_similarity(rows, 29, "asymmetric", alpha=0.9).toarray()
    assert not np.allclose(skew, skew.T)


def test_dense_input_and_real_values_match_reference() -> None:
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(20, 6))
    for similarity in ("cosine", "jaccard"):
        got = topk_similarity(rows, 4, similarity, shrink=0.5).toarray()
        expected = prune(dense_similarity(rows, similarity, 0.5), 4)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_block_size_does_not_change_the_result() -> None:
    rows = binary_items(n_items=60, n_users=40, seed=3)
    whole = topk_similarity(rows, 7, "cosine", shrink=1.0)
    tiny_blocks = topk_similarity(rows, 7, "cosine", shrink=1.0, block_mb=0)  # one row per block
    assert (whole != tiny_blocks).nnz == 0


def test_ties_go_to_the_lower_item_index() -> None:
    # Items 1, 2, 3 are identical, so item 0 sees the same similarity to each of them.
    rows = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1], [1, 0, 1], [1, 0, 1]], dtype=float))
    got = topk_similarity(rows, 2, "cosine").toarray()
    assert got[0].nonzero()[0].tolist() == [1, 2]


def test_weighting_matches_formulas() -> None:
    counts = np.array([[2, 0, 1], [0, 0, 3], [1, 1, 1], [0, 0, 1]], dtype=float)
    n, df = 4, np.array([2, 1, 4])
    tfidf = weight_rows(sp.csr_matrix(counts), "tfidf").toarray()
    np.testing.assert_allclose(tfidf, counts * np.log(n / df))
    k1, b = 1.2, 0.75
    length = counts.sum(1, keepdims=True)
    tf_part = counts * (k1 + 1) / (counts + k1 * (1 - b + b * length / length.mean()))
    idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
    np.testing.assert_allclose(weight_rows(sp.csr_matrix(counts), "bm25", k1, b).toarray(), tf_part * idf)
    with pytest.raises(ConfigError, match="non-negative"):
        weight_rows(sp.csr_matrix(-counts), "bm25")
    with pytest.raises(ConfigError, match="unknown weighting"):
        weight_rows(sp.csr_matrix(counts), "idf")


@pytest.mark.parametrize("bad, match", [
    ({"k": 0}, "at least 1"), ({"similarity": "pearson"}, "unknown similarity"),
    ({"shrink": -1.0}, "non-negative"), ({"similarity": "asymmetric", "alpha": 1.5}, "alpha"),
])
def test_bad_similarity_parameters(bad: dict, match: str) -> None:
    args = {"k": 3, "similarity": "cosine", "shrink": 0.0, "alpha": 0.5} | bad
    with pytest.raises(ConfigError, match=match):
        topk_similarity(binary_items(), **args)


def interactions_from_dense(dense: np.ndarray) -> Interactions:
    users, items = dense.nonzero()
    return Interactions.from_arrays(users, items, *dense.shape)


@pytest.mark.parametrize("similarity", ["cosine", "asymmetric", "jaccard"])
def test_itemknn_scores_sum_neighbour_similarities(similarity: str) -> None:
    x = binary_items(n_items=30, n_users=25, seed=4).toarray().T  # users x items
    train = interactions_from_dense(x)
    model = ItemKNN(ItemKNNParams(k=6, similarity=similarity, shrink=2.0, alpha=0.7)).fit(train)
    w = prune(dense_similarity(x.T, similarity, 2.0, alpha=0.7), 6)  # row c: neighbours of candidate c
    expected = x @ w.T  # score(u, c) = sum over the user's items i of W[c, i]
    got = model.score(np.arange(25))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_itemknn_bm25_weighting_uses_items_as_documents() -> None:
    x = binary_items(n_items=20, n_users=15, seed=5).toarray().T
    model = ItemKNN(ItemKNNParams(k=4, weighting="bm25")).fit(interactions_from_dense(x))
    rows = weight_rows(sp.csr_matrix(x.T), "bm25").toarray()  # formula checked above
    w = prune(dense_similarity(rows, "cosine", 0.0), 4)
    np.testing.assert_allclose(model.weights.toarray(), w, rtol=1e-5, atol=1e-7)


def test_itemknn_memory_is_items_times_k() -> None:
    rng = np.random.default_rng(6)
    n_users, n_items = 300, 2000
    keys = np.unique(rng.integers(0, n_users, 20000) * n_items + rng.integers(0, n_items, 20000))
    train = Interactions.from_arrays(keys // n_items, keys % n_items, n_users, n_items)
    model = ItemKNN(ItemKNNParams(k=10)).fit(train)
    assert model.weights.nnz <= n_items * 10
    assert np.diff(model.weights.indptr).max() == 10
