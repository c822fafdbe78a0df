"""What a representation knows: neighbours, agreement between modalities, agreement with behaviour.

- ``topk_neighbours``: cosine nearest neighbours, computed a block of rows at a time (never an
  n x n matrix), ties broken towards the lower item index so results are reproducible.
- ``linear_cka``: linear centred kernel alignment (Kornblith et al., ICML 2019) between two
  representations of the same items: 1 for identical geometry, invariant to rotations and
  isotropic scaling, so it compares spaces of different sizes.
- ``mutual_knn_overlap``: how many of an item's k content neighbours are also among its k
  collaborative neighbours (cosine between the items' columns of the training matrix), the
  mutual-kNN alignment of Huh et al. (ICML 2024). Chance level is k / (m - 1) for m items, so a
  content space that predicts co-consumption sits clearly above it.
- ``label_similarity_gap``: mean cosine of item pairs sharing a label (genre) minus pairs sharing
  none; positive when the space groups items by that label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from modalrec.data.interactions import Interactions
from modalrec.errors import ConfigError
from modalrec.features.features import Features

CHUNK_ELEMENTS = 20_000_000  # similarity entries held at once (80 MB of float32)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def _chunk_rows(n_columns: int, chunk_elements: int) -> int:
    return max(1, min(4096, chunk_elements // max(1, n_columns)))


def _topk_block(scores: np.ndarray, rows: np.ndarray, k: int, candidates: np.ndarray | None,
                exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns of each score row, best first, ties to the lower index; -1 where none left."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    if candidates is not None:
        scores[:, ~candidates] = -np.inf
    if exclude_self:
        scores[np.arange(len(rows)), rows] = -np.inf
    n = scores.shape[1]
    k_eff = min(k, n)
    kth = -np.partition(-scores, k_eff - 1, axis=1)[:, k_eff - 1]
    above = scores > kth[:, None]
    equal = scores == kth[:, None]
    room = k_eff - above.sum(axis=1)
    chosen = above | (equal & (np.cumsum(equal, axis=1) <= room[:, None]))
    _, columns = np.nonzero(chosen)
    index = columns.reshape(len(rows), k_eff)
    sims = np.take_along_axis(scores, index, axis=1)
    order = np.argsort(-sims, axis=1, kind="stable")
    index, sims = np.take_along_axis(index, order, axis=1), np.take_along_axis(sims, order, axis=1)
    index[~np.isfinite(sims)] = -1
    if k_eff < k:
        index = np.hstack([index, np.full((len(rows), k - k_eff), -1)])
        sims = np.hstack([sims, np.full((len(rows), k - k_eff), -np.inf, dtype=np.float32)])
    return index.astype(np.int64), sims


def topk_neighbours(matrix: np.ndarray, k: int, *, rows: np.ndarray | None = None,
                    candidates: np.ndarray | None = None, chunk_elements: int = CHUNK_ELEMENTS
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k neighbours of ``rows`` (default: all) among ``candidates`` (a bool mask), self
    excluded: ``(indices, similarities)``, each ``(len(rows), k)``, -1 / -inf where fewer exist."""
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}", where="-k")
    unit = _unit_rows(matrix)
    rows = np.arange(len(unit)) if rows is None else np.asarray(rows, dtype=np.int64)
    step = _chunk_rows(len(unit), chunk_elements)
    parts = [_topk_block(unit[rows[s:s + step]] @ unit.T, rows[s:s + step], k, candidates, True)
             for s in range(0, len(rows), step)]
    if not parts:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
    return np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])


def collaborative_neighbours(train: Interactions, k: int, *, rows: np.ndarray | None = None,
                             candidates: np.ndarray | None = None, chunk_elements: int = CHUNK_ELEMENTS
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Item-item cosine top-k on the items' columns of the (binary) training matrix."""
    items = train.csr().T.tocsr().astype(np.float32)
    norms = np.sqrt(np.asarray(items.multiply(items).sum(axis=1)).ravel())
    items = sp.diags(1.0 / np.where(norms > 0, norms, 1.0)).dot(items).tocsr()
    cold = norms == 0
    candidates = ~cold if candidates is None else (np.asarray(candidates, dtype=bool) & ~cold)
    rows = np.arange(items.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    step = _chunk_rows(items.shape[0], chunk_elements)
    transposed = items.T.tocsc()
    parts = [_topk_block((items[rows[s:s + step]] @ transposed).toarray(), rows[s:s + step], k, candidates, True)
             for s in range(0, len(rows), step)]
    if not parts:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
    return np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])


def neighbour_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, how many valid (>= 0) indices the two neighbour lists share."""
    same = (a[:, :, None] == b[:, None, :]) & (a[:, :, None] >= 0)
    return same.any(axis=2).sum(axis=1)


@dataclass
class KnnOverlap:
    """Mean overlap@k and Jaccard of content and collaborative neighbourhoods, and chance level."""

    k: int
    n_items: int
    overlap: float
    jaccard: float
    chance: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mutual_knn_overlap(matrix: np.ndarray, train: Interactions, k: int = 10, mask: np.ndarray | None = None,
                       chunk_elements: int = CHUNK_ELEMENTS) -> KnnOverlap:
    """Compare content and co-consumption neighbourhoods over items that have both content and
    training interactions (both searches restricted to that same set, so chance is k/(m-1))."""
    if matrix.shape[0] != train.n_items:
        raise ConfigError(f"features have {matrix.shape[0]} rows but the interactions {train.n_items} items")
    common = train.item_counts() > 0
    if mask is not None:
        common &= np.asarray(mask, dtype=bool)
    items = np.flatnonzero(common)
    m = len(items)
    if m <= k:
        raise ConfigError(f"only {m} items have both content and training interactions; need more than k={k}",
                          where="-k", hint="choose a smaller k")
    content, _ = topk_neighbours(matrix, k, rows=items, candidates=common, chunk_elements=chunk_elements)
    behaviour, _ = collaborative_neighbours(train, k, rows=items, candidates=common, chunk_elements=chunk_elements)
    shared = neighbour_overlap(content, behaviour)
    sizes_a, sizes_b = (content >= 0).sum(axis=1), (behaviour >= 0).sum(axis=1)
    union = np.maximum(sizes_a + sizes_b - shared, 1)
    return KnnOverlap(k=k, n_items=m, overlap=float(np.mean(shared / k)), jaccard=float(np.mean(shared / union)),
                      chance=k / (m - 1))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA = ||Yc' Xc||_F^2 / (||Xc' Xc||_F ||Yc' Yc||_F) with column-centred Xc, Yc."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"CKA needs the same items in both: {x.shape[0]} vs {y.shape[0]} rows")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    denominator = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    if denominator == 0:
        return float("nan")
    return float(np.linalg.norm(y.T @ x) ** 2 / denominator)


def cka_matrix(features: Mapping[str, Features]) -> dict[str, dict[str, float]]:
    """Linear CKA between every pair of modalities, over items with content in both."""
    names = list(features)
    table: dict[str, dict[str, float]] = {a: {} for a in names}
    for i, a in enumerate(names):
        for b in names[i:]:
            both = features[a].mask & features[b].mask
            value = linear_cka(features[a].matrix[both], features[b].matrix[both]) if both.sum() > 1 else float("nan")
            table[a][b] = table[b][a] = value
    return table


def label_similarity_gap(matrix: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None,
                         chunk_elements: int = CHUNK_ELEMENTS) -> dict[str, float]:
    """Mean cosine of distinct item pairs sharing at least one label minus pairs sharing none.

    ``labels`` is an ``(n_items, n_labels)`` 0/1 matrix; items without content (``mask``) or without
    any label are left out.
    """
    labels = np.asarray(labels, dtype=np.float32)
    keep = labels.sum(axis=1) > 0
    if mask is not None:
        keep &= np.asarray(mask, dtype=bool)
    unit, labels = _unit_rows(np.asarray(matrix)[keep]), labels[keep]
    sums = {"same": 0.0, "cross": 0.0}
    counts = {"same": 0, "cross": 0}
    step = _chunk_rows(len(unit), chunk_elements)
    for s in range(0, len(unit), step):
        sims = unit[s:s + step] @ unit.T
        same = (labels[s:s + step] @ labels.T) > 0
        distinct = np.ones_like(same)
        distinct[np.arange(sims.shape[0]), np.arange(s, s + sims.shape[0])] = False
        for key, selected in (("same", same & distinct), ("cross", ~same & distinct)):
            sums[key] += float(sims[selected].sum(dtype=np.float64))
            counts[key] += int(selected.sum())
    same_mean = sums["same"] / counts["same"] if counts["same"] else float("nan")
    cross_mean = sums["cross"] / counts["cross"] if counts["cross"] else float("nan")
    return {"same": same_mean, "cross": cross_mean, "gap": same_mean - cross_mean,
            "same_pairs": counts["same"] // 2, "cross_pairs": counts["cross"] // 2, "n_items": int(keep.sum())}


def inspect(features: Mapping[str, Features], *, items: Sequence[int] = (), k: int = 10,
            train: Interactions | None = None) -> dict[str, Any]:
    """Everything ``modalrec features inspect`` shows: neighbours of ``items`` under each
    representation (and under co-consumption), CKA between modalities, overlap with behaviour."""
    rows = np.asarray(list(items), dtype=np.int64)
    report: dict[str, Any] = {"k": k, "neighbours": {}, "cka": cka_matrix(features), "overlap": {}}
    for name, feats in features.items():
        if len(rows):
            index, sims = topk_neighbours(feats.matrix, k, rows=rows, candidates=feats.mask)
            report["neighbours"][name] = (index, sims)
        if train is not None:
            report["overlap"][name] = mutual_knn_overlap(feats.matrix, train, k, feats.mask).as_dict()
    if train is not None and len(rows):
        report["neighbours"]["co-consumption"] = collaborative_neighbours(train, k, rows=rows)
    return report
