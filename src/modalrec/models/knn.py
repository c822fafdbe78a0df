"""ItemKNN: item-based collaborative filtering over a sparse top-k item-item similarity.

Also holds ``NeighbourhoodRecommender``, the scoring shared with Attribute ItemKNN: a user's score
for candidate ``c`` is ``sum_{i in train(u)} W[c, i]``, where row ``c`` of ``W`` keeps the ``k``
items most similar to ``c`` (Sarwar et al., WWW 2001; Deshpande & Karypis, TOIS 2004). ``W`` has at
most ``k`` entries per row, so memory is O(items x k) and scoring is a sparse product.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from modalrec.data.interactions import Interactions
from modalrec.features.features import FeatureSet
from modalrec.models.base import Recommender
from modalrec.models.registry import register
from modalrec.models.similarity import topk_similarity, weight_rows


class NeighbourhoodRecommender(Recommender):
    """Scores with a fitted sparse item-item matrix ``W`` (rows: candidates) and the training
    interactions. Subclasses compute ``W`` in ``_fit`` and call ``_set_weights``."""

    def _build(self) -> None:
        self._set_weights(sp.csr_matrix((self.n_items, self.n_items), dtype=np.float32))

    def _set_weights(self, weights: sp.csr_matrix) -> None:
        self.weights = sp.csr_matrix(weights, dtype=np.float32)
        self.weights.sort_indices()
        self._weights_t = self.weights.T.tocsr()  # items x candidates, for X[users] @ W^T

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        assert self._seen is not None
        profile = self._seen.csr()[users.cpu().numpy()]
        scores = (profile @ self._weights_t).toarray()
        return torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)).to(self.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        w = self.weights
        return {
            "weights.indptr": torch.from_numpy(w.indptr.astype(np.int64)),
            "weights.indices": torch.from_numpy(w.indices.astype(np.int64)),
            "weights.data": torch.from_numpy(w.data.astype(np.float32)),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        data = state["weights.data"].cpu().numpy()
        indices = state["weights.indices"].cpu().numpy()
        indptr = state["weights.indptr"].cpu().numpy()
        self._set_weights(sp.csr_matrix((data, indices, indptr), shape=(self.n_items, self.n_items)))


@dataclasses.dataclass
class ItemKNNParams:
    k: int = 40
    """Neighbourhood size: similarities kept per item. 40 is Elliot's default (the framework of the
    reference study); Dacrema et al. use 50 and tune 5..1000."""
    similarity: Literal["cosine", "asymmetric", "jaccard"] = "cosine"
    """Cosine (Sarwar et al.), Aiolli's asymmetric cosine, or Jaccard (Tanimoto on weighted rows)."""
    shrink: float = 0.0
    """Added to the similarity's denominator (Dacrema et al.'s form); 0 as in Elliot, Dacrema et al.
    use 100 by default and tune 0..1000."""
    alpha: float = 0.5
    """Asymmetric cosine only: exponent on the candidate's norm (Aiolli 2013); 0.5 is plain cosine."""
    weighting: Literal["none", "tfidf", "bm25"] = "none"
    """Re-weighting of the item x user matrix before the similarity (Dacrema et al.'s option)."""
    bm25_k1: float = 1.2
    """BM25 term-frequency saturation (the customary 1.2, also Dacrema et al.'s)."""
    bm25_b: float = 0.75
    """BM25 length normalisation (the customary 0.75)."""


@register("knn")
class ItemKNN(NeighbourhoodRecommender):
    """Item-based kNN (Sarwar et al., "Item-based collaborative filtering recommendation
    algorithms", WWW 2001), with the similarity, shrinkage and weighting options of Dacrema et al.
    (RecSys 2019) and Aiolli's asymmetric cosine (RecSys Challenge 2013)."""

    Params = ItemKNNParams
    reference = "Sarwar et al., WWW 2001; Aiolli, RecSys Challenge 2013; Dacrema et al., RecSys 2019"

    def _fit(self, train: Interactions, features: FeatureSet, valid: Interactions | None) -> None:
        p = self.params
        item_rows = weight_rows(train.csr().T, p.weighting, p.bm25_k1, p.bm25_b)  # items x users
        self._set_weights(topk_similarity(item_rows, p.k, p.similarity, p.shrink, p.alpha))
