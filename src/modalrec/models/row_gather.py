"""Rows of a large trainable table, with the gradient added into one buffer kept for the table.

``table.index_select(0, rows)`` backpropagates by allocating a zero matrix the size of the whole
table and adding the rows' gradients into it. For the fine-tuned feature matrices of BM3 and
FREEDOM (MovieLens-100K: 1,682 x 1,280 image values) a profile of a one-thread BM3 epoch put that
zero fill at 4.7 ms a step, 188 ms an epoch (24 ms with a kept buffer): the allocator hands back
fresh pages every step, and page faults on a virtual machine cost more than the writes. Here the
table keeps one gradient buffer; each backward pass zeroes it (if the optimiser has cleared the
table's gradient) and adds the rows into it.
The buffers outlive the steps, so a training loop calls ``release_gradient_buffers`` when done.
"""

from __future__ import annotations

import torch
from torch.utils.weak import WeakIdKeyDictionary

_BUFFERS = WeakIdKeyDictionary()  # table -> its gradient buffer, dropped with the table


class _GatherRows(torch.autograd.Function):
    """``table[rows]``; the backward writes ``table.grad`` itself and hands autograd nothing."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.table = table
        ctx.save_for_backward(rows)
        return table.index_select(0, rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None]:  # type: ignore[override]
        (rows,) = ctx.saved_tensors
        table: torch.Tensor = ctx.table
        if table.grad is None:
            buffer = _BUFFERS.get(table)
            if buffer is None or buffer.shape != table.shape or buffer.dtype != table.dtype \
                    or buffer.device != table.device:
                buffer = torch.zeros_like(table, memory_format=torch.contiguous_format)
                _BUFFERS[table] = buffer
            else:
                buffer.zero_()
            table.grad = buffer
        table.grad.index_add_(0, rows, grad.to(table.dtype))
        return None, None


def gather_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``table.index_select(0, rows)``; for a trainable leaf table (a parameter), its gradient is
    accumulated into a buffer kept across steps instead of a freshly allocated matrix.

    Not for double backward (``create_graph=True``): the table's gradient is written directly.
    """
    if not (table.requires_grad and table.is_leaf and torch.is_grad_enabled()):
        return table.index_select(0, rows)
    return _GatherRows.apply(table, rows)


def release_gradient_buffers() -> None:
    """Drop every table's kept gradient buffer (the memory of one more copy of each table)."""
    _BUFFERS.clear()
