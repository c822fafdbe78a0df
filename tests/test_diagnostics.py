"""Diagnostics against slow reference formulas and known properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modalrec.cli.main import main as cli_main
from modalrec.data.dataset import Dataset
from modalrec.data.interactions import Interactions
from modalrec.errors import ConfigError
from modalrec.features.diagnostics import (
    cka_matrix,
    collaborative_neighbours,
    label_similarity_gap,
    linear_cka,
    mutual_knn_overlap,
    neighbour_overlap,
    topk_neighbours,
)
from modalrec.features.features import Features
from modalrec.features.store import FeatureStore


def slow_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA from its HSIC definition with n x n Gram matrices: HSIC(K, L) = tr(K H L H)."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, m = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h)

    return hsic(k, m) / np.sqrt(hsic(k, k) * hsic(m, m))


def slow_topk(matrix, k, rows, candidates):
    """Brute force: full cosine matrix, stable sort (ties -> lower index), self and non-candidates out."""
    unit = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-30)
    out = []
    for r in rows:
        sims = unit[r] @ unit.T
        order = [j for j in np.argsort(-sims, kind="stable") if j != r and candidates[j]]
        out.append(order[:k])
    return np.array(out)


def test_cka_matches_the_hsic_definition_and_its_properties():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 7))
    y = x @ rng.standard_normal((7, 5)) + 0.5 * rng.standard_normal((40, 5))
    assert linear_cka(x, y) == pytest.approx(slow_cka(x - x.mean(0), y - y.mean(0)), rel=1e-9)
    assert linear_cka(x, x) == pytest.approx(1.0)
    q, _ = np.linalg.qr(rng.standard_normal((7, 7)))
    assert linear_cka(x, 3.5 * x @ q + 2.0) == pytest.approx(1.0)
    assert linear_cka(x, y) == pytest.approx(linear_cka(x @ q, -0.1 * y))
    stretched = x @ np.diag([10.0, 1, 1, 1, 1, 1, 0.1])   # not an isotropic scaling: CKA < 1
    assert linear_cka(x, stretched) < 0.9
    assert 0 <= linear_cka(x, rng.standard_normal((40, 3))) < linear_cka(x, y)


def test_cka_matrix_uses_items_with_content_in_both():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((30, 4))
    mask = np.ones(30, dtype=bool)
    mask[:5] = False
    noisy = base.copy()
    noisy[:5] = rng.standard_normal((5, 4)) * 100
    table = cka_matrix({"a": Features(base), "b": Features(noisy, mask)})
    assert table["a"]["b"] == pytest.approx(1.0) and table["b"]["a"] == table["a"]["b"]


@pytest.mark.parametrize("chunk_elements", [7, 50, 10_000_000])
def test_topk_matches_brute_force_with_ties_and_chunks(chunk_elements):
    rng = np.random.default_rng(2)
    matrix = rng.integers(-2, 3, (40, 3)).astype(np.float32)   # small integers: many exact ties
    matrix[matrix.sum(axis=1) == 0, 0] = 1
    candidates = rng.random(40) > 0.2
    rows = np.arange(40)
    index, sims = topk_neighbours(matrix, 5, rows=rows, candidates=candidates, chunk_elements=chunk_elements)
    np.testing.assert_array_equal(index, slow_topk(matrix, 5, rows, candidates))
    assert (np.diff(sims, axis=1) <= 1e-7).all()


def test_topk_pads_when_fewer_candidates_than_k():
    matrix = np.eye(4, dtype=np.float32)
    index, sims = topk_neighbours(matrix, 5, candidates=np.array([True, True, False, False]))
    assert index[0].tolist() == [1, -1, -1, -1, -1] and np.isneginf(sims[0, 1:]).all()


def test_collaborative_neighbours_match_dense_cosine():
    rng = np.random.default_rng(3)
    dense = (rng.random((30, 12)) < 0.3).astype(np.float32)
    dense[:, 11] = 0  # a cold item: never a neighbour
    users, items = np.nonzero(dense)
    train = Interactions.from_arrays(users, items, 30, 12)
    index, _ = collaborative_neighbours(train, 3, chunk_elements=20)
    candidates = np.ones(12, dtype=bool)
    candidates[11] = False
    np.testing.assert_array_equal(index[:11], slow_topk(dense.T + 0.0, 3, np.arange(11), candidates))


def test_mutual_knn_overlap_is_one_for_behaviour_and_near_chance_for_noise():
    rng = np.random.default_rng(4)
    n_users, n_items = 300, 200
    taste = rng.standard_normal((n_users, 4)) @ rng.standard_normal((4, n_items))
    dense = (taste + rng.standard_normal(taste.shape) > 1.5).astype(np.float32)
    users, items = np.nonzero(dense)
    train = Interactions.from_arrays(users, items, n_users, n_items)
    perfect = mutual_knn_overlap(dense.T, train, k=5)
    assert perfect.overlap == pytest.approx(1.0) and perfect.jaccard == pytest.approx(1.0)
    noise = mutual_knn_overlap(rng.standard_normal((n_items, 16)), train, k=5)
    assert noise.chance == pytest.approx(5 / (noise.n_items - 1))
    assert abs(noise.overlap - noise.chance) < 0.02
    partial = mutual_knn_overlap(dense.T + 2.0 * rng.standard_normal(dense.T.shape), train, k=5)
    assert noise.overlap < partial.overlap < perfect.overlap
    with pytest.raises(ConfigError, match="need more than k"):
        mutual_knn_overlap(dense.T, train, k=500)


def test_neighbour_overlap_ignores_padding():
    a = np.array([[1, 2, 3], [4, -1, -1]])
    b = np.array([[3, 2, 9], [-1, -1, 5]])
    assert neighbour_overlap(a, b).tolist() == [2, 0]


def test_label_gap_matches_a_double_loop():
    rng = np.random.default_rng(5)
    matrix = rng.standard_normal((25, 6))
    labels = (rng.random((25, 4)) < 0.3).astype(int)
    mask = rng.random(25) > 0.1
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    same, cross = [], []
    keep = [i for i in range(25) if mask[i] and labels[i].any()]
    for a in keep:
        for b in keep:
            if a < b:
                (same if (labels[a] & labels[b]).any() else cross).append(unit[a] @ unit[b])
    result = label_similarity_gap(matrix, labels, mask, chunk_elements=30)
    assert result["same"] == pytest.approx(np.mean(same), rel=1e-5)
    assert result["cross"] == pytest.approx(np.mean(cross), rel=1e-5)
    assert result["gap"] == pytest.approx(np.mean(same) - np.mean(cross), rel=1e-4)
    assert (result["same_pairs"], result["cross_pairs"]) == (len(same), len(cross))


def test_cli_inspect_shows_neighbours_cka_and_overlap(tmp_path, capsys):
    rng = np.random.default_rng(6)
    n_items = 30
    items = pd.DataFrame({"item_id": [f"m{i}" for i in range(n_items)], "title": [f"Movie {i}" for i in range(n_items)]})
    pairs = {(u, i) for u in range(40) for i in rng.choice(n_items, 6, replace=False)}
    inter = pd.DataFrame({"user_id": [f"u{u}" for u, _ in sorted(pairs)], "item_id": [f"m{i}" for _, i in sorted(pairs)]})
    dataset = Dataset.from_frames(inter, items)
    dataset.save(tmp_path)
    store = FeatureStore(tmp_path)
    store.save("a", Features(rng.standard_normal((n_items, 5))), dataset.item_ids)
    no_content = np.ones(n_items, dtype=bool)
    no_content[3] = False
    store.save("b", Features(rng.standard_normal((n_items, 3)), no_content), dataset.item_ids)
    assert cli_main(["features", "inspect", str(tmp_path), "--items", "m3,m4", "-k", "4"]) == 0
    out = capsys.readouterr().out
    assert "neighbours of m3 'Movie 3'" in out and "co-consumption:" in out
    assert "b: (this item has no content here)" in out and out.count("  b: m") == 1
    assert "linear CKA" in out and "1.000" in out
    assert f"{4 / (n_items - 1):.4f}" in out  # the chance level is printed
    assert cli_main(["features", "inspect", str(tmp_path), "--features", "c"]) == 2
    assert "available: a, b" in capsys.readouterr().err
