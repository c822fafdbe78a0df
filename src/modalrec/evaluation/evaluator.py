"""Full-ranking evaluation: every item is a candidate, seen items are masked, users are batched.

Users without a relevant held-out item are skipped and counted. Per-user values are kept for
significance tests. Ties in scores follow ``ranking.topk_deterministic`` (lower item index first).

Lean by design, since scoring (a matrix product) should be the only real cost: the mask matrix
becomes index tensors once per run, and a batch gathers its users' entries with a few vectorised
operations; no dense (batch, n_items) gains matrix is built: ``metrics.metric_table`` takes each
user's top-k items and finds their gains by a scan of the user's few relevant items (on CPU, after
a small (users, k) transfer from another device); the masked copy of the scores lives in one
buffer for the run.

Factorised models (score = user . item) hand over their embeddings (``factors``), and on CPU the
evaluator never materialises their scores: ``chunked_topk.factor_topk`` scores, masks and ranks a
few users at a time while their block is in cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from modalrec.data.interactions import Interactions
from modalrec.data.split import Split
from modalrec.errors import ConfigError, ModelError
from modalrec.evaluation.chunked_topk import factor_topk, factors_are_safe
from modalrec.evaluation.metrics import RANKING_METRICS, metric_table
from modalrec.evaluation.ranking import topk_deterministic

log = logging.getLogger(__name__)

ScoreFn = Callable[[np.ndarray], torch.Tensor]
Factors = tuple[torch.Tensor, torch.Tensor]

CPU_BATCH_BYTES = 16 << 20  # score-matrix bytes per batch on CPU (see Evaluator.batch_users)
FUSED_BATCH_USERS = 1 << 16  # users per batch when factors are ranked in place (no score matrix)
HELD_OUT_TIE_SEED = 0  # the random item order that breaks ties among held-out candidates


@dataclass
class EvaluationResult:
    """Aggregate metrics (``'recall@20'`` ...), per-user arrays aligned with ``users``."""

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray] = field(repr=False)
    users: np.ndarray = field(repr=False)
    n_skipped: int = 0
    seconds: float = 0.0


class Evaluator:
    """Batched full-ranking evaluator.

    ``relevance_threshold``: held-out items rated below it are not relevant (needs ratings).
    ``graded``: nDCG gains ``2^(r - t + 1) - 1`` instead of 1 (needs a threshold ``t``).
    ``mask_valid_on_test``: when testing, mask validation items as well as training items. On by
    default, since they are known interactions; off reproduces protocols that mask only train.
    ``candidates``: ``"all"`` ranks every item; ``"held-out"`` ranks only the items that occur in
    the evaluated part, the cold-item protocol (held-out items never seen in training compete
    with each other, not with the warm catalog that every model can score). There, equal scores
    rank in a fixed random order of the items (``HELD_OUT_TIE_SEED``), not by item index: a model
    that cannot tell new items apart gives them all one score, and item ids often follow
    popularity or age, which the index rule would hand it for free.
    """

    def __init__(
        self,
        cutoffs: Sequence[int] = (10, 20),
        relevance_threshold: float | None = None,
        graded: bool = False,
        mask_valid_on_test: bool = True,
        batch_size: int | None = None,
        device: str = "cpu",
        memory_mb: int = 512,
        progress: bool = False,
        candidates: str = "all",
    ) -> None:
        if not cutoffs or min(cutoffs) < 1:
            raise ConfigError(f"cutoffs must be positive integers, got {list(cutoffs)}")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        if memory_mb < 1:
            raise ConfigError(f"memory_mb must be positive, got {memory_mb}")
        if graded and relevance_threshold is None:
            raise ConfigError("graded gains need a relevance threshold", hint="pass --relevance-threshold 4")
        if candidates not in ("all", "held-out"):
            raise ConfigError(f"candidates must be 'all' or 'held-out', got {candidates!r}")
        self.cutoffs = sorted({int(k) for k in cutoffs})
        self.relevance_threshold = relevance_threshold
        self.graded = graded
        self.mask_valid_on_test = mask_valid_on_test
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.memory_mb = memory_mb
        self.progress = progress
        self.candidates = candidates

    def evaluate(self, model: object, split: Split, part: str = "test") -> EvaluationResult:
        """Evaluate a fitted recommender (anything with ``score(users)``) on a split part."""
        exclude = [split.train]
        if part == "test" and self.mask_valid_on_test:
            exclude.append(split.valid)
        return self.run_model(model, split.part(part), exclude, popularity=split.train)

    def run_model(self, model: object, target: Interactions, exclude: Sequence[Interactions],
                  popularity: Interactions | None = None) -> EvaluationResult:
        """``run`` for a fitted model, handing over its factors where it has them
        (``scoring_embeddings``); ``seconds`` includes computing them."""
        start = time.perf_counter()
        factors = model.scoring_embeddings() if hasattr(model, "scoring_embeddings") else None
        result = self.run(model.score, target, exclude, popularity, factors)  # type: ignore[attr-defined]
        result.seconds = time.perf_counter() - start
        return result

    def relevance(self, target: Interactions) -> sp.csr_matrix:
        """Held-out gains as CSR: 0 (dropped) for items below the threshold."""
        if self.relevance_threshold is None:
            return target.csr()
        if target.ratings is None:
            raise ConfigError("a relevance threshold needs ratings, and this data has none",
                              hint="drop --relevance-threshold for implicit data")
        t = self.relevance_threshold
        r = target.ratings.astype(np.float64)
        keep = r >= t
        gains = (2.0 ** (r[keep] - t + 1) - 1) if self.graded else np.ones(int(keep.sum()))
        # Filter into new arrays: scipy's eliminate_zeros would prune the caller's arrays in place.
        indptr = np.zeros(target.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(target.users[keep], minlength=target.n_users), out=indptr[1:])
        return sp.csr_matrix((gains.astype(np.float32), target.indices[keep], indptr),
                             shape=(target.n_users, target.n_items))

    def batch_users(self, n_items: int) -> int:
        """Users per batch: ``batch_size`` if set, else what ``memory_mb`` allows for about three
        float32 score rows per user (the scorer's output, the masked copy, and slack for the
        scorer's own temporaries). On CPU it is also capped at about ``CPU_BATCH_BYTES`` of scores:
        blocks of that size stay in cache and are reused by the allocator, while larger ones are
        mapped afresh every batch and cost more in page faults than the per-batch overhead saves."""
        if self.batch_size:
            return int(self.batch_size)
        n_items = max(1, n_items)
        batch = (int(self.memory_mb) << 20) // (4 * 3 * n_items)
        if self.device.type == "cpu":
            batch = min(batch, CPU_BATCH_BYTES // (4 * n_items))
        return max(1, batch)

    @torch.no_grad()
    def run(
        self,
        score: ScoreFn,
        target: Interactions,
        exclude: Sequence[Interactions],
        popularity: Interactions | None = None,
        factors: Factors | None = None,
    ) -> EvaluationResult:
        """Rank every item for each user with a relevant item in ``target``; items in ``exclude``
        are masked. ``popularity`` (usually train) gives the item counts behind novelty.
        ``factors``: (user, item) embeddings whose products are exactly ``score``'s, to let the
        evaluator rank their products without a score matrix (CPU, every item a candidate).

        ``n_skipped`` counts users who hold items out but none relevant (all below the threshold);
        users who hold nothing out are neither evaluated nor counted."""
        start = time.perf_counter()
        n_users, n_items = target.n_users, target.n_items
        for part in [*exclude, *([popularity] if popularity is not None else [])]:
            if (part.n_users, part.n_items) != (n_users, n_items):
                raise ConfigError(f"masked or popularity interactions have shape ({part.n_users}, "
                                  f"{part.n_items}), the target ({n_users}, {n_items})")
        dev = self.device
        gains_csr = self.relevance(target)
        n_relevant = np.diff(gains_csr.indptr)
        users = np.flatnonzero(n_relevant > 0)
        n_skipped = int(((target.user_counts() > 0) & (n_relevant == 0)).sum())
        gains_arrays = (gains_csr.indptr.astype(np.int64), gains_csr.indices, gains_csr.data.astype(np.float32))
        mask_pattern = _merged_pattern(exclude, n_users, n_items)
        pool = None  # held-out candidates only: their item indices, in the tie order
        n_candidates = n_items
        if self.candidates == "held-out":
            inside = np.zeros(n_items, dtype=bool)
            inside[target.items] = True
            order = np.random.default_rng(HELD_OUT_TIE_SEED).permutation(n_items)
            pool = torch.as_tensor(order[inside[order]], dtype=torch.long, device=dev)
            n_candidates = len(pool)
        k_max = min(max(self.cutoffs), n_candidates)
        # Recommendation counts per item, by the first cutoff that covers each rank (one
        # index_add per batch); a cumulative sum over cutoffs at the end gives the counts at k.
        bucket = torch.as_tensor(np.searchsorted(self.cutoffs, np.arange(k_max), side="right"),
                                 dtype=torch.long, device=dev) * n_items
        rec_counts = torch.zeros(len(self.cutoffs) * n_items, dtype=torch.int64, device=dev)
        tables: list[torch.Tensor] = []
        buffer: torch.Tensor | None = None
        fused = factors is not None and dev.type == "cpu" and pool is None
        if fused:
            assert factors is not None
            user_emb, item_emb = (f.detach().to(dev, torch.float32) for f in factors)
            if (len(user_emb), len(item_emb)) != (n_users, n_items):
                raise ConfigError(f"factors hold {len(user_emb)} users and {len(item_emb)} items, the "
                                  f"target ({n_users}, {n_items})")
            fused = factors_are_safe(user_emb, item_emb)  # else the scorer's path catches NaN
            mask_ptr, mask_items = (np.asarray(a) for a in mask_pattern)
        # Index tensors built once per run, where a path needs them; each batch then only gathers
        # its users' rows.
        mask_rows = None if fused else _CsrRows(*mask_pattern, dev)
        # The fused path holds no score matrix: its batches only bound the index bookkeeping.
        batch = (self.batch_size or FUSED_BATCH_USERS) if fused else self.batch_users(n_items)
        users_t = torch.as_tensor(users, dtype=torch.long, device=dev)
        cutoffs = np.asarray(self.cutoffs, dtype=np.int64)

        chunks = range(0, len(users), batch)
        for lo in tqdm(chunks, desc="evaluate", unit="batch", disable=not self.progress, leave=False):
            batch_users = users[lo : lo + batch]
            rows_t = users_t[lo : lo + batch]
            n_batch = len(batch_users)
            if fused:  # scores computed, masked and ranked a few users at a time, in cache
                values, top = factor_topk(user_emb[rows_t], item_emb, batch_users, mask_ptr, mask_items, k_max)
            else:
                raw = score(batch_users)
                if tuple(raw.shape) != (n_batch, n_items):
                    raise ConfigError(f"scorer returned shape {tuple(raw.shape)}, expected ({n_batch}, {n_items})")
                # Masking writes into a copy (never into the scorer's tensor), kept in one buffer
                # for the run: a fresh large tensor per batch costs page faults, not just the copy.
                if buffer is None:
                    buffer = torch.empty((batch, n_items), dtype=torch.float32, device=dev)
                scores = buffer[:n_batch]
                scores.copy_(raw)
                del raw
                assert mask_rows is not None
                row, col = mask_rows.gather(rows_t)
                scores.view(-1).index_fill_(0, row * n_items + col, -torch.inf)
                if pool is None:
                    values, top = topk_deterministic(scores, k_max)
                else:  # rank the candidates only; ties by their position in the pool
                    values, top = topk_deterministic(scores[:, pool], k_max)
                    top = pool[top]
                del scores
            if not fused and bool(torch.isnan(values[:, 0]).any()):  # factors_are_safe rules NaN out
                raise ModelError("the model produced NaN scores", hint="check the training loss and inputs")
            ranked = values > -torch.inf  # fewer unmasked items than k: the rest is no rank
            tables.append(metric_table(top.cpu().numpy(), ranked.cpu().numpy(), batch_users, *gains_arrays,
                                       cutoffs))
            keys = top + bucket
            if not bool(ranked.all()):
                keys = keys[ranked]
            rec_counts.index_add_(0, keys.view(-1), torch.ones_like(keys.view(-1)))

        table = np.concatenate(tables) if tables else np.zeros((0, len(RANKING_METRICS), len(self.cutoffs)))
        arrays = {f"{name}@{k}": np.ascontiguousarray(table[:, i, j])
                  for j, k in enumerate(self.cutoffs) for i, name in enumerate(RANKING_METRICS)}
        metrics = {name: float(values.mean()) if len(values) else 0.0 for name, values in arrays.items()}
        pop = (popularity.item_counts() if popularity is not None else np.ones(n_items)).astype(np.float64)
        self_info = -np.log2(np.maximum(pop, 1.0) / max(1, n_users))  # bits; unseen items count once
        counts_at = rec_counts.view(len(self.cutoffs), n_items).cumsum(dim=0).cpu().numpy()
        for j, k in enumerate(self.cutoffs):
            counts = counts_at[j]
            total = counts.sum()
            metrics[f"coverage@{k}"] = float((counts > 0).sum() / max(1, n_candidates))
            metrics[f"novelty@{k}"] = float(counts @ self_info / total) if total else 0.0
            metrics[f"gini@{k}"] = gini(counts)
        seconds = time.perf_counter() - start
        log.info("evaluated %d users (%d skipped) in %.2fs", len(users), n_skipped, seconds)
        return EvaluationResult(metrics, arrays, users, n_skipped, seconds)


class _CsrRows:
    """A CSR pattern's arrays on the device, to gather the entries of a batch of rows at once."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, device: torch.device) -> None:
        # int32 columns, as Interactions stores them: on CPU the arrays are shared, not copied.
        self.indptr = torch.as_tensor(np.asarray(indptr, dtype=np.int64), device=device)
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int32), device=device)

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(position of the row in ``rows``, column) of every entry, row by row, columns ascending
        within a row."""
        starts = self.indptr[rows]
        counts = self.indptr[rows + 1] - starts
        total = int(counts.sum())
        local = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts,
                                        output_size=total)
        offsets = torch.cumsum(counts, 0) - counts  # where each row's entries begin in the output
        entry = torch.arange(total, device=rows.device) + (starts - offsets)[local]
        return local, self.indices[entry]


def _merged_pattern(parts: Sequence[Interactions], n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of the union of the parts' entries, columns sorted within rows."""
    if not parts:
        return np.zeros(n_users + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if len(parts) == 1:
        return parts[0].indptr, parts[0].indices
    union = parts[0].csr()
    for part in parts[1:]:
        union = union + part.csr()
    union.sort_indices()
    return union.indptr, union.indices


def gini(counts: np.ndarray) -> float:
    """Gini index of how recommendations spread over items: 0 even, towards 1 concentrated."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * x).sum() / (n * total))
