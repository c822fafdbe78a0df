"""The BPR objective on gathered embedding rows, with its gradient computed in one compiled pass.

Every BPR-trained model ends its step the same way: gather the batch's user, positive and negative
rows, score them by dot products, take ``mean softplus(s_neg - s_pos)`` and add an L2 penalty on
(possibly other) rows of the same batch. Through autograd this is some twenty small kernels and
their backward passes (the unsquared norm's backward alone is three passes over each gathered
matrix), which is most of a BPR-MF step on CPU. ``bpr_objective`` computes the loss and the
gradient of every table in two passes over the batch instead (numba, in batch order, so
deterministic), and hands autograd the dense gradients; elsewhere (GPU, float64, gradients not
wanted) it runs the same formula in torch operations, which the tests use as the reference.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """``-mean log sigmoid(s_pos - s_neg)``, numerically stable."""
    return F.softplus(neg_scores - pos_scores).mean()


def embedding_penalty(style: str, *tensors: torch.Tensor) -> torch.Tensor:
    """The L2 penalty on batch embeddings: 'norm' is the sum of the matrices' unsquared Frobenius
    norms over the batch size (MMRec's and RecBole's EmbLoss), 'squared' half their squared norms
    over the batch size (Rendle's ``lambda/2 ||theta||^2`` per sample)."""
    batch = tensors[0].shape[0]
    if style == "norm":
        return sum(torch.linalg.vector_norm(t) for t in tensors) / batch
    return sum(t.pow(2).sum() for t in tensors) / (2 * batch)


def bpr_objective(user_table: torch.Tensor, item_table: torch.Tensor, users: torch.Tensor,
                  pos: torch.Tensor, neg: torch.Tensor, reg_weight: float, reg_style: str = "norm",
                  reg_user: torch.Tensor | None = None, reg_item: torch.Tensor | None = None) -> torch.Tensor:
    """``bpr_loss(u . i, u . j) + reg_weight * embedding_penalty(reg_style, ru, ri, rj)`` where
    ``u, i, j`` are rows ``users, pos, neg`` of the user and item tables and ``ru, ri, rj`` the same
    rows of ``reg_user`` and ``reg_item`` (default: the scoring tables themselves; each may have its
    own width)."""
    if reg_style not in ("norm", "squared"):
        raise ValueError(f"reg_style must be 'norm' or 'squared', got {reg_style!r}")
    reg_user = user_table if reg_user is None else reg_user
    reg_item = item_table if reg_item is None else reg_item
    tables = (user_table, item_table, reg_user, reg_item)
    if _fusable(tables, users, pos, neg):
        return _FusedBPR.apply(*tables, users, pos, neg, float(reg_weight), reg_style == "squared")
    u, i, j = user_table.index_select(0, users), item_table.index_select(0, pos), item_table.index_select(0, neg)
    ranking = bpr_loss((u * i).sum(1), (u * j).sum(1))
    ru, ri, rj = reg_user.index_select(0, users), reg_item.index_select(0, pos), reg_item.index_select(0, neg)
    return ranking + reg_weight * embedding_penalty(reg_style, ru, ri, rj)


def _fusable(tables: tuple[torch.Tensor, ...], *indices: torch.Tensor) -> bool:
    return (torch.is_grad_enabled() and all(t.requires_grad for t in tables)
            and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.dim() == 2 for t in tables)
            and tables[0].shape[1] == tables[1].shape[1]
            and all(i.device.type == "cpu" and i.dim() == 1 and len(i) == len(indices[0]) for i in indices)
            and len(indices[0]) > 0)


class _FusedBPR(torch.autograd.Function):
    """Forward computes the loss and every table's gradient; backward scales the saved gradients."""

    @staticmethod
    def forward(ctx, user_table, item_table, reg_user, reg_item, users, pos, neg, reg_weight, squared):  # type: ignore[override]
        inputs = (user_table, item_table, reg_user, reg_item)
        tables = [t.detach().contiguous() for t in inputs]
        # A table given twice (BPR-MF scores and penalises the same rows) gets one gradient
        # buffer, returned once (for its first position) to autograd.
        buffers: dict[int, torch.Tensor] = {}
        grads, owned = [], []
        for table, detached in zip(inputs, tables):
            first = id(table) not in buffers
            if first:
                buffers[id(table)] = torch.zeros_like(detached)
            grads.append(buffers[id(table)])
            owned.append(grads[-1] if first else None)
        index = [torch.as_tensor(i, dtype=torch.int64).contiguous().numpy() for i in (users, pos, neg)]
        shared = reg_user is user_table and reg_item is item_table
        loss = _objective(*(t.numpy() for t in tables), *index, reg_weight, squared, shared,
                          *(g.numpy() for g in grads))
        ctx.grads = owned
        return torch.tensor(loss, dtype=user_table.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        scaled = [None if g is None else (g if bool(grad == 1) else g * grad) for g in ctx.grads]
        return (*scaled, None, None, None, None, None)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _objective(user, item, reg_user, reg_item, users, pos, neg, reg_weight, squared, shared,
               g_user, g_item, g_reg_user, g_reg_item):  # pragma: no cover - compiled
    """Loss of the batch; adds d loss / d table into the ``g_`` arrays (which may alias).
    ``shared``: the penalised tables are the scoring tables (and their gradients one buffer each).

    Dot products and each row's sum of squares are float32 sums in any order (vectorised), as
    torch's are; the batch totals are float64."""
    batch = len(users)
    coef = np.empty(batch, dtype=np.float32)
    ranking = 0.0
    sq_user = sq_pos = sq_neg = 0.0
    for b in range(batch):
        ur, pr, nr = user[users[b]], item[pos[b]], item[neg[b]]
        s_pos = s_neg = np.float32(0)
        for k in range(len(ur)):
            s_pos += ur[k] * pr[k]
            s_neg += ur[k] * nr[k]
        x = float(s_neg) - float(s_pos)
        e = math.exp(-abs(x))
        ranking += max(x, 0.0) + math.log1p(e)  # softplus(x)
        coef[b] = (1.0 if x >= 0 else e) / (1.0 + e) / batch  # sigmoid(x) = d loss / d s_neg
        ru, rp, rn = reg_user[users[b]], reg_item[pos[b]], reg_item[neg[b]]
        row_user = row_pos = row_neg = np.float32(0)
        for k in range(len(ru)):
            row_user += ru[k] * ru[k]
        for k in range(len(rp)):
            row_pos += rp[k] * rp[k]
            row_neg += rn[k] * rn[k]
        sq_user += row_user
        sq_pos += row_pos
        sq_neg += row_neg
    penalty = 0.0
    scale = np.zeros(3, dtype=np.float32)  # d penalty / d row = scale * row
    for m, squares in enumerate((sq_user, sq_pos, sq_neg)):
        if squared:
            penalty += squares / (2 * batch)
            scale[m] = reg_weight / batch
        elif squares > 0:
            penalty += math.sqrt(squares) / batch
            scale[m] = reg_weight / (batch * math.sqrt(squares))
    s_user, s_pos_row, s_neg_row = scale[0], scale[1], scale[2]
    for b in range(batch):
        c = coef[b]
        ur, pr, nr = user[users[b]], item[pos[b]], item[neg[b]]
        gu, gp, gn = g_user[users[b]], g_item[pos[b]], g_item[neg[b]]
        if shared:  # one pass: ranking and penalty gradients of the same rows
            for k in range(len(ur)):
                uk, pk, nk = ur[k], pr[k], nr[k]
                gu[k] += c * (nk - pk) + s_user * uk
                gp[k] += s_pos_row * pk - c * uk
                gn[k] += s_neg_row * nk + c * uk
            continue
        for k in range(len(ur)):
            uk = ur[k]
            gu[k] += c * (nr[k] - pr[k])
            gp[k] -= c * uk
            gn[k] += c * uk
        ru, rp, rn = reg_user[users[b]], reg_item[pos[b]], reg_item[neg[b]]
        gu, gp, gn = g_reg_user[users[b]], g_reg_item[pos[b]], g_reg_item[neg[b]]
        for k in range(len(ru)):
            gu[k] += s_user * ru[k]
        for k in range(len(rp)):
            gp[k] += s_pos_row * rp[k]
            gn[k] += s_neg_row * rn[k]
    return ranking / batch + reg_weight * penalty
