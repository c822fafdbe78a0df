"""Non-personalised baselines: MostPop and Random (lower references for every table)."""

from __future__ import annotations

import torch

from modalrec.data.interactions import Interactions
from modalrec.features.features import FeatureSet
from modalrec.models.base import Recommender
from modalrec.models.registry import register


@register("mostpop")
class MostPop(Recommender):
    """Scores every item by its number of training interactions, the same for every user."""

    reference = "Popularity baseline (e.g. Cremonesi et al., RecSys 2010)."

    def _build(self) -> None:
        self.popularity = torch.zeros(self.n_items, device=self.device)

    def _fit(self, train: Interactions, features: FeatureSet, valid: Interactions | None) -> None:
        self.popularity = torch.as_tensor(train.item_counts(), dtype=torch.float32, device=self.device)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.popularity.unsqueeze(0).expand(len(users), -1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"popularity": self.popularity}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.popularity = state["popularity"]


@register("random")
class RandomRec(Recommender):
    """Uniform random scores, fixed per (seed, user), so repeated calls agree."""

    reference = "Random baseline."

    def _fit(self, train: Interactions, features: FeatureSet, valid: Interactions | None) -> None:
        pass

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        rows = []
        for user in users.tolist():
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + user)
            rows.append(torch.rand(self.n_items, generator=gen))
        return torch.stack(rows).to(self.device) if rows else torch.empty(0, self.n_items, device=self.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass
