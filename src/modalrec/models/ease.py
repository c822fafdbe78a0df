"""EASE: the closed-form shallow linear autoencoder with a zero diagonal."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import scipy.linalg
import torch

from modalrec.data.interactions import Interactions
from modalrec.errors import ConfigError, ModelError
from modalrec.features.features import FeatureSet
from modalrec.models.base import Recommender
from modalrec.models.registry import register

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EASEParams:
    reg_weight: float = 500.0
    """L2 weight lambda on B. The paper tunes it per data set (hundreds to about a thousand on
    ML-20M, Netflix and MSD); 500 sits in that range. Small data sets often want less."""
    max_items: int = 20_000
    """Refuse catalogs larger than this: EASE needs a dense items x items matrix (float64 Gram and
    inverse, float32 B: about 20 bytes per entry, 8 GB at 20,000 items)."""


@register("ease")
class EASE(Recommender):
    """Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.

    ``P = (X^T X + lambda I)^-1``, ``B = I - P diag(1 / diag(P))``, so ``diag(B) = 0``; a user's
    scores are ``x_u B``. Computed in float64 (the Gram matrix of binary data is exact), stored as
    float32.
    """

    Params = EASEParams
    reference = "Steck, WWW 2019"

    def _build(self) -> None:
        p = self.params
        if p.reg_weight <= 0:
            raise ConfigError(f"reg_weight must be positive, got {p.reg_weight}", where="ease.reg_weight")
        if self.n_items > p.max_items:
            gigabytes = 20 * self.n_items**2 / 1e9
            raise ModelError(
                f"EASE needs a dense {self.n_items} x {self.n_items} item matrix (about {gigabytes:.0f} GB) "
                f"and the catalog is above max_items={p.max_items}",
                where="ease.max_items",
                hint="use knn (sparse top-k similarities) for large catalogs, or raise "
                     "--param max_items=N if the memory is there")
        self.weights = torch.zeros(self.n_items, self.n_items, device=self.device)

    def _fit(self, train: Interactions, features: FeatureSet, valid: Interactions | None) -> None:
        self.weights = torch.from_numpy(ease_weights(train, self.params.reg_weight)).to(self.device)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        assert self._seen is not None
        profile = self._seen.csr()[users.cpu().numpy()]
        if self.device.type == "cpu":  # sparse rows times dense B: cost ~ profile length, not n_items
            scores = profile @ self.weights.numpy()
            return torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
        return torch.from_numpy(profile.toarray()).to(self.device) @ self.weights

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.weights = state["weights"].to(self.device, torch.float32)


def ease_weights(train: Interactions, reg_weight: float) -> np.ndarray:
    """``B`` of EASE for binary ``train`` (float32, zero diagonal)."""
    x = train.csr().astype(np.float64)
    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += reg_weight
    precision = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
    del gram
    weights = precision / (-np.diag(precision))[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    log.debug("EASE: %d items, lambda %g", train.n_items, reg_weight)
    return weights.astype(np.float32)
