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

On CPU, long rows take the top of the row through block maxima first: split the row into ``b``
strided blocks, take each block's maximum (one vectorised pass, several times cheaper than
``torch.topk`` over the row), and only the ``m`` blocks with the largest maxima can hold the top-``m``
values (any item outside them is at most the m-th largest block maximum, which those ``m`` blocks
each reach). ``torch.topk`` then runs over ``m * b`` candidates. The values are exact even under
ties; rows with ties at the k-th value are resolved over the full row as above.

NaN scores rank above everything (torch's convention; the order among NaNs is unspecified); the
evaluator rejects them.
"""

from __future__ import annotations

import torch


def topk_deterministic(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (values, indices) per row, by descending score then ascending item index."""
    n_rows, n_items = scores.shape
    k = min(int(k), n_items)
    if k <= 0:
        empty = scores.new_empty((n_rows, 0))
        return empty, empty.long()
    resolved = False  # rows resolved at the boundary come back in item order, not by value
    if k < n_items:
        values, indices = _topk_values(scores, k + 1)
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


BLOCK = 8  # items per block of the block-maxima pass (measured best on CPU for 10^4-10^5 items)


def _topk_values(x: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact top-``m`` values per row (descending) and distinct items holding them; which of
    several tied items is returned is unspecified."""
    n_rows, n = x.shape
    n_blocks = n // BLOCK
    if x.device.type != "cpu" or n_blocks < 4 * m or n_rows == 0:
        return torch.topk(x, m, dim=1)
    x = x.contiguous()
    used = n_blocks * BLOCK
    # Block j holds items j, j + n_blocks, j + 2 n_blocks, ...: a max over BLOCK contiguous rows.
    maxima = x[:, :used].view(n_rows, BLOCK, n_blocks).amax(dim=1)
    blocks = _topk_values(maxima, m)[1]
    offsets = torch.arange(BLOCK, device=x.device) * n_blocks
    candidates = (blocks.unsqueeze(2) + offsets).view(n_rows, m * BLOCK)
    if used < n:  # the last few items belong to no block: always candidates
        tail = torch.arange(used, n, device=x.device).expand(n_rows, -1)
        candidates = torch.cat([candidates, tail], dim=1)
    values, pos = torch.topk(torch.gather(x, 1, candidates), m, dim=1)
    return values, torch.gather(candidates, 1, pos)
