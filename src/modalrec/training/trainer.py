"""The epoch loop shared by every gradient model.

Adam on the model's own loss, seeded uniform negative sampling, validation every ``eval_every``
epochs on a chosen metric, early stopping with patience, best weights kept and restored, and an
optional checkpoint after each validation so an interrupted fit resumes where it stopped.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from modalrec import io
from modalrec.data.interactions import Interactions
from modalrec.errors import ConfigError, ModelError
from modalrec.evaluation.evaluator import Evaluator
from modalrec.evaluation.metrics import RANKING_METRICS
from modalrec.training.sampler import PairwiseSampler

if TYPE_CHECKING:
    from modalrec.training.gradient import GradientRecommender

log = logging.getLogger(__name__)
CHECKPOINT = "trainer.pt"


def parse_metric(name: str) -> tuple[str, int]:
    """``'recall@20'`` -> ``('recall', 20)``, with a clear error for anything else."""
    metric, sep, cutoff = name.partition("@")
    if not sep or metric not in RANKING_METRICS or not cutoff.isdigit() or int(cutoff) < 1:
        raise ConfigError(f"bad validation metric {name!r}",
                          hint=f"write METRIC@K with METRIC one of {', '.join(RANKING_METRICS)}")
    return metric, int(cutoff)


class Trainer:
    """Fits a ``GradientRecommender`` in place and records ``model.history``."""

    def __init__(self, model: GradientRecommender, evaluator: Evaluator | None = None,
                 progress: bool = True) -> None:
        self.model = model
        self.params = model.params
        _, cutoff = parse_metric(self.params.valid_metric)
        self.evaluator = evaluator or Evaluator(cutoffs=[cutoff], device=str(model.device))
        self.progress = progress

    def fit(self, train: Interactions, valid: Interactions | None) -> None:
        """Train in place. On CPU, deterministic kernels make a seed reproduce bit for bit
        (gradient accumulation over repeated indices is otherwise summed in thread order)."""
        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(self.model.device.type == "cpu" or previous, warn_only=True)
        try:
            self._fit(train, valid)
        finally:
            torch.use_deterministic_algorithms(previous)

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        model, p = self.model, self.params
        if p.epochs < 1 or p.eval_every < 1 or p.patience < 1:
            raise ConfigError("epochs, eval_every and patience must be positive integers")
        sampler = PairwiseSampler(train, p.batch_size, model.seed, model.device)
        optimizer = torch.optim.Adam(model.module.parameters(), lr=p.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda e: p.lr_decay ** (e / p.lr_decay_epochs))
        state: dict[str, Any] = {"epoch": 0, "best": -math.inf, "best_epoch": 0, "bad": 0,
                                 "best_state": None, "history": []}
        self._resume(state, optimizer, scheduler, sampler)

        bar = tqdm(range(state["epoch"] + 1, p.epochs + 1), desc=model.name, unit="epoch",
                   disable=None if self.progress else True, leave=False)
        for epoch in bar:
            start = time.perf_counter()
            model.module.train()
            model.on_epoch_start(epoch)
            total = torch.zeros((), device=model.device)
            for users, pos, neg in sampler.epoch():
                optimizer.zero_grad(set_to_none=True)
                loss = model.loss(users, pos, neg)
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(users)
            scheduler.step()
            model.invalidate()
            mean_loss = float(total) / train.nnz
            if not math.isfinite(mean_loss):
                raise ModelError(f"{model.name}: training loss became {mean_loss} at epoch {epoch}",
                                 hint="lower the learning rate (--param lr=...) or the regularisation")
            record: dict[str, Any] = {"epoch": epoch, "loss": mean_loss,
                                      "train_seconds": time.perf_counter() - start}
            stop = False
            if valid is not None and (epoch % p.eval_every == 0 or epoch == p.epochs):
                result = self.evaluator.run(model.score, valid, [train])
                value = result.metrics[p.valid_metric]
                record.update({p.valid_metric: value, "eval_seconds": result.seconds})
                if value > state["best"]:
                    state.update(best=value, best_epoch=epoch, bad=0,
                                 best_state=copy.deepcopy(model.module.state_dict()))
                else:
                    state["bad"] += 1
                stop = state["bad"] >= p.patience
                bar.set_postfix(loss=f"{mean_loss:.4f}", **{p.valid_metric: f"{value:.4f}"})
                log.info("%s epoch %d loss %.4f %s %.4f", model.name, epoch, mean_loss, p.valid_metric, value)
            state["history"].append(record)
            state["epoch"] = epoch
            if record.get(p.valid_metric) is not None:
                self._checkpoint(state, optimizer, scheduler, sampler)
            if stop:
                log.info("%s: early stop at epoch %d (best %d)", model.name, epoch, state["best_epoch"])
                break
        bar.close()
        if state["best_state"] is not None:
            model.module.load_state_dict(state["best_state"])
        model.invalidate()
        model.history = state["history"]
        model.best_epoch = state["best_epoch"] or state["epoch"]

    # --- checkpoints ------------------------------------------------------------------------------
    def _checkpoint(self, state: dict[str, Any], optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, sampler: PairwiseSampler) -> None:
        folder = self.model.checkpoint_dir
        if folder is None:
            return
        payload = {
            **state,
            "module": self.model.module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "sampler": json.dumps(sampler.get_state()),
            "torch_rng": torch.get_rng_state(),
            "history": json.dumps(state["history"]),
        }
        with io.atomic_path(folder / CHECKPOINT) as tmp:
            torch.save(payload, tmp)

    def _resume(self, state: dict[str, Any], optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, sampler: PairwiseSampler) -> None:
        folder = self.model.checkpoint_dir
        if folder is None or not (folder / CHECKPOINT).exists():
            return
        payload = torch.load(folder / CHECKPOINT, weights_only=True)
        self.model.module.load_state_dict(payload["module"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        sampler.set_state(json.loads(payload["sampler"]))
        torch.set_rng_state(payload["torch_rng"])
        for key in ("epoch", "best", "best_epoch", "bad", "best_state"):
            state[key] = payload[key]
        state["history"] = json.loads(payload["history"])
        log.info("resumed %s from epoch %d", self.model.name, state["epoch"])
