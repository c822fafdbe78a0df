"""Sparse top-k item-item similarity, computed in row blocks so memory stays O(items x k).

Shared by ItemKNN (rows = items, columns = users) and Attribute ItemKNN (rows = items, columns =
attributes or feature dimensions). A block of rows is compared with every item at once (a
``block x n_items`` dense slice, sized by ``block_mb``), pruned to its ``k`` best neighbours and
kept as CSR; the full ``n_items x n_items`` matrix never exists.

Definitions follow the evaluation framework of Dacrema et al. ("Are we really making much
progress?", RecSys 2019; ``Compute_Similarity_Python``), with ``x_i`` the row of item ``i``:

- ``cosine``:      ``x_c . x_i / (||x_c|| ||x_i|| + shrink)``
- ``asymmetric``:  ``x_c . x_i / (||x_c||^(2 alpha) ||x_i||^(2 (1 - alpha)) + shrink)``, Aiolli's
  asymmetric cosine (RecSys Challenge 2013 / "Efficient top-N recommendation for very large scale
  binary rated datasets"); on binary data ``|U(c) & U(i)| / (|U(c)|^alpha |U(i)|^(1-alpha))``,
  ``alpha`` applying to the candidate ``c`` whose neighbourhood is built. ``alpha = 0.5`` is cosine.
- ``jaccard``:     ``x_c . x_i / (||x_c||^2 + ||x_i||^2 - x_c . x_i + shrink)``: the Tanimoto
  coefficient, which is exactly Jaccard's ``|A & B| / |A | B|`` on binary rows and its usual
  extension to weighted rows (so TF-IDF / BM25 weights still matter).

Shrinkage is the **denominator** form ``+ shrink`` used by Dacrema et al.'s framework (and Elliot),
not Bell & Koren's multiplicative ``n / (n + shrink)``: it damps similarities of rarely observed
items while leaving well supported ones almost unchanged. Where a denominator is zero (an empty
row, no shrink) the similarity is 0; Dacrema et al. add 1e-6 instead, which gives the same 0.

Row ``c`` of the result holds the ``k`` largest similarities of item ``c`` to the other items
(the item itself excluded, exact zeros dropped, ties to the lower item index), i.e. ``c``'s
neighbourhood when ``c`` is the candidate being scored.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from modalrec.errors import ConfigError
from modalrec.evaluation.ranking import topk_deterministic

log = logging.getLogger(__name__)

SimilarityName = Literal["cosine", "asymmetric", "jaccard"]
WeightingName = Literal["none", "tfidf", "bm25"]
SIMILARITIES = ("cosine", "asymmetric", "jaccard")
WEIGHTINGS = ("none", "tfidf", "bm25")


def weight_rows(matrix: sp.spmatrix, weighting: str, k1: float = 1.2, b: float = 0.75) -> sp.csr_matrix:
    """Re-weight a non-negative matrix whose rows are documents (items) and columns terms.

    - ``tfidf``: ``tf * log(N / df)`` (Salton & Buckley), so a term present in every row weighs 0.
    - ``bm25``: ``tf (k1 + 1) / (tf + k1 (1 - b + b len / avg_len)) * log(1 + (N - df + 0.5) /
      (df + 0.5))`` (Robertson & Zaragoza's BM25 with Lucene's non-negative idf); ``k1 = 1.2``,
      ``b = 0.75`` are the customary defaults, also Dacrema et al.'s.

    Dacrema et al. use ``log(N / (1 + df))``, which turns negative for terms in nearly every row;
    the forms above never give negative weights.
    """
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"unknown weighting {weighting!r}", hint=f"choose one of {', '.join(WEIGHTINGS)}")
    csr = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    csr.eliminate_zeros()
    if weighting == "none":
        return csr
    if csr.nnz and csr.data.min() < 0:
        raise ConfigError(f"{weighting} weighting needs non-negative features (counts or one-hot)",
                          hint="use weighting=none for dense embeddings")
    n_docs = csr.shape[0]
    df = np.bincount(csr.indices, minlength=csr.shape[1]).astype(np.float64)
    col = csr.indices
    if weighting == "tfidf":
        idf = np.log(n_docs / np.maximum(df, 1.0))
        csr.data = csr.data * idf[col]
    else:
        if k1 < 0 or not 0 <= b <= 1:
            raise ConfigError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        length = np.asarray(csr.sum(axis=1)).ravel()
        avg = length.mean() if n_docs else 1.0
        norm = (1.0 - b) + b * length / (avg if avg > 0 else 1.0)
        rows = np.repeat(np.arange(n_docs), np.diff(csr.indptr))
        tf = csr.data
        csr.data = tf * (k1 + 1.0) / (tf + k1 * norm[rows]) * idf[col]
    csr.eliminate_zeros()
    return csr


def check_similarity(similarity: str, k: int, shrink: float, alpha: float) -> None:
    """Clear errors for bad similarity parameters, before any work is done."""
    if similarity not in SIMILARITIES:
        raise ConfigError(f"unknown similarity {similarity!r}", hint=f"choose one of {', '.join(SIMILARITIES)}")
    if k < 1:
        raise ConfigError(f"neighbourhood size k must be at least 1, got {k}")
    if shrink < 0:
        raise ConfigError(f"shrink must be non-negative, got {shrink}")
    if similarity == "asymmetric" and not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"asymmetric cosine needs 0 <= alpha <= 1, got {alpha}")


def topk_similarity(
    rows: sp.spmatrix | np.ndarray,
    k: int,
    similarity: str = "cosine",
    shrink: float = 0.0,
    alpha: float = 0.5,
    block_mb: int = 256,
    progress: bool = False,
) -> sp.csr_matrix:
    """The ``(n, n)`` float32 CSR of each row's ``k`` most similar other rows (see module doc).

    ``rows`` is an ``(n, m)`` scipy sparse matrix or dense array; computation is in float64, so
    ties are exact and results do not depend on the block size.
    """
    check_similarity(similarity, k, shrink, alpha)
    sparse = sp.issparse(rows)
    if sparse:
        x = sp.csr_matrix(rows, dtype=np.float64)
        x.sum_duplicates()
        squares = np.asarray(x.multiply(x).sum(axis=1)).ravel()
        xt = x.T.tocsr()
    else:
        x = np.ascontiguousarray(rows, dtype=np.float64)
        squares = np.einsum("ij,ij->i", x, x)
        xt_dense = torch.from_numpy(x).T
    n = x.shape[0]
    k = min(k, max(n - 1, 0))
    if n == 0 or k == 0:
        return sp.csr_matrix((n, n), dtype=np.float32)
    norms = np.sqrt(squares)
    if similarity == "asymmetric":
        left, right = squares**alpha, squares ** (1.0 - alpha)
    block = max(1, (int(block_mb) << 20) // (8 * 4 * n))  # dots, denominator, topk temporaries
    out_idx, out_val = [], []
    starts = range(0, n, block)
    for lo in tqdm(starts, desc="similarity", unit="block", disable=not progress, leave=False):
        hi = min(lo + block, n)
        dots = (x[lo:hi] @ xt).toarray() if sparse else (torch.from_numpy(x[lo:hi]) @ xt_dense).numpy()
        if similarity == "cosine":
            denom = np.outer(norms[lo:hi], norms)
        elif similarity == "asymmetric":
            denom = np.outer(left[lo:hi], right)
        else:
            denom = squares[lo:hi, None] + squares[None, :] - dots
        denom += shrink
        sims = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
        del dots, denom
        sims[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf  # never one's own neighbour
        values, indices = topk_deterministic(torch.from_numpy(sims), k)
        out_val.append(values.numpy().astype(np.float32))
        out_idx.append(indices.numpy())
        del sims
    values = np.concatenate(out_val).ravel()
    indices = np.concatenate(out_idx).ravel()
    row_of = np.repeat(np.arange(n), k)
    keep = np.isfinite(values) & (values != 0)
    # Indices come sorted by value; CSR wants columns sorted within rows.
    result = sp.csr_matrix((values[keep], (row_of[keep], indices[keep])), shape=(n, n), dtype=np.float32)
    result.sort_indices()
    log.debug("top-%d %s similarity over %d rows: %d entries", k, similarity, n, result.nnz)
    return result
