"""Base class for models trained by gradient descent with the shared ``Trainer``.

A subclass builds a ``torch.nn.Module`` (``build_module``), computes its loss on a batch of
(user, positive, negative) triples (``loss``) and gives final user and item embeddings for scoring
(``embeddings``). Fixed structures (graphs, normalised adjacency) are built once in ``prepare``,
both when fitting and after loading, so the epoch loop never recomputes them.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from modalrec.data.interactions import Interactions
from modalrec.features.features import FeatureSet
from modalrec.models.base import Recommender


@dataclasses.dataclass
class TrainParams:
    """Training-loop hyperparameters shared by every gradient model (MMRec's defaults)."""

    epochs: int = 200
    """Upper bound on epochs; early stopping usually ends sooner (the reference study: 200)."""
    batch_size: int = 2048
    """MMRec's default (the reference runs); the reference study uses 1024 on Baby."""
    lr: float = 1e-3
    """Adam's learning rate (MMRec's default; the paper of most models)."""
    lr_decay: float = 1.0
    """Learning rate at epoch e is ``lr * lr_decay ** (e / lr_decay_epochs)`` (MMRec's scheduler)."""
    lr_decay_epochs: int = 50
    """Epochs per ``lr_decay`` factor (MMRec's ``learning_rate_scheduler`` [1.0, 50])."""
    eval_every: int = 1
    """Validate every N epochs; the reference study checks every 10, MMRec every epoch."""
    patience: int = 20
    """Stop after this many validations without improvement; the best weights are restored."""
    valid_metric: str = "recall@20"
    """Model-selection metric on validation, METRIC@K (the reference study's and MMRec's)."""
    valid_candidates: str = "all"
    """Items ranked on validation: ``all``, or ``held-out`` (only the validation items, the
    cold-item protocol; see ``Evaluator``)."""
    weight_decay: float = 0.0
    """L2 on every parameter, added to its gradient by Adam (torch's coupled ``weight_decay``,
    MMRec's option, 0 by default: models regularise the batch's embeddings in their loss)."""


SCORING_KEYS = ("scoring.user", "scoring.item")


class GradientRecommender(Recommender):
    """A recommender whose parameters live in ``self.module`` and are fitted by ``Trainer``."""

    Params = TrainParams

    def __init__(self, params: object = None, seed: int = 0, device: str = "cpu") -> None:
        super().__init__(params, seed, device)
        self.module: torch.nn.Module = torch.nn.Module()
        self.checkpoint_dir: Path | None = None
        self.best_epoch = 0
        self.callbacks: list[Callable[[dict[str, Any]], None]] = []
        """Called with each epoch's record (pruning, reporting); raising stops training."""
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._saved_embeddings: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)

    # --- hooks for subclasses -------------------------------------------------------------------
    @abstractmethod
    def build_module(self) -> torch.nn.Module:
        """Parameters and feature buffers for ``n_users``, ``n_items`` and ``feature_dims``."""

    def set_features(self, features: FeatureSet) -> None:
        """Copy feature matrices into the module's buffers (so a saved model needs no features)."""

    def prepare(self, train: Interactions) -> None:
        """Build fixed structures from the training graph and the stored features."""

    def on_epoch_start(self, epoch: int) -> None:
        """Per-epoch work such as FREEDOM's edge pruning."""

    @abstractmethod
    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user, item) embeddings used for scoring, computed in eval mode."""

    # --- Recommender plumbing --------------------------------------------------------------------
    def _build(self) -> None:
        self.module = self.build_module().to(self.device)
        self.invalidate()

    def _fit(self, train: Interactions, features: FeatureSet, valid: Interactions | None) -> None:
        from modalrec.training.trainer import Trainer

        self.set_features(features)
        self.prepare(train)
        Trainer(self).fit(train, valid)

    def _after_load(self) -> None:
        assert self._seen is not None
        self.prepare(self._seen)

    def invalidate(self) -> None:
        """Drop cached embeddings after parameters change."""
        self._cache = None
        self._saved_embeddings = (None, None)

    def scoring_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (user, item) embeddings behind ``score``, computed once per parameter state; after
        ``load`` they are the saved ones, so scores match the saved model bit for bit even where
        the propagation kernels are not deterministic (cuSPARSE, atomics on CUDA)."""
        if self._cache is None:
            saved = self._saved_embeddings
            if saved[0] is not None and saved[1] is not None:
                self._cache = (saved[0], saved[1])
            else:
                was_training = self.module.training
                self.module.eval()
                with torch.no_grad():
                    user, item = self.embeddings()
                self.module.train(was_training)
                self._cache = (user if saved[0] is None else saved[0], item if saved[1] is None else saved[1])
        return self._cache

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        user_emb, item_emb = self.scoring_embeddings()
        return user_emb[users] @ item_emb.T

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The module's tensors, plus the final embeddings where they are computed (not simply a
        parameter), so that a loaded model scores exactly as the saved one."""
        state = dict(self.module.state_dict())
        aliases = {t.data_ptr() for t in state.values() if t.numel()}
        for key, emb in zip(SCORING_KEYS, self.scoring_embeddings()):
            if emb.data_ptr() not in aliases:
                state[key] = emb.detach().clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        saved = tuple(state.pop(key, None) for key in SCORING_KEYS)
        self.module.load_state_dict(state)
        self.invalidate()
        self._saved_embeddings = tuple(None if t is None else t.to(self.device) for t in saved)  # type: ignore[assignment]
