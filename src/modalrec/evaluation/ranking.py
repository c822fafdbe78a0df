"""Deterministic top-k over score rows.

Tie rule (documented, relied on everywhere): among equal scores the **lower item index ranks
first**. ``torch.topk`` gives no such guarantee, so:

- one extra candidate is taken (``topk(k + 1)``): the k-th value is tied with an item outside the
  top-k exactly when the (k+1)-th largest value equals the k-th. This replaces a full pass over
  the row (``scores >= kth``) with a negligible extra slot;
- only those boundary rows are resolved again: every item strictly above the k-th value, plus the
  lowest-index items equal to it (a compare and a cumulative count, no sort of the row);
- ties inside the top-k are reordered by item index (two tiny sorts of ``(rows, k)``, skipped
  when no two of the top-k values are equal).

On CPU, rows of float scores go to ``chunked_topk`` (block maxima bound the k-th score, then a
compiled insertion of the few items reaching it), which applies the same rule directly; the steps
above serve other devices and the rows it leaves (a NaN, fewer than k finite scores).

NaN scores rank above everything (torch's convention; the order among NaNs is unspecified); the
evaluator rejects them.
"""

from __future__ import annotations

import torch

from modalrec.evaluation.chunked_topk import MIN_ITEMS, chunked_topk


def topk_deterministic(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (values, indices) per row, by descending score then ascending item index."""
    n_rows, n_items = scores.shape
    k = min(int(k), n_items)
    if k <= 0:
        empty = scores.new_empty((n_rows, 0))
        return empty, empty.long()
    if scores.device.type == "cpu" and scores.is_floating_point() and k < n_items and n_items >= MIN_ITEMS:
        fast = chunked_topk(scores, k)
        if fast is not None:
            return fast
    resolved = False  # rows resolved at the boundary come back in item order, not by value
    if k < n_items:
        values, indices = torch.topk(scores, k + 1, dim=1)
        boundary = values[:, k] == values[:, k - 1]
        values, indices = values[:, :k], indices[:, :k]
        resolved = bool(boundary.any())
        if resolved:
            values, indices = values.clone(), indices.clone()
            rows = boundary.nonzero().squeeze(1)
            values[rows], indices[rows] = _resolve_boundary(scores[rows], values[rows, k - 1 : k], k)
    else:
        values, indices = torch.topk(scores, k, dim=1)
    if not resolved and (k == 1 or not bool((values[:, 1:] == values[:, :-1]).any())):
        return values, indices  # sorted by value with no ties: the order is already unique
    # Within the top-k, order equal values by item index: sort by index, then stable by value.
    by_index, order = torch.sort(indices, dim=1)
    values = torch.gather(values, 1, order)
    values, order = torch.sort(values, dim=1, descending=True, stable=True)
    return values, torch.gather(by_index, 1, order)


def _resolve_boundary(sub: torch.Tensor, kth: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose k-th value ties an item outside the top-k: every item above the k-th value and
    the lowest-index items equal to it, exactly ``k`` per row (in item order)."""
    above = ~(sub <= kth)  # NaN counts as above, as in torch.topk
    tied = sub == kth
    need = k - above.sum(dim=1, keepdim=True)
    keep = above | (tied & (tied.cumsum(dim=1) <= need))
    indices = keep.nonzero()[:, 1].view(-1, k)
    return torch.gather(sub, 1, indices), indices
