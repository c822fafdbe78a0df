"""Top-k of CPU score rows at about the cost of reading them, with the evaluator's tie rule built in.

``torch.topk`` on CPU costs several microseconds per row whatever ``k``: on a full-ranking pass it
costs as much as the scoring product itself. Here a compiled kernel handles one row at a time while
it sits in cache:

1. the maxima of ``CHUNK``-item blocks (block ``c`` holds items ``c, c + n_blocks, ...``: a
   vectorised loop over the row);
2. a lower bound of the row's k-th largest score: any value that at least k block maxima reach
   (k blocks each hold an item that high). The smallest of k group maxima is one; a few bisection
   steps, each a vectorised count over the maxima, raise it towards the k-th largest block maximum
   (keeping the maxima sorted instead cost more than the rest of the row);
3. only the blocks reaching that bound, and among their items only those reaching it (a little
   more than ``k`` per row), are inserted into a sorted top-k.

An item displaces another when its score is higher, or equal and its index lower, so among equal
scores the lower item index ranks first: ``ranking.topk_deterministic``'s rule, with no tie
resolution afterwards.

``factor_topk`` serves factorised models (score = user . item): it computes the scores of a few
users at a time into a small row-major block (BLAS through numba), masks their seen items and
ranks them while the block is still in cache, so no (users, items) matrix is ever written out.
Blocks of up to 512 users or 8 MiB of scores run faster than 128-user blocks where the catalog is
small (MovieLens-100K, one thread: a BPR-MF pass 6.04 -> 5.70 ms, VBPR's 14.47 -> 14.00 ms).
``gram_topk`` serves item-item neighbours (scores = x . x): each pair's product is computed once,
in tiles that serve their own rows and, through their columns, the earlier rows (on MovieLens-100K
a one-thread LATTICE scoring pass, which builds two such graphs, went from 36.6 to 33.1 ms).
``expand_group_topk`` turns the neighbours of distinct rows into those of every row, so identical
rows tie exactly.

Rows are split over ``torch.get_num_threads()`` Python threads (the kernels release the GIL), with
BLAS held to one thread inside each, so the thread setting that governs torch governs this too.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
import torch
from threadpoolctl import ThreadpoolController

CHUNK = 16  # items per block maximum
BISECTIONS = 6  # steps tightening a row's bound: candidates near k, at a few vector passes each
MIN_ITEMS = 4 * CHUNK  # shorter rows: torch.topk is as fast and needs no compilation
FACTOR_ROWS = (128, 512)  # users per BLAS call in factor_topk: as many as fill FACTOR_BLOCK_BYTES
FACTOR_BLOCK_BYTES = 8 << 20  # of scores: larger products run faster, and 8 MiB still stays in cache
GRAM_ROWS = 128  # rows per tile in gram_topk
SCORE_LIMIT = 1e30  # factor norms multiplying to more: factor_topk leaves the scores to the caller

_pool: ThreadPoolExecutor | None = None
_blas: ThreadpoolController | None = None


@numba.njit(cache=True, nogil=True)
def _offer(values: np.ndarray, indices: np.ndarray, v: float, i: int) -> None:
    """Insert item ``i`` of score ``v`` into a row's sorted top-k if it belongs there."""
    k = len(values)
    if not (v > values[k - 1] or (v == values[k - 1] and i < indices[k - 1])):
        return
    j = k - 1
    while j > 0 and (v > values[j - 1] or (v == values[j - 1] and i < indices[j - 1])):
        values[j] = values[j - 1]
        indices[j] = indices[j - 1]
        j -= 1
    values[j] = v
    indices[j] = i


@numba.njit(cache=True, nogil=True)
def _row_topk(row: np.ndarray, maxima: np.ndarray, values: np.ndarray, indices: np.ndarray) -> None:
    """Fill ``values``/``indices`` (k,) with the top-k of a contiguous NaN-free row, descending,
    ties by index; -inf scores fill slots only when fewer than k items are above it."""
    n_items, n_blocks, k = len(row), len(maxima), len(values)
    for c in range(n_blocks):  # column by column: independent chains the compiler interleaves
        m = row[c]
        for t in range(1, CHUNK):
            v = row[c + t * n_blocks]
            m = v if v > m else m
        maxima[c] = m
    # A bound b is valid when at least k block maxima reach it (each such block holds an item at
    # least as high, so the k-th score is >= b). The smallest of k group maxima is one (k groups of
    # consecutive blocks); bisection between it and the largest maximum tightens it towards the
    # k-th largest block maximum, counting with a vectorised loop instead of keeping them sorted.
    bound = -np.inf
    if n_blocks >= k:
        size = n_blocks // k
        bound = np.inf
        for j in range(k):
            top = maxima[j * size]
            for c in range(j * size + 1, (j + 1) * size):
                top = maxima[c] if maxima[c] > top else top
            bound = top if top < bound else bound
        high = maxima.max()
        for _ in range(BISECTIONS):
            if not (-np.inf < bound < high < np.inf):
                break
            middle = bound + (high - bound) / 2
            reach = 0
            for c in range(n_blocks):
                reach += maxima[c] >= middle
            if reach >= k:
                bound = middle
            else:
                high = middle
    values[:] = -np.inf
    indices[:] = n_items  # above every index: an empty slot yields to an equal score
    for c in range(n_blocks):
        if maxima[c] >= bound:
            for t in range(CHUNK):
                i = c + t * n_blocks
                if row[i] >= bound:
                    _offer(values, indices, row[i], i)
    for i in range(n_blocks * CHUNK, n_items):
        if row[i] >= bound:
            _offer(values, indices, row[i], i)


@numba.njit(cache=True, nogil=True)
def _topk_rows(scores: np.ndarray, values: np.ndarray, indices: np.ndarray) -> bool:
    """``_row_topk`` for every row of a C-contiguous matrix; True (and no result) on a NaN."""
    for r in range(scores.shape[0]):
        row, nan = scores[r], False
        for i in range(len(row)):  # no early exit: a vectorised pass
            nan |= row[i] != row[i]
        if nan:
            return True
    maxima = np.empty(scores.shape[1] // CHUNK, dtype=scores.dtype)
    for r in range(scores.shape[0]):
        _row_topk(scores[r], maxima, values[r], indices[r])
    return False


@numba.njit(cache=True, nogil=True)
def _factor_rows(users: np.ndarray, items_t: np.ndarray, rows: np.ndarray, mask_ptr: np.ndarray,
                 mask_items: np.ndarray, block_rows: int, values: np.ndarray, indices: np.ndarray) -> None:
    """Top-k of ``users @ items_t``, row ``r``'s items ``mask_items[mask_ptr[u]:mask_ptr[u + 1]]``
    (``u = rows[r]``) at -inf, ``block_rows`` users per BLAS call."""
    n_users, n_items = users.shape[0], items_t.shape[1]
    block = np.empty((block_rows, n_items), dtype=users.dtype)
    maxima = np.empty(n_items // CHUNK, dtype=users.dtype)
    for lo in range(0, n_users, block_rows):
        n_block = min(block_rows, n_users - lo)
        np.dot(users[lo : lo + n_block], items_t, block[:n_block])
        for r in range(n_block):
            row = block[r]
            u = rows[lo + r]
            for p in range(mask_ptr[u], mask_ptr[u + 1]):
                row[mask_items[p]] = -np.inf
            _row_topk(row, maxima, values[lo + r], indices[lo + r])


@numba.njit(cache=True, nogil=True)
def _gram_blocks(x: np.ndarray, exclude_self: bool, values: np.ndarray, indices: np.ndarray) -> None:
    """``gram_topk``'s blocks in order: each block's rows against every item up to its own last
    row, ranked row-wise, then offered column-wise to the earlier rows they also score."""
    m, k = x.shape[0], values.shape[1]
    tile = np.empty(GRAM_ROWS * m, dtype=x.dtype)
    maxima = np.empty(m // CHUNK, dtype=x.dtype)
    bounds = np.empty(m, dtype=x.dtype)  # each row's k-th score so far, contiguous for the scan
    for b in range(-(-m // GRAM_ROWS)):
        lo, hi = b * GRAM_ROWS, min(m, (b + 1) * GRAM_ROWS)
        scores = tile[: (hi - lo) * hi].reshape((hi - lo, hi))
        np.dot(x[lo:hi], x[:hi].T, scores)
        for r in range(hi - lo):  # rows of this block: everything up to column hi, fresh
            row = scores[r]
            if exclude_self:
                row[lo + r] = -np.inf
            _row_topk(row, maxima[: hi // CHUNK], values[lo + r], indices[lo + r])
            bounds[lo + r] = values[lo + r, k - 1]
        # Earlier rows: column lo + r of theirs is this block's row r. Their candidates arrive in
        # ascending item order after every lower item, so an equal score never displaces one.
        for r in range(hi - lo):
            row = scores[r]
            for c0 in range(0, lo, CHUNK):
                c1 = min(lo, c0 + CHUNK)
                hit = False
                for c in range(c0, c1):  # vectorised test, offers only where it hits
                    hit |= row[c] > bounds[c]
                if hit:
                    for c in range(c0, c1):
                        if row[c] > bounds[c]:
                            _offer(values[c], indices[c], row[c], lo + r)
                            bounds[c] = values[c, k - 1]


def gram_topk(x: torch.Tensor, k: int, include_self: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (values, indices) of every row of ``x @ x.T`` (float32, CPU; ``x`` must pass
    ``factors_are_safe``), computing each pair's product once: ``GRAM_ROWS``-row blocks are
    multiplied only with the items up to their own last row, and each tile serves its rows directly
    and the earlier rows through its columns. About half ``factor_topk``'s arithmetic for item-item
    neighbours, but serial: the column offers reach rows other blocks own, so with several threads
    ``factor_topk``'s row split is faster. Without ``include_self`` the diagonal is excluded."""
    x = x.detach().float().contiguous()
    m = len(x)
    candidates = m if include_self else m - 1
    if not 1 <= k <= candidates:
        raise ValueError(f"k must be in [1, {candidates}] (the candidates of a row), got {k}")
    values = np.empty((m, k), dtype=np.float32)
    indices = np.empty((m, k), dtype=np.int64)
    with _blas_controller().limit(limits=1, user_api="blas"):
        _gram_blocks(x.numpy(), not include_self, values, indices)
    return torch.from_numpy(values), torch.from_numpy(indices)


@numba.njit(cache=True, nogil=True)
def _expand_groups(group_values: np.ndarray, group_cols: np.ndarray, group_of: np.ndarray,
                   member_ptr: np.ndarray, members: np.ndarray, exclude_self: bool,
                   values: np.ndarray, indices: np.ndarray) -> None:
    """Each row's top-k over the members of its group's ranked groups, each member at its group's
    score (``expand_group_topk``)."""
    for r in range(len(group_of)):
        values[r] = -np.inf
        indices[r] = len(group_of)
        g = group_of[r]
        for j in range(group_cols.shape[1]):
            h, score = group_cols[g, j], group_values[g, j]
            for p in range(member_ptr[h], member_ptr[h + 1]):
                if not (exclude_self and members[p] == r):
                    _offer(values[r], indices[r], score, members[p])


def expand_group_topk(group_values: torch.Tensor, group_cols: torch.Tensor, group_of: np.ndarray, k: int,
                      include_self: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-level top-``k`` (values, indices) of ``x @ x.T`` from the top-k of its distinct rows.

    ``group_of[r]`` is row ``r``'s group of identical rows, groups numbered by their first row, and
    ``group_values``/``group_cols`` each group's ranked neighbour groups (self included, ties to the
    lower group). Every member of a ranked group gets that group's score, ties go to the lower row,
    and without ``include_self`` only the row itself is skipped, not its copies. Exact when the
    groups hold ``k`` ranked neighbours (``k + 1`` without ``include_self``), as each ranked group
    above another contributes a row above all of that one's."""
    group_of = np.ascontiguousarray(group_of, dtype=np.int64)
    order = np.argsort(group_of, kind="stable")  # members by group, each group's rows ascending
    member_ptr = np.zeros(int(group_cols.shape[0]) + 1, dtype=np.int64)
    np.cumsum(np.bincount(group_of, minlength=len(member_ptr) - 1), out=member_ptr[1:])
    values = np.empty((len(group_of), k), dtype=np.float32)
    indices = np.empty((len(group_of), k), dtype=np.int64)
    _expand_groups(group_values.float().numpy(), group_cols.long().numpy(), group_of, member_ptr, order,
                   not include_self, values, indices)
    return torch.from_numpy(values), torch.from_numpy(indices)


def chunked_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Top-``k`` (values, indices) per row of a 2-D CPU float tensor, by descending score then
    ascending item index; ``None`` when a row holds a NaN or fewer than ``k`` items above
    ``-inf`` (the caller then uses ``ranking.topk_deterministic``'s general path)."""
    scores = scores.contiguous()
    values = torch.empty((len(scores), k), dtype=scores.dtype)
    indices = torch.empty((len(scores), k), dtype=torch.long)
    nan = _run(_topk_rows, [scores.numpy()], [values.numpy(), indices.numpy()])
    if nan or bool((values[:, k - 1] == -torch.inf).any()):
        return None
    return values, indices


def factors_are_safe(users: torch.Tensor, items: torch.Tensor) -> bool:
    """Whether every product of these factors is finite: finite factors whose largest norms
    multiply to well below float32's range (Cauchy-Schwarz bounds every product). It lets
    ``factor_topk`` skip a NaN test per score."""
    if not len(users) or not len(items):
        return True
    bound = torch.linalg.vector_norm(users.float(), dim=1).max() * torch.linalg.vector_norm(items.float(), dim=1).max()
    return bool(bound < SCORE_LIMIT)  # False for NaN and inf


def factor_topk(users: torch.Tensor, items: torch.Tensor, rows: np.ndarray, mask_ptr: np.ndarray,
                mask_items: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (values, indices) of ``users @ items.T`` per user (float32, CPU; the factors
    must pass ``factors_are_safe``), excluding for user ``r`` the items of row ``rows[r]`` of the
    CSR pattern (``mask_ptr``, ``mask_items``); slots past a user's unmasked items hold -inf
    (their index is meaningless)."""
    users = users.detach().float().contiguous()
    items_t = items.detach().float().T.contiguous().numpy()
    values = torch.empty((len(users), k), dtype=torch.float32)
    indices = torch.empty((len(users), k), dtype=torch.long)
    rows, ptr = np.asarray(rows, dtype=np.int64), np.asarray(mask_ptr, dtype=np.int64)
    block_rows = min(max(FACTOR_BLOCK_BYTES // (4 * max(1, len(items))), FACTOR_ROWS[0]), FACTOR_ROWS[1])
    _run(lambda u, r, v, i: _factor_rows(u, items_t, r, ptr, mask_items, block_rows, v, i),
         [users.numpy(), rows], [values.numpy(), indices.numpy()])
    return values, indices


def _run(kernel: Any, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> bool:
    """Call ``kernel(*inputs, *outputs)`` on row ranges, one per torch thread, BLAS held to one
    thread; True if any call returned True."""
    n_rows = len(inputs[0])
    threads = max(1, min(torch.get_num_threads(), n_rows))
    bounds = np.linspace(0, n_rows, threads + 1).astype(int)

    def part(lo: int, hi: int) -> bool:
        return bool(kernel(*(a[lo:hi] for a in (*inputs, *outputs))))

    with _blas_controller().limit(limits=1, user_api="blas"):
        if threads == 1:
            return part(0, n_rows)
        return any(_executor().map(part, bounds[:-1], bounds[1:]))


def _blas_controller() -> ThreadpoolController:
    global _blas
    if _blas is None:
        _blas = ThreadpoolController()
    return _blas


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(thread_name_prefix="modalrec-topk")
    return _pool


def _forget_pool() -> None:
    """A forked child inherits the pool object but not its threads."""
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool)
