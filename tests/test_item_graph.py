"""Item kNN graphs, normalisation, sparse propagation and FREEDOM's edge pruning against slow references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from modalrec.errors import ConfigError
from modalrec.evaluation.chunked_topk import gram_topk
from modalrec.models import graph as graph_module
from modalrec.models.freedom import bipartite_normalized, prune_edges
from modalrec.models.graph import knn_edges, knn_graph, symmetric_normalize
from modalrec.models.modality import SparseOperator, edge_csr, edge_propagate, modality_weights


def dense_knn(x: np.ndarray, k: int, mask: np.ndarray | None = None, include_self: bool = True) -> np.ndarray:
    """Slow reference: full cosine matrix, each row's top k, ties to the lower index."""
    n = len(x)
    ok = np.linalg.norm(x, axis=1) > 0
    if mask is not None:
        ok &= mask
    out = np.zeros((n, n), dtype=np.float64)
    xn = np.zeros_like(x, dtype=np.float64)
    xn[ok] = x[ok] / np.linalg.norm(x[ok], axis=1, keepdims=True)
    sims = xn @ xn.T
    for i in np.flatnonzero(ok):
        candidates = [j for j in np.flatnonzero(ok) if include_self or j != i]
        ranked = sorted(candidates, key=lambda j: (-sims[i, j], j))
        for j in ranked[:k]:
            out[i, j] = sims[i, j]
    return out


def binary_features(n: int, d: int = 8, ones: int = 4, seed: int = 0) -> np.ndarray:
    """Rows with exactly ``ones`` ones: every norm is 2, every normalised entry exactly 0.5 and
    every cosine a multiple of 1/4, exact in float32 whatever the summation order. So equal
    similarities are real ties, and there are many of them."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), dtype=np.float32)
    for row in x:
        row[rng.choice(d, ones, replace=False)] = 1
    return x


@pytest.mark.parametrize("memory_mb", [1e-4, 0.002, 256, None])  # torch path: 1 row per chunk, a few, all; fused
@pytest.mark.parametrize("include_self", [True, False])
def test_knn_matches_dense_reference_across_chunks_and_ties(memory_mb: float | None, include_self: bool,
                                                            monkeypatch) -> None:
    """The CPU kernel (``memory_mb`` None) and the chunked torch path other devices take."""
    if memory_mb is None:
        memory_mb = 256
    else:
        monkeypatch.setattr(graph_module, "factors_are_safe", lambda *_: False)
    x = binary_features(70, seed=1)
    x[5] = 0  # all-zero row: no content
    mask = np.ones(70, dtype=bool)
    mask[[7, 30]] = False
    graph = knn_graph(x, 6, mask, include_self=include_self, weighted=True, memory_mb=memory_mb)
    expected = dense_knn(x, 6, mask, include_self=include_self)
    assert ((graph.toarray() != 0) == (expected != 0)).all()
    np.testing.assert_allclose(graph.toarray(), expected, atol=1e-6)
    counts = np.diff(graph.indptr)
    assert (counts[[5, 7, 30]] == 0).all(), "items without content must have no edges"
    assert graph[:, [5, 7, 30]].nnz == 0, "items without content must be nobody's neighbour"
    assert (np.delete(counts, [5, 7, 30]) == 6).all()


@pytest.mark.parametrize("threads", [1, 2])  # 1: gram_topk's half products; 2: factor_topk's row split
@pytest.mark.parametrize("include_self", [True, False])
def test_knn_over_several_tiles_matches_dense_reference(threads: int, include_self: bool) -> None:
    """Enough items for three of ``gram_topk``'s tiles, so neighbours come through both its row
    pass and its column offers to earlier rows, with many exact ties across tiles."""
    x = binary_features(300, seed=4)
    x[140] = 0
    mask = np.ones(300, dtype=bool)
    mask[[3, 200]] = False
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        graph = knn_graph(x, 7, mask, include_self=include_self, weighted=True)
    finally:
        torch.set_num_threads(previous)
    expected = dense_knn(x, 7, mask, include_self=include_self)
    assert ((graph.toarray() != 0) == (expected != 0)).all()
    np.testing.assert_allclose(graph.toarray(), expected, atol=1e-6)


@pytest.mark.parametrize("n, k", [(129, 128), (300, 200), (257, 3), (40, 40)])
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("ties", [True, False])
def test_gram_topk_matches_ranked_scores(n: int, k: int, include_self: bool, ties: bool) -> None:
    """Values and indices as a full sort of ``x @ x.T`` gives them (ties to the lower index), for
    k beyond a tile, a last tile of one row, and k equal to every candidate."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    x = torch.from_numpy(np.round(x * 2) / 2 if ties else x)  # halves: exact scores, many equal
    k = min(k, n - (0 if include_self else 1))
    values, indices = gram_topk(x, k, include_self)
    scores = (x.double() @ x.double().T).numpy()
    for i in range(n):
        candidates = [j for j in range(n) if include_self or j != i]
        ranked = sorted(candidates, key=lambda j: (-scores[i, j], j))[:k]
        assert indices[i].tolist() == ranked, i
        np.testing.assert_allclose(values[i].numpy(), scores[i, ranked], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="k must be in"):
        gram_topk(x, n + include_self, include_self)


@pytest.mark.parametrize("threads", [1, 2])
def test_identical_rows_are_exact_ties_whatever_the_rounding(threads: int, monkeypatch) -> None:
    """Like real poster features: 1,280-d non-negative rows, twenty mean-filled copies and fifteen
    shared rows. In exact arithmetic copies tie, so the lower index must win; ranked directly,
    products round copies apart (about a hundred rows differ from the reference then)."""
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((600, 1280))).astype(np.float32) ** 2
    x[rng.choice(600, 20, replace=False)] = x.mean(0)
    for a, b in rng.choice(600, (15, 2), replace=False):
        x[b] = x[a]
    expected = dense_knn(x, 10, include_self=False) != 0
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = knn_graph(x, 10, include_self=False).toarray() != 0
        monkeypatch.setattr(graph_module, "duplicate_groups", lambda rows: (np.arange(len(rows)), np.arange(len(rows))))
        direct = knn_graph(x, 10, include_self=False).toarray() != 0
    finally:
        torch.set_num_threads(previous)
    assert (got == expected).all()
    assert (direct != expected).any(axis=1).sum() > 10, "the case must make rounding split copies"


def test_duplicate_groups_number_groups_by_their_first_row() -> None:
    rows = np.array([[1, 2], [3, 4], [1, 2], [0, 0], [3, 4], [1, 2]], dtype=np.float32)
    group_of, first = graph_module.duplicate_groups(rows)
    assert group_of.tolist() == [0, 1, 0, 2, 1, 0]
    assert first.tolist() == [0, 1, 3]
    empty_groups, empty_first = graph_module.duplicate_groups(np.zeros((0, 3), dtype=np.float32))
    assert len(empty_groups) == 0 and len(empty_first) == 0


def test_knn_ties_go_to_lower_index() -> None:
    x = np.ones((8, 3), dtype=np.float32)  # all identical: every similarity is 1
    graph = knn_graph(x, 3, include_self=False)
    for i in range(8):
        expected = [j for j in range(8) if j != i][:3]
        assert graph[i].indices.tolist() == expected


def test_knn_on_random_real_features_matches_dense() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 16)).astype(np.float32)
    rows, cols, sims = knn_edges(torch.from_numpy(x), 10, memory_mb=0.01)
    reference = dense_knn(x, 10)
    assert (rows.numpy()[::10] == np.arange(200)).all()
    got = sp.csr_matrix((sims.numpy(), (rows.numpy(), cols.numpy())), shape=(200, 200)).toarray()
    np.testing.assert_allclose(got, reference, atol=1e-5)
    assert (np.diag(got) > 0.999).all(), "with include_self the item is its own nearest neighbour"


def test_knn_with_fewer_candidates_than_k_takes_all() -> None:
    x = binary_features(4)
    graph = knn_graph(x, 10)
    assert (np.diff(graph.indptr) == 4).all()


def test_knn_never_builds_dense_matrix_of_the_catalog(monkeypatch) -> None:
    """The torch path's similarity work happens in row chunks bounded by ``memory_mb`` (the CPU
    kernel holds a fixed number of rows)."""
    monkeypatch.setattr(graph_module, "factors_are_safe", lambda *_: False)
    shapes = []
    real_topk = graph_module.topk_deterministic

    def spy(t, *args, **kwargs):
        shapes.append(tuple(t.shape))
        return real_topk(t, *args, **kwargs)

    monkeypatch.setattr(graph_module, "topk_deterministic", spy)
    x = np.random.default_rng(0).standard_normal((3000, 8)).astype(np.float32)
    knn_graph(x, 5, memory_mb=1)
    assert shapes and max(s[0] for s in shapes) * 3000 * 8 <= 2**20 + 3000 * 8
    assert sum(s[0] for s in shapes) == 3000


def test_symmetric_normalize_against_formula() -> None:
    rng = np.random.default_rng(0)
    a = sp.random(30, 30, density=0.2, random_state=1, format="csr", dtype=np.float32)
    a.data = rng.random(a.nnz).astype(np.float32)
    a[3] = 0  # an isolated row
    dense = a.toarray().astype(np.float64)
    deg = dense.sum(axis=1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.where(deg > 0, deg, 1)), 0)
    np.testing.assert_allclose(symmetric_normalize(a).toarray(), inv[:, None] * dense * inv[None, :], rtol=1e-5)
    # a 0/1 kNN graph normalises to 1/k per entry (FREEDOM's item graph)
    knn = knn_graph(rng.standard_normal((50, 5)).astype(np.float32), 7)
    np.testing.assert_allclose(symmetric_normalize(knn).data, 1 / 7, rtol=1e-6)


def test_sparse_operator_and_edge_propagation_gradients_match_dense() -> None:
    rng = np.random.default_rng(0)
    a = sp.random(20, 20, density=0.3, random_state=0, format="csr", dtype=np.float32)
    x = torch.tensor(rng.standard_normal((20, 4)), dtype=torch.float32, requires_grad=True)
    weights = torch.tensor(rng.standard_normal((20, 4)), dtype=torch.float32)
    (SparseOperator(a) @ x).mul(weights).sum().backward()
    expected = torch.from_numpy(a.T.toarray()) @ weights
    torch.testing.assert_close(x.grad, expected)

    coo = a.tocoo()
    rows = torch.from_numpy(np.r_[coo.row, coo.row[:5]].astype(np.int64))  # duplicates add
    cols = torch.from_numpy(np.r_[coo.col, coo.col[:5]].astype(np.int64))
    values = torch.tensor(np.r_[coo.data, coo.data[:5]], requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out = edge_propagate(rows, cols, values, x2)
    dense = torch.zeros(20, 20).index_put((rows, cols), values, accumulate=True)
    x3 = x.detach().clone().requires_grad_(True)
    values3 = values.detach().clone().requires_grad_(True)
    dense3 = torch.zeros(20, 20).index_put((rows, cols), values3, accumulate=True)
    torch.testing.assert_close(out, dense.detach() @ x.detach())
    out.mul(weights).sum().backward()
    (dense3 @ x3).mul(weights).sum().backward()
    torch.testing.assert_close(x2.grad, x3.grad)
    torch.testing.assert_close(values.grad, values3.grad)


def test_edge_csr_sorts_columns_and_sums_duplicates_in_order() -> None:
    """Against a loop over the edges: shuffled input, repeated edges, empty rows, a non-square shape."""
    rng = np.random.default_rng(5)
    rows = rng.integers(0, 12, 300)
    rows[rows == 4] = 5  # row 4 stays empty
    cols = rng.integers(0, 9, 300)
    values = rng.standard_normal(300).astype(np.float32)
    csr = edge_csr(torch.from_numpy(rows), torch.from_numpy(cols), torch.from_numpy(values), (12, 9))
    ptr, index, data = (t.numpy() for t in (csr.crow_indices(), csr.col_indices(), csr.values()))
    expected: dict[tuple[int, int], np.float32] = {}
    for r, c, v in zip(rows, cols, values):  # float32 sums in input order
        expected[r, c] = expected.get((r, c), np.float32(0)) + v
    for r in range(12):
        got_cols = index[ptr[r]:ptr[r + 1]].tolist()
        assert got_cols == sorted(c for (rr, c) in expected if rr == r), r
        assert data[ptr[r]:ptr[r + 1]].tolist() == [expected[r, c] for c in got_cols]
    assert ptr[5] == ptr[4]
    with pytest.raises(ValueError, match="out of range"):
        edge_csr(torch.tensor([0, 12]), torch.tensor([0, 1]), torch.ones(2), (12, 9))
    assert edge_csr(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0),
                    (3, 3)).to_dense().abs().sum() == 0


def test_pruning_keeps_the_right_number_and_prefers_low_degree_edges() -> None:
    rng = np.random.default_rng(0)
    # user 0 and item 0 are hubs; the rest of the graph is sparse
    users = np.r_[np.zeros(40, dtype=np.int64), rng.integers(1, 60, 200)]
    items = np.r_[np.arange(40), np.zeros(30, dtype=np.int64), rng.integers(1, 80, 170)]
    keys = np.unique(users * 100 + items)
    users, items = keys // 100, keys % 100
    n = len(users)
    keep = int(n * 0.2)
    deg_u = np.bincount(users, minlength=60)
    deg_i = np.bincount(items, minlength=80)
    weight = 1 / np.sqrt(deg_u[users] * deg_i[items])
    kept_weight = []
    counts = np.zeros(n)
    for seed in range(300):
        kept = prune_edges(users, items, 60, 80, keep, np.random.default_rng(seed))
        assert len(kept) == keep and len(np.unique(kept)) == keep
        kept_weight.append(weight[kept].mean())
        counts[kept] += 1
    # kept edges are biased towards high 1/sqrt(deg deg), i.e. low-degree endpoints ...
    assert np.mean(kept_weight) > weight.mean() * 1.1
    hub = (users == 0) | (items == 0)
    assert counts[hub].mean() < counts[~hub].mean() / 2
    # ... as successive weighted draws without replacement: on a tiny graph whose edge weights
    # are 1, 1/sqrt(2) and 1/2 (user degrees 1, 2, 4), compare inclusion counts with exact odds
    gen = np.random.default_rng(1)
    hits = np.zeros(3)
    tiny_u = np.array([0, 1, 1, 2, 2, 2, 2])
    tiny_i = np.array([0, 1, 2, 3, 4, 5, 6])
    tw = 1 / np.sqrt(np.bincount(tiny_u)[tiny_u] * 1.0)
    trials = 20000
    for _ in range(trials):
        kept = prune_edges(tiny_u, tiny_i, 3, 7, 2, gen)
        hits += np.bincount(tiny_u[kept], minlength=3)
    # per-user inclusion counts from the sequential-draw formula over the 7 edges
    probs = np.zeros(7)
    for a in range(7):
        for b in range(7):
            if a != b:
                p = tw[a] / tw.sum() * tw[b] / (tw.sum() - tw[a])
                probs[a] += p
                probs[b] += p
    expected = np.bincount(tiny_u, weights=probs, minlength=3) * trials
    np.testing.assert_allclose(hits, expected, rtol=0.05)


def test_pruned_graph_is_renormalised_on_kept_degrees() -> None:
    users = np.array([0, 0, 1, 2])
    items = np.array([0, 1, 1, 1])
    adj = bipartite_normalized(users, items, 3, 2).toarray()
    # user 0 (deg 2) - item 1 (deg 3)
    assert adj[0, 3 + 1] == pytest.approx(1 / np.sqrt(6))
    np.testing.assert_allclose(adj, adj.T)


def test_modality_weights() -> None:
    assert modality_weights(["image", "text"], None) == pytest.approx([0.1, 0.9])
    assert modality_weights(["text_minilm", "image_effnet"], None) == pytest.approx([0.9, 0.1])
    assert modality_weights(["v", "t", "lvlm"], None) == pytest.approx([1 / 3] * 3)
    assert modality_weights(["image", "poster", "text"], None) == pytest.approx([0.05, 0.05, 0.9])
    assert modality_weights(["a", "b"], (1.0, 3.0)) == pytest.approx([0.25, 0.75])
    with pytest.raises(ConfigError, match="2 values for 3 modalities"):
        modality_weights(["a", "b", "c"], (0.5, 0.5))
    with pytest.raises(ConfigError, match="non-negative"):
        modality_weights(["a", "b"], (-1.0, 2.0))
