"""Per-user ranking metrics from a top-k gain matrix, vectorised over a batch of users.

Conventions (the ones the reference study and MMRec use):
- Recall@k = relevant hits in the top-k / number of relevant held-out items.
- Precision@k = hits / k. HR@k = 1 if any hit.
- nDCG@k = DCG / IDCG with ``DCG = sum gain_i / log2(i + 1)`` over ranks ``i = 1..k``; IDCG sorts
  the user's relevant gains descending. Binary gains are 1; graded gains are ``2^(r - t + 1) - 1``.
- MAP@k = sum over hit ranks of Precision@rank / min(k, relevant).
- MRR@k = 1 / rank of the first hit (0 without one).
"""

from __future__ import annotations

import torch

RANKING_METRICS = ("recall", "precision", "ndcg", "hr", "map", "mrr")


def ranking_metrics(
    gains: torch.Tensor, n_relevant: torch.Tensor, ideal: torch.Tensor, cutoffs: list[int]
) -> dict[str, torch.Tensor]:
    """Per-user metrics ``{'recall@20': (users,) float64, ...}``.

    ``gains``: (users, K) gain of the item at each rank (0 when not relevant), K >= max cutoff
    (or K = number of items when that is smaller).
    ``n_relevant``: (users,) count of relevant held-out items.
    ``ideal``: (users, K) the user's relevant gains sorted descending, zero-padded.
    """
    table = ranking_metric_table(gains, n_relevant, ideal, cutoffs)
    return {f"{name}@{k}": table[:, i, j] for i, name in enumerate(RANKING_METRICS) for j, k in enumerate(cutoffs)}


def ranking_metric_table(
    gains: torch.Tensor, n_relevant: torch.Tensor, ideal: torch.Tensor, cutoffs: list[int]
) -> torch.Tensor:
    """The same metrics as one (users, len(RANKING_METRICS), len(cutoffs)) float64 tensor, all
    cutoffs at once (few large operations rather than many small ones per batch)."""
    gains = gains.double()
    k_max = gains.shape[1]
    device = gains.device
    ranks = torch.arange(1, k_max + 1, dtype=torch.float64, device=device)
    discount = 1.0 / torch.log2(ranks + 1.0)
    hit = (gains > 0).double()
    cum_hits = hit.cumsum(dim=1)
    dcg = (gains * discount).cumsum(dim=1)
    idcg = (ideal.double() * discount).cumsum(dim=1)
    ap_terms = (cum_hits / ranks * hit).cumsum(dim=1)
    first_hit = torch.where(hit.any(dim=1), hit.argmax(dim=1).double() + 1.0, torch.inf).unsqueeze(1)
    ks = torch.tensor(cutoffs, dtype=torch.float64, device=device)
    cols = torch.tensor([min(k, k_max) - 1 for k in cutoffs], dtype=torch.long, device=device)
    n_rel = n_relevant.double().unsqueeze(1)
    hits_k = cum_hits[:, cols]
    idcg_k = idcg[:, cols]
    return torch.stack([
        hits_k / n_rel,  # recall
        hits_k / ks,  # precision
        torch.where(idcg_k > 0, dcg[:, cols] / idcg_k, 0.0),  # ndcg
        (hits_k > 0).double(),  # hr
        ap_terms[:, cols] / torch.minimum(n_rel, ks),  # map
        torch.where(first_hit <= ks, 1.0 / first_hit, 0.0),  # mrr
    ], dim=1)
