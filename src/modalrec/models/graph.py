"""Graph structures shared by graph models, built once per fit and never inside the epoch loop."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from modalrec.data.interactions import Interactions
from modalrec.evaluation.chunked_topk import expand_group_topk, factor_topk, factors_are_safe, gram_topk
from modalrec.evaluation.ranking import topk_deterministic


def bipartite_adjacency(train: Interactions) -> sp.csr_matrix:
    """The symmetric (users + items) x (users + items) 0/1 adjacency of the interaction graph."""
    r = train.csr()
    return sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)


def symmetric_normalize(adjacency: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1/2 A D^-1/2``; isolated nodes get zero rows instead of a division by zero."""
    adjacency = sp.csr_matrix(adjacency, dtype=np.float32)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    nonzero = degree > 0
    inv_sqrt[nonzero] = degree[nonzero] ** -0.5
    scale = sp.diags(inv_sqrt)
    return (scale @ adjacency @ scale).tocsr().astype(np.float32)


def normalized_adjacency(train: Interactions) -> sp.csr_matrix:
    """LightGCN's propagation matrix ``D^-1/2 A D^-1/2`` over the user-item graph."""
    return symmetric_normalize(bipartite_adjacency(train))


def to_torch_sparse(matrix: sp.spmatrix, device: torch.device | str = "cpu") -> torch.Tensor:
    """A scipy matrix as a torch sparse CSR tensor (fast ``@`` with a dense matrix on CPU).

    Indices are int32 where they fit: MKL's kernel takes 32-bit indices, and int64 ones are
    converted on every product (about 15% of a product on the MovieLens-100K graph)."""
    csr = sp.csr_matrix(matrix)
    return csr_tensor(csr.indptr, csr.indices, csr.data, csr.shape).to(device)


def csr_tensor(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """CSR arrays as a CPU torch sparse CSR tensor: float32 values, int32 indices where they fit."""
    index = np.int32 if max(len(data), *shape) < 2**31 else np.int64
    with warnings.catch_warnings():  # torch marks sparse CSR "beta"; the operations used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(indptr.astype(index)), torch.from_numpy(indices.astype(index)),
                                       torch.from_numpy(data.astype(np.float32)), size=shape)


# --- item kNN graphs from content -------------------------------------------------------------------
#
# Multimodal graph models (LATTICE, FREEDOM) link each item to its k most similar items by cosine
# similarity of a content matrix. The reference code builds a dense items x items similarity matrix,
# which does not fit in memory on large catalogs (100,000 items: 40 GB in float32). Here the rows of
# the normalised matrix are processed in chunks (chunk @ X.T, then top-k per row), so memory is
# O(chunk x items) for the work and O(items x k) for the result.
#
# Conventions:
# - The item itself is a candidate (``include_self=True``), as in the LATTICE and FREEDOM code, where
#   the top-k of the full similarity row includes the diagonal (it is the maximum, cosine 1).
# - Ties at the k-th place go to the lower item index, so the graph does not depend on the chunking.
# - Items without content (``mask`` False) and all-zero rows get no edges and are nobody's neighbour.
#   The reference toolboxes fill missing rows with the mean feature instead; a mean row is close to
#   everything and takes most neighbour slots in the whole catalog.
# - The graph is directed (row i lists i's neighbours); normalise it with ``symmetric_normalize``,
#   which divides entry (i, j) by sqrt(rowsum_i * rowsum_j) as the reference code does.


def _chunk_rows(n_columns: int, memory_mb: float) -> int:
    """Rows per chunk so that a float32 similarity chunk plus a same-size temporary fit the budget."""
    return max(1, int(memory_mb * 2**20) // (8 * max(1, n_columns)))


def duplicate_groups(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(group of each row, first row of each group)`` for bitwise-identical rows, groups numbered
    in the order of their first row (so a group's number orders it as its lowest row would)."""
    rows = np.ascontiguousarray(rows)
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first)
    number = np.empty_like(order)
    number[order] = np.arange(len(order))
    return number[inverse.ravel()].astype(np.int64), first[order].astype(np.int64)


def _ranked_neighbours(xv: torch.Tensor, k: int, include_self: bool,
                       memory_mb: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (values, columns) of ``xv @ xv.T`` per row, ties to the lower column."""
    m = len(xv)
    if xv.device.type == "cpu" and factors_are_safe(xv, xv):
        # Scores, self-mask and top-k a few rows at a time in cache: on one thread each pair's
        # product once (gram_topk, serial), on several the rows split over threads.
        if torch.get_num_threads() == 1:
            return gram_topk(xv, k, include_self)
        own = np.arange(m, dtype=np.int64)
        ptr = np.zeros(m + 1, dtype=np.int64) if include_self else np.arange(m + 1, dtype=np.int64)
        return factor_topk(xv, xv, own, ptr, own.astype(np.int32), k)  # mask: nothing or self
    step = min(_chunk_rows(m, memory_mb), m)
    buffer = torch.empty(step, m, dtype=xv.dtype, device=xv.device)  # allocated once (heap fragmentation)
    values = torch.empty(m, k, dtype=xv.dtype, device=xv.device)
    cols = torch.empty(m, k, dtype=torch.long, device=xv.device)
    for lo in range(0, m, step):
        sims = buffer[: min(step, m - lo)]
        torch.mm(xv[lo : lo + len(sims)], xv.T, out=sims)
        if not include_self:
            sims[torch.arange(len(sims), device=xv.device), torch.arange(lo, lo + len(sims), device=xv.device)] = -torch.inf
        values[lo : lo + len(sims)], cols[lo : lo + len(sims)] = topk_deterministic(sims, k)
    return values, cols


@torch.no_grad()
def knn_edges(
    x: torch.Tensor,
    k: int,
    valid: torch.Tensor | None = None,
    include_self: bool = True,
    memory_mb: float = 256,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` cosine neighbours of every valid row of ``x`` as COO ``(rows, cols, similarity)``.

    ``rows`` is sorted and, within a row, ``cols`` ascend. Rows that are invalid (``valid`` False or
    all zero) have no edges and are never chosen. A row with fewer than ``k`` candidates gets them all.
    Equal similarities go to the lower index, and identical rows count as equal exactly (their
    products are computed once per group, not rounded apart by where a product computes them).
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    x = x.detach().float()
    norms = torch.linalg.vector_norm(x, dim=1)
    ok = norms > 0
    if valid is not None:
        ok &= valid.to(device=x.device, dtype=torch.bool)
    xn = torch.zeros_like(x)
    xn[ok] = x[ok] / norms[ok, None]
    candidates = int(ok.sum()) - (0 if include_self else 1)
    kk = min(k, candidates)
    valid_rows = torch.nonzero(ok).flatten()
    if kk < 1 or len(valid_rows) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=x.device)
        return empty, empty.clone(), torch.zeros(0, device=x.device)
    # Only valid rows are candidates: ranking among them and mapping back through the ascending
    # ``valid_rows`` keeps the rule that ties go to the lower item index. Identical rows (movies
    # sharing a poster, mean-filled gaps) score alike in exact arithmetic, but a product can round
    # them apart depending on where it computes them: one row per group is ranked, then each
    # group's rows take its score (``expand_group_topk``), so such ties follow the rule exactly.
    xv = xn[valid_rows]
    group_of, representatives = duplicate_groups(xv.cpu().numpy())
    if len(representatives) == len(xv):
        values, cols = _ranked_neighbours(xv, kk, include_self, memory_mb)
    else:
        # the top kk groups hold the top kk rows; one more when a row's own group may be just itself
        n_groups = min(kk + (0 if include_self else 1), len(representatives))
        reps = torch.as_tensor(representatives, device=x.device)
        group_values, group_cols = _ranked_neighbours(xv[reps], n_groups, True, memory_mb)
        values, cols = expand_group_topk(group_values.cpu(), group_cols.cpu(), group_of, kk, include_self)
        values, cols = values.to(x.device), cols.to(x.device)
    cols, order = torch.sort(cols, dim=1)
    out_vals = torch.gather(values, 1, order)
    out_cols = valid_rows[cols]
    return valid_rows.repeat_interleave(kk), out_cols.reshape(-1), out_vals.reshape(-1)


def knn_graph(
    features: np.ndarray,
    k: int,
    mask: np.ndarray | None = None,
    include_self: bool = True,
    weighted: bool = False,
    memory_mb: float = 256,
) -> sp.csr_matrix:
    """The directed item kNN graph of a content matrix as ``n x n`` CSR with ``n x k`` entries.

    ``weighted``: entries are the cosine similarities (LATTICE) instead of 1 (FREEDOM).
    """
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    valid = None if mask is None else torch.from_numpy(np.asarray(mask, dtype=bool))
    rows, cols, sims = knn_edges(x, k, valid, include_self=include_self, memory_mb=memory_mb)
    data = sims.numpy() if weighted else np.ones(len(rows), dtype=np.float32)
    n = x.shape[0]
    return sp.csr_matrix((data.astype(np.float32), (rows.numpy(), cols.numpy())), shape=(n, n))
