"""Helpers shared by the multimodal models: feature buffers, sparse propagation, modality weights.

Every multimodal model takes any number of modalities, in the order of the ``FeatureSet``. The raw
feature matrices are copied into module buffers (``feat_0``, ``feat_1``, ... with masks ``mask_0``,
...), so a saved model scores without the features; modality names stay in ``feature_dims``.
"""

from __future__ import annotations

import re

import numba
import numpy as np
import scipy.sparse as sp
import torch

from modalrec.errors import ConfigError
from modalrec.features.features import FeatureSet
from modalrec.models.graph import csr_tensor, to_torch_sparse
from modalrec.models.row_gather import gather_rows


def add_feature_buffers(module: torch.nn.Module, feature_dims: dict[str, int], n_items: int,
                        trainable: bool = False) -> None:
    """Zero-filled ``feat_i`` (``n_items x dim``) and ``mask_i`` buffers, one per modality, in order.

    ``trainable``: also a parameter ``tuned_i`` per modality, initialised from the features, that
    the optimiser fine-tunes, as the reference code of LATTICE, FREEDOM and BM3 does
    (``nn.Embedding.from_pretrained(freeze=False)``). Graphs built from the raw content keep using
    the untouched ``feat_i``, so a reloaded model rebuilds exactly the graphs it was trained with.
    """
    for i, dim in enumerate(feature_dims.values()):
        module.register_buffer(f"feat_{i}", torch.zeros(n_items, dim))
        module.register_buffer(f"mask_{i}", torch.ones(n_items, dtype=torch.bool))
        if trainable:
            module.register_parameter(f"tuned_{i}", torch.nn.Parameter(torch.zeros(n_items, dim)))


def copy_features(module: torch.nn.Module, features: FeatureSet) -> None:
    """Copy each modality's matrix and mask into the slots made by ``add_feature_buffers``."""
    with torch.no_grad():
        for i, feats in enumerate(features.values()):
            matrix = torch.from_numpy(feats.matrix)
            getattr(module, f"feat_{i}").copy_(matrix)
            getattr(module, f"mask_{i}").copy_(torch.from_numpy(np.asarray(feats.mask, dtype=bool)))
            if hasattr(module, f"tuned_{i}"):
                getattr(module, f"tuned_{i}").copy_(matrix)


def feature_slots(module: torch.nn.Module, n_modalities: int, raw: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(matrix, mask), ...]`` in modality order: the fine-tuned matrices where the model has them,
    the stored raw ones when ``raw`` (for graphs from the original content)."""
    out = []
    for i in range(n_modalities):
        name = f"feat_{i}" if raw or not hasattr(module, f"tuned_{i}") else f"tuned_{i}"
        out.append((getattr(module, name), getattr(module, f"mask_{i}")))
    return out


class _SparseMatmul(torch.autograd.Function):
    """``A @ x`` with the transpose kept beside ``A``: about 3x faster than autograd through a
    torch sparse CSR product on CPU, which transposes on every backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.a_t = a_t
        return a @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return ctx.a_t @ grad, None, None


class SparseOperator:
    """A fixed sparse matrix as torch CSR, with its transpose, for fast differentiable products."""

    def __init__(self, matrix: sp.spmatrix, device: torch.device | str = "cpu", symmetric: bool = False) -> None:
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        matrix.sort_indices()
        self.shape = matrix.shape
        self.a = to_torch_sparse(matrix, device)
        self.a_t = self.a if symmetric else to_torch_sparse(matrix.T.tocsr(), device)

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        if not x.requires_grad:
            return self.a @ x
        return _SparseMatmul.apply(x, self.a, self.a_t)


def light_propagate(adjacency: SparseOperator, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN: the mean of ``ego, A ego, ..., A^L ego`` (layer 0 included)."""
    total = ego
    h = ego
    for _ in range(n_layers):
        h = adjacency @ h
        total = total + h
    return total / (n_layers + 1)


class _EdgeMatmul(torch.autograd.Function):
    """``A @ x`` for ``A`` given as a COO edge list whose values carry gradient."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,  # type: ignore[override]
                n: int) -> torch.Tensor:
        ctx.save_for_backward(values, x, rows, cols)
        ctx.a_t = edge_csr(cols, rows, values, (x.shape[0], n))
        return edge_csr(rows, cols, values, (n, x.shape[0])) @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        values, x, rows, cols = ctx.saved_tensors
        grad_values = (grad[rows] * x[cols]).sum(dim=1) if ctx.needs_input_grad[0] else None
        grad_x = ctx.a_t @ grad if ctx.needs_input_grad[1] else None
        return grad_values, grad_x, None, None, None


def edge_propagate(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A @ x`` for a COO edge list, differentiable in both ``values`` and ``x`` (duplicates add)."""
    if not torch.is_grad_enabled() or not (values.requires_grad or x.requires_grad):
        return edge_csr(rows, cols, values, (x.shape[0], x.shape[0])) @ x
    return _EdgeMatmul.apply(values, x, rows, cols, x.shape[0])


def edge_csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """COO edges (duplicates summed in input order) as a torch CSR matrix; on CPU through a
    compiled counting sort, several times faster than scipy's conversion or torch's ``coalesce``."""
    if values.device.type != "cpu":
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape).coalesce().to_sparse_csr()
    if len(rows) and not (int(rows.min()) >= 0 and int(rows.max()) < shape[0]
                          and int(cols.min()) >= 0 and int(cols.max()) < shape[1]):
        raise ValueError(f"edge indices out of range for shape {shape}")
    return csr_tensor(*_coo_to_csr(rows.numpy(), cols.numpy(), values.detach().float().numpy(), *shape), shape)


@numba.njit(cache=True)
def _coo_to_csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays of COO edges, columns ascending within a row and equal ones summed: a stable
    counting sort by column, then one by row (the column order survives), then one merging pass."""
    by_col = _counting_order(cols, n_cols, np.arange(len(cols)))
    by_row = _counting_order(rows[by_col], n_rows, by_col)
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    index = np.empty(len(rows), dtype=np.int64)
    data = np.empty(len(rows), dtype=np.float32)
    out, previous_row = 0, -1
    for e in by_row:
        r, c = rows[e], cols[e]
        if r == previous_row and index[out - 1] == c:
            data[out - 1] += values[e]
        else:
            index[out], data[out] = c, values[e]
            out += 1
            ptr[r + 1] += 1
            previous_row = r
    return np.cumsum(ptr), index[:out].copy(), data[:out].copy()


@numba.njit(cache=True)
def _counting_order(keys: np.ndarray, n_keys: int, items: np.ndarray) -> np.ndarray:
    """``items`` stably sorted by ``keys`` (``keys[i]`` belongs to ``items[i]``), in O(n + n_keys)."""
    start = np.zeros(n_keys + 1, dtype=np.int64)
    for key in keys:
        start[key + 1] += 1
    start = np.cumsum(start)
    out = np.empty(len(items), dtype=np.int64)
    for i in range(len(items)):
        out[start[keys[i]]] = items[i]
        start[keys[i]] += 1
    return out


IMAGE_LIKE = re.compile(r"(image|img|visual|vision|photo|picture|poster|cnn|^v$|^v_)", re.IGNORECASE)
TEXT_LIKE = re.compile(r"(text|txt|title|desc|review|word|sentence|^t$|^t_)", re.IGNORECASE)


def modality_weights(names: list[str], given: tuple[float, ...] | list[float] | None,
                     image_share: float = 0.1, param: str = "modality_weights") -> list[float]:
    """Mixing weights for per-modality graphs, summing to 1.

    ``given``: one weight per modality in feature order (normalised to sum 1). Without it: when the
    names split into image-like and text-like ones (e.g. ``image``/``text``), image-like modalities
    share ``image_share`` and text-like ones the rest (FREEDOM's 0.1 / 0.9); otherwise uniform.
    """
    if given:
        weights = [float(w) for w in given]
        if len(weights) != len(names):
            raise ConfigError(
                f"{param} has {len(weights)} values for {len(names)} modalities ({', '.join(names)})",
                where=param, hint="give one weight per modality, in feature order, e.g. 0.1,0.9")
        if min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"{param} must be non-negative with a positive sum, got {weights}", where=param)
        total = sum(weights)
        return [w / total for w in weights]
    kinds = ["image" if IMAGE_LIKE.search(n) else "text" if TEXT_LIKE.search(n) else "" for n in names]
    n_image, n_text = kinds.count("image"), kinds.count("text")
    if n_image and n_text and n_image + n_text == len(names):
        return [image_share / n_image if kind == "image" else (1 - image_share) / n_text for kind in kinds]
    return [1.0 / len(names)] * len(names)


def project_rows(slots: list[tuple[torch.Tensor, torch.Tensor]], weights: list[torch.Tensor],
                 items: torch.Tensor, bias: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sum_m F_m[items] @ W_m (+ bias)`` for the distinct ``items`` only, and the inverse index.

    Returns ``(projected rows, inverse, row items)`` so that ``projected[inverse]`` is the row of
    each requested item and ``row items`` the item of each projected row. A batch touches each
    distinct item once, so this costs O(distinct x dim x out) instead of O(batch x dim x out);
    when nearly the whole catalog is in the batch, the whole matrix is projected without gathering
    (the gather would cost more than the rows it saves).
    Rows are gathered with ``gather_rows`` (``index_select``, about twice as fast as ``[]`` on
    CPU; a fine-tuned matrix's gradient goes to one buffer kept across steps) and each modality's
    product is accumulated in place by ``addmm``, the bias added to the distinct rows.
    """
    n_items = slots[0][0].shape[0]
    unique, inverse = torch.unique(items, return_inverse=True)
    whole = len(unique) * 10 > n_items * 9
    total = None
    for (feat, _), w in zip(slots, weights):
        rows = feat if whole else gather_rows(feat, unique)
        if total is not None:
            total = total.addmm(rows, w)
        elif bias is not None:
            total = torch.addmm(bias, rows, w)
        else:
            total = rows @ w
    assert total is not None
    if whole:
        return total, unique[inverse], torch.arange(n_items, device=items.device)
    return total, inverse, unique
