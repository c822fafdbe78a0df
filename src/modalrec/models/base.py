"""The recommender API every model follows: ``fit``, ``score``, ``recommend``, ``save``, ``load``.

Hyperparameters are a typed ``Params`` dataclass per model with documented defaults. A fitted
model remembers the training interactions, so ``recommend`` never returns an item already seen.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from modalrec import io
from modalrec.data.interactions import Interactions
from modalrec.errors import ModelError
from modalrec.evaluation.ranking import topk_deterministic
from modalrec.features.features import FeatureSet, check_aligned


@dataclasses.dataclass
class NoParams:
    """This model has no hyperparameters."""


class Recommender(ABC):
    """Base class. Subclasses set ``name``, ``Params`` and implement ``_fit``/``_score`` and the
    state hooks; ``uses_features`` says whether the model needs at least one modality."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    uses_features: ClassVar[bool] = False
    reference: ClassVar[str] = ""

    def __init__(self, params: Any = None, seed: int = 0, device: str = "cpu") -> None:
        if params is None:
            params = self.Params()
        elif isinstance(params, dict):
            params = self.Params(**params)
        self.params = params
        self.seed = int(seed)
        self.device = torch.device(device)
        self.n_users = 0
        self.n_items = 0
        self.feature_dims: dict[str, int] = {}
        self.history: list[dict[str, Any]] = []
        self._seen: Interactions | None = None

    # --- public API ---------------------------------------------------------------------------
    def fit(
        self,
        train: Interactions,
        features: FeatureSet | None = None,
        valid: Interactions | None = None,
    ) -> Recommender:
        features = dict(features or {})
        if self.uses_features and not features:
            raise ModelError(
                f"model {self.name!r} needs at least one feature modality and got none",
                hint="pass --features NAME (see `modalrec features list DIR`)",
            )
        if train.nnz == 0:
            raise ModelError("cannot fit on an empty training set")
        check_aligned(features, train.n_items)
        self.n_users, self.n_items = train.n_users, train.n_items
        self.feature_dims = {name: f.dim for name, f in features.items()}
        self._seen = train
        torch.manual_seed(self.seed)
        self._build()
        self._fit(train, features, valid)
        return self

    @torch.no_grad()
    def score(self, users: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Scores of every item for each user: a float32 tensor ``(len(users), n_items)``."""
        self._check_fitted()
        users_t = torch.as_tensor(np.asarray(users), dtype=torch.long, device=self.device)
        if len(users_t) and (users_t.min() < 0 or users_t.max() >= self.n_users):
            raise ModelError(f"user index out of range [0, {self.n_users})")
        return self._score(users_t).float()

    def recommend(
        self, users: np.ndarray, k: int = 10, exclude: Interactions | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (items, scores) per user, never an item in ``exclude`` (default: training)."""
        self._check_fitted()
        exclude = self._seen if exclude is None else exclude
        users = np.asarray(users, dtype=np.int64)
        scores = self.score(users).clone()
        mask = exclude.csr()[users].tocoo()
        scores[torch.as_tensor(mask.row, dtype=torch.long), torch.as_tensor(mask.col, dtype=torch.long)] = -torch.inf
        values, items = topk_deterministic(scores, k)
        return items.cpu().numpy(), values.cpu().numpy()

    def save(self, path: str | Path) -> Path:
        """A folder with ``model.json`` and ``state.safetensors``; ``load`` restores exact scores."""
        from safetensors.torch import save_file

        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        assert self._seen is not None
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        state["_seen.indptr"] = torch.from_numpy(self._seen.indptr.astype(np.int64))
        state["_seen.indices"] = torch.from_numpy(self._seen.indices.astype(np.int64))
        with io.atomic_path(path / "state.safetensors") as tmp:
            save_file(state, str(tmp))
        io.write_json(path / "model.json", {
            "model": self.name,
            "params": dataclasses.asdict(self.params),
            "seed": self.seed,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "feature_dims": self.feature_dims,
            "feature_order": list(self.feature_dims),  # JSON keys are written sorted
            "history": self.history,
        })
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Recommender:
        from safetensors.torch import load_file

        from modalrec.models.registry import get_model

        path = Path(path)
        meta_path = path / "model.json"
        if not meta_path.exists():
            raise ModelError("no saved model here (model.json missing)", where=str(path))
        meta = io.read_json(meta_path)
        model_cls = get_model(meta["model"]) if cls is Recommender else cls
        model = model_cls(model_cls.Params(**meta["params"]), seed=meta["seed"], device=device)
        model.n_users, model.n_items = meta["n_users"], meta["n_items"]
        dims = meta["feature_dims"]
        model.feature_dims = {name: dims[name] for name in meta.get("feature_order", dims)}
        model.history = meta["history"]
        state = load_file(str(path / "state.safetensors"))
        indptr = state.pop("_seen.indptr").numpy()
        indices = state.pop("_seen.indices").numpy().astype(np.int32)
        model._seen = Interactions(model.n_users, model.n_items, indptr, indices)
        model._build()
        model.load_state_dict({k: v.to(model.device) for k, v in state.items()})
        model._after_load()
        return model

    # --- hooks ---------------------------------------------------------------------------------
    def _build(self) -> None:
        """Allocate parameters for ``n_users``, ``n_items`` and ``feature_dims`` (fit and load)."""

    def _after_load(self) -> None:
        """Rebuild derived structures (graphs, caches) once the state is restored."""

    @abstractmethod
    def _fit(self, train: Interactions, features: FeatureSet, valid: Interactions | None) -> None: ...

    @abstractmethod
    def _score(self, users: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor needed to score after ``_build`` (features the model uses included)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...

    @property
    def is_fitted(self) -> bool:
        return self._seen is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise ModelError(f"model {self.name!r} is not fitted", hint="call fit() or load a saved run")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"
