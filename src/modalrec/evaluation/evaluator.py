"""Full-ranking evaluation: every item is a candidate, seen items are masked, users are batched.

Users without a relevant held-out item are skipped and counted. Per-user values are kept for
significance tests. Ties in scores follow ``ranking.topk_deterministic`` (lower item index first).
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
from modalrec.errors import ConfigError
from modalrec.evaluation.metrics import ranking_metrics
from modalrec.evaluation.ranking import topk_deterministic

log = logging.getLogger(__name__)

ScoreFn = Callable[[np.ndarray], torch.Tensor]


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
    ) -> None:
        if not cutoffs or min(cutoffs) < 1:
            raise ConfigError(f"cutoffs must be positive integers, got {list(cutoffs)}")
        if graded and relevance_threshold is None:
            raise ConfigError("graded gains need a relevance threshold", hint="pass --relevance-threshold 4")
        self.cutoffs = sorted({int(k) for k in cutoffs})
        self.relevance_threshold = relevance_threshold
        self.graded = graded
        self.mask_valid_on_test = mask_valid_on_test
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.memory_mb = memory_mb
        self.progress = progress

    def evaluate(self, model: object, split: Split, part: str = "test") -> EvaluationResult:
        """Evaluate a fitted recommender (anything with ``score(users)``) on a split part."""
        exclude = [split.train]
        if part == "test" and self.mask_valid_on_test:
            exclude.append(split.valid)
        return self.run(model.score, split.part(part), exclude, popularity=split.train)  # type: ignore[attr-defined]

    def relevance(self, target: Interactions) -> sp.csr_matrix:
        """Held-out gains as CSR: 0 (dropped) for items below the threshold."""
        if self.relevance_threshold is None:
            return target.csr()
        if target.ratings is None:
            raise ConfigError("a relevance threshold needs ratings, and this data has none",
                              hint="drop --relevance-threshold for implicit data")
        t = self.relevance_threshold
        r = target.ratings.astype(np.float64)
        gains = np.where(r >= t, (2.0 ** (r - t + 1) - 1) if self.graded else 1.0, 0.0)
        matrix = sp.csr_matrix((gains.astype(np.float32), target.indices, target.indptr),
                               shape=(target.n_users, target.n_items))
        matrix.eliminate_zeros()
        return matrix

    def run(
        self,
        score: ScoreFn,
        target: Interactions,
        exclude: Sequence[Interactions],
        popularity: Interactions | None = None,
    ) -> EvaluationResult:
        start = time.perf_counter()
        n_users, n_items = target.n_users, target.n_items
        gains_csr = self.relevance(target)
        n_relevant = np.diff(gains_csr.indptr)
        users = np.flatnonzero(n_relevant > 0)
        n_skipped = int(((target.user_counts() > 0) & (n_relevant == 0)).sum())
        mask_csr = sp.csr_matrix((n_users, n_items), dtype=np.float32)
        for part in exclude:
            mask_csr = mask_csr + part.csr()
        k_max = min(max(self.cutoffs), n_items)
        batch = self.batch_size or max(1, (self.memory_mb << 20) // (4 * 3 * max(1, n_items)))
        per_user: dict[str, list[torch.Tensor]] = {}
        rec_counts = {k: torch.zeros(n_items, dtype=torch.float64, device=self.device) for k in self.cutoffs}
        novelty_sum = dict.fromkeys(self.cutoffs, 0.0)
        pop = (popularity.item_counts() if popularity is not None else np.ones(n_items)).astype(np.float64)
        self_info = torch.as_tensor(-np.log2(np.maximum(pop, 1.0) / max(1, n_users)), device=self.device)

        chunks = range(0, len(users), batch)
        for lo in tqdm(chunks, desc="evaluate", unit="batch", disable=not self.progress, leave=False):
            batch_users = users[lo : lo + batch]
            scores = score(batch_users).to(self.device, dtype=torch.float32).clone()
            if scores.shape != (len(batch_users), n_items):
                raise ConfigError(f"scorer returned shape {tuple(scores.shape)}, expected "
                                  f"({len(batch_users)}, {n_items})")
            seen = mask_csr[batch_users].tocoo()
            scores[torch.as_tensor(seen.row, dtype=torch.long, device=self.device),
                   torch.as_tensor(seen.col, dtype=torch.long, device=self.device)] = -torch.inf
            values, top = topk_deterministic(scores, k_max)
            valid_rank = torch.isfinite(values)
            dense_gains = torch.as_tensor(gains_csr[batch_users].toarray(), device=self.device)
            gains_top = torch.gather(dense_gains, 1, top) * valid_rank
            ideal = torch.topk(dense_gains, k_max, dim=1).values
            n_rel = torch.as_tensor(n_relevant[batch_users], device=self.device)
            for name, values_k in ranking_metrics(gains_top, n_rel, ideal, self.cutoffs).items():
                per_user.setdefault(name, []).append(values_k.cpu())
            for k in self.cutoffs:
                items_k = top[:, :k][valid_rank[:, :k]]
                rec_counts[k] += torch.bincount(items_k, minlength=n_items).double()
                novelty_sum[k] += float(self_info[items_k].sum())
            del scores, dense_gains

        arrays = {name: torch.cat(parts).numpy() for name, parts in per_user.items()}
        metrics = {name: float(values.mean()) if len(values) else 0.0 for name, values in arrays.items()}
        for k in self.cutoffs:
            counts = rec_counts[k].cpu().numpy()
            total = counts.sum()
            metrics[f"coverage@{k}"] = float((counts > 0).sum() / n_items)
            metrics[f"novelty@{k}"] = float(novelty_sum[k] / total) if total else 0.0
            metrics[f"gini@{k}"] = gini(counts)
        seconds = time.perf_counter() - start
        log.info("evaluated %d users (%d skipped) in %.2fs", len(users), n_skipped, seconds)
        return EvaluationResult(metrics, arrays, users, n_skipped, seconds)


def gini(counts: np.ndarray) -> float:
    """Gini index of how recommendations spread over items: 0 even, towards 1 concentrated."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * x).sum() / (n * total))
