"""Attribute ItemKNN against a slow dense reference, and its modality rules."""

from __future__ import annotations

import numpy as np
import pytest

from modalrec.data.interactions import Interactions
from modalrec.errors import ConfigError, ModelError
from modalrec.features.features import Features
from modalrec.models.attribute_knn import AttributeItemKNN, AttributeKNNParams

N_USERS, N_ITEMS = 20, 24


def train_set(seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    dense = rng.random((N_USERS, N_ITEMS)) < 0.2
    dense[:, 5] = False  # item 5 is cold: only its content can score it
    users, items = dense.nonzero()
    return Interactions.from_arrays(users, items, N_USERS, N_ITEMS)


def one_hot(seed: int = 0, n_attributes: int = 15) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = (rng.random((N_ITEMS, n_attributes)) < 0.3).astype(np.float32)
    matrix[:, 0] = 1.0  # an attribute every item has: TF-IDF gives it weight 0
    return matrix


def reference_weights(matrix: np.ndarray, similarity: str, weighting: str, k: int, shrink: float,
                      k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """Dense and loop-by-loop: weighting, all-pairs similarity, top-k per row (ties: lower index)."""
    x = matrix.astype(np.float64)
    n_docs = x.shape[0]
    df = (x > 0).sum(0)
    if weighting == "tfidf":
        x = x * np.log(n_docs / np.maximum(df, 1))
    elif weighting == "bm25":
        length = x.sum(1, keepdims=True)
        norm = 1 - b + b * length / length.mean()
        x = np.where(x > 0, x * (k1 + 1) / (x + k1 * norm), 0.0) * np.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    full = np.zeros((n_docs, n_docs))
    for c in range(n_docs):
        for i in range(n_docs):
            if c == i:
                continue
            dot = x[c] @ x[i]
            if similarity == "cosine":
                denom = np.linalg.norm(x[c]) * np.linalg.norm(x[i]) + shrink
            else:
                denom = x[c] @ x[c] + x[i] @ x[i] - dot + shrink
            full[c, i] = dot / denom if denom > 0 else 0.0
    out = np.zeros_like(full)
    for c in range(n_docs):
        order = sorted((i for i in range(n_docs) if i != c), key=lambda i: (-full[c, i], i))[:k]
        out[c, order] = full[c, order]
    return out


@pytest.mark.parametrize("similarity", ["cosine", "jaccard"])
@pytest.mark.parametrize("weighting", ["none", "tfidf", "bm25"])
def test_matches_dense_reference_on_one_hot_attributes(similarity: str, weighting: str) -> None:
    matrix = one_hot()
    params = AttributeKNNParams(k=5, similarity=similarity, weighting=weighting, shrink=1.0)
    model = AttributeItemKNN(params).fit(train_set(), {"attributes": Features(matrix)})
    expected = reference_weights(matrix, similarity, weighting, 5, 1.0)
    np.testing.assert_allclose(model.weights.toarray(), expected, rtol=1e-5, atol=1e-7)
    x = train_set().csr().toarray()
    np.testing.assert_allclose(model.score(np.arange(N_USERS)).numpy(), x @ expected.T, rtol=1e-5, atol=1e-6)


def test_dense_embeddings_cosine_and_cold_item_scored() -> None:
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(N_ITEMS, 8)).astype(np.float32)
    model = AttributeItemKNN(AttributeKNNParams(k=4)).fit(train_set(), {"text": Features(emb)})
    np.testing.assert_allclose(model.weights.toarray(), reference_weights(emb, "cosine", "none", 4, 0.0),
                               rtol=1e-5, atol=1e-6)
    scores = model.score(np.arange(N_USERS)).numpy()
    assert np.abs(scores[:, 5]).sum() > 0  # the cold item has content neighbours


def test_items_without_content_have_no_neighbours() -> None:
    matrix = one_hot()
    mask = np.ones(N_ITEMS, dtype=bool)
    mask[[2, 7]] = False
    model = AttributeItemKNN(AttributeKNNParams(k=6)).fit(train_set(), {"a": Features(matrix, mask)})
    w = model.weights.toarray()
    assert not w[[2, 7]].any() and not w[:, [2, 7]].any()


def test_modality_must_be_named_when_several() -> None:
    feats = {"image": Features(one_hot(0)), "text": Features(one_hot(1))}
    with pytest.raises(ConfigError, match="modality=image"):
        AttributeItemKNN().fit(train_set(), feats)
    with pytest.raises(ModelError, match="'audio' not among"):
        AttributeItemKNN(AttributeKNNParams(modality="audio")).fit(train_set(), feats)
    chosen = AttributeItemKNN(AttributeKNNParams(modality="text", k=5)).fit(train_set(), feats)
    only_text = AttributeItemKNN(AttributeKNNParams(k=5)).fit(train_set(), {"text": feats["text"]})
    assert (chosen.weights != only_text.weights).nnz == 0


def test_weighting_refuses_negative_features_and_no_features() -> None:
    emb = np.random.default_rng(2).normal(size=(N_ITEMS, 4))
    with pytest.raises(ConfigError, match="non-negative"):
        AttributeItemKNN(AttributeKNNParams(weighting="tfidf")).fit(train_set(), {"e": Features(emb)})
    with pytest.raises(ModelError, match="needs at least one feature"):
        AttributeItemKNN().fit(train_set())
