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
    """Per-user metrics.

    ``gains``: (users, K) gain of the item at each rank (0 when not relevant), K >= max cutoff.
    ``n_relevant``: (users,) count of relevant held-out items.
    ``ideal``: (users, K) the user's relevant gains sorted descending, zero-padded.
    """
    gains = gains.double()
    ideal = ideal.double()
    hit = (gains > 0).double()
    k_max = gains.shape[1]
    ranks = torch.arange(1, k_max + 1, dtype=torch.float64, device=gains.device)
    discount = 1.0 / torch.log2(ranks + 1.0)
    cum_hits = hit.cumsum(dim=1)
    dcg = (gains * discount).cumsum(dim=1)
    idcg = (ideal * discount).cumsum(dim=1)
    precision_at = cum_hits / ranks
    ap_terms = (precision_at * hit).cumsum(dim=1)
    first_hit = torch.where(hit.any(dim=1), hit.argmax(dim=1).double() + 1.0, torch.inf)
    n_rel = n_relevant.double()
    out: dict[str, torch.Tensor] = {}
    for k in cutoffs:
        c = min(k, k_max) - 1
        hits_k = cum_hits[:, c]
        out[f"recall@{k}"] = hits_k / n_rel
        out[f"precision@{k}"] = hits_k / k
        out[f"hr@{k}"] = (hits_k > 0).double()
        out[f"ndcg@{k}"] = torch.where(idcg[:, c] > 0, dcg[:, c] / idcg[:, c], 0.0)
        out[f"map@{k}"] = ap_terms[:, c] / torch.clamp(n_rel, max=k)
        out[f"mrr@{k}"] = torch.where(first_hit <= k, 1.0 / first_hit, 0.0)
    return out
