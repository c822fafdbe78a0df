"""Deterministic top-k over score rows.

Tie rule (documented, relied on everywhere): among equal scores the **lower item index ranks
first**. ``torch.topk`` gives no such guarantee, so rows whose k-th score is tied with an item
outside the top-k are re-ranked with a stable sort, and ties inside the top-k are reordered.
"""

from __future__ import annotations

import torch


def topk_deterministic(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (values, indices) per row, by descending score then ascending item index."""
    n_items = scores.shape[1]
    k = min(k, n_items)
    if k == 0:
        empty = scores.new_empty((scores.shape[0], 0))
        return empty, empty.long()
    values, indices = torch.topk(scores, k, dim=1)
    kth = values[:, -1:]
    # Rows where an item outside the top-k ties the k-th value: the choice among them is arbitrary.
    boundary = (scores >= kth).sum(dim=1) > k
    if boundary.any():
        rows = boundary.nonzero().squeeze(1)
        sub_values, sub_indices = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        values[rows] = sub_values[:, :k]
        indices[rows] = sub_indices[:, :k]
    # Within the top-k, order equal values by item index: sort by index, then stable by value.
    by_index, order = torch.sort(indices, dim=1)
    values = torch.gather(values, 1, order)
    values, order = torch.sort(values, dim=1, descending=True, stable=True)
    return values, torch.gather(by_index, 1, order)
