"""Graph structures shared by graph models, built once per fit and never inside the epoch loop."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from modalrec.data.interactions import Interactions


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
    """A scipy matrix as a torch sparse CSR tensor (fast ``@`` with a dense matrix on CPU)."""
    csr = sp.csr_matrix(matrix)
    return torch.sparse_csr_tensor(
        torch.from_numpy(csr.indptr.astype(np.int64)),
        torch.from_numpy(csr.indices.astype(np.int64)),
        torch.from_numpy(csr.data.astype(np.float32)),
        size=csr.shape,
    ).to(device)
