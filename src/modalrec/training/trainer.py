"""The epoch loop shared by every gradient model.

Adam on the model's own loss, seeded uniform negative sampling, validation every ``eval_every``
epochs on a chosen metric, early stopping with patience, best weights kept and restored, and a
checkpoint after every epoch (when ``model.checkpoint_dir`` is set) so an interrupted fit resumes
where it stopped and gives exactly the scores of an uninterrupted one.

Early stopping: training stops once ``patience`` validations in a row did not beat the best
value (MMRec stops one validation later: it waits until the count *exceeds* its
``stopping_step``; the best epoch, and so the restored model, is the same).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.utils.deterministic
from tqdm.auto import tqdm

from modalrec import io
from modalrec.data.interactions import Interactions
from modalrec.errors import ConfigError, ModelError
from modalrec.evaluation.evaluator import Evaluator
from modalrec.evaluation.metrics import RANKING_METRICS
from modalrec.models.row_gather import release_gradient_buffers
from modalrec.training.sampler import PairwiseSampler

if TYPE_CHECKING:
    from modalrec.training.gradient import GradientRecommender

log = logging.getLogger(__name__)
CHECKPOINT = "trainer.pt"
EpochCallback = Callable[[dict[str, Any]], None]


def parse_metric(name: str) -> tuple[str, int]:
    """``'recall@20'`` -> ``('recall', 20)``, with a clear error for anything else."""
    metric, sep, cutoff = str(name).partition("@")
    if not sep or metric not in RANKING_METRICS or not cutoff.isdigit() or int(cutoff) < 1:
        raise ConfigError(f"bad validation metric {name!r}", where="valid_metric",
                          hint=f"write METRIC@K with METRIC one of {', '.join(RANKING_METRICS)}")
    return metric, int(cutoff)


def make_adam(parameters: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with the fused kernel where torch has one for these tensors (CPU and CUDA floats): the
    same update rule in one pass over memory, about 3x faster than the per-op loop on CPU."""
    try:
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)


class Trainer:
    """Fits a ``GradientRecommender`` in place and records ``model.history``.

    ``callbacks`` (and the model's own ``callbacks`` list) are called with each epoch's record
    (epoch, loss, seconds, and the validation metric when validated); an exception raised there
    stops training, leaving the last checkpoint to resume from.
    """

    def __init__(self, model: GradientRecommender, evaluator: Evaluator | None = None,
                 progress: bool = True, callbacks: list[EpochCallback] | None = None,
                 checkpoint_every: int = 1) -> None:
        self.model = model
        self.params = model.params
        metric, cutoff = parse_metric(self.params.valid_metric)
        self.metric_key = f"{metric}@{cutoff}"
        self.evaluator = evaluator or Evaluator(cutoffs=[cutoff], device=str(model.device),
                                                candidates=self.params.valid_candidates)
        self.progress = progress
        self.callbacks = list(callbacks or []) + list(getattr(model, "callbacks", []))
        if checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every must be positive, got {checkpoint_every}")
        self.checkpoint_every = checkpoint_every

    def fit(self, train: Interactions, valid: Interactions | None) -> None:
        """Train in place. On CPU, deterministic kernels make a seed reproduce bit for bit
        (gradient accumulation over repeated indices is otherwise summed in thread order).
        Deterministic mode also fills every new tensor with NaN before the kernel overwrites it,
        a debugging aid that no result depends on; it is switched off, since it costs as much as
        the rest of a step where gradients are large dense tensors (BM3's tuned features)."""
        deterministic = torch.utils.deterministic
        previous = torch.are_deterministic_algorithms_enabled()
        previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        previous_fill = deterministic.fill_uninitialized_memory
        torch.use_deterministic_algorithms(self.model.device.type == "cpu" or previous, warn_only=True)
        deterministic.fill_uninitialized_memory = False
        try:
            self._fit(train, valid)
        finally:
            release_gradient_buffers()
            torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
            deterministic.fill_uninitialized_memory = previous_fill

    def _check_params(self) -> None:
        p = self.params
        for key in ("epochs", "eval_every", "patience", "batch_size", "lr_decay_epochs"):
            value = getattr(p, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}",
                                  where=f"{self.model.name}.{key}")
        if not p.lr > 0:
            raise ConfigError(f"lr must be positive, got {p.lr}", where=f"{self.model.name}.lr")
        if p.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {p.weight_decay}",
                              where=f"{self.model.name}.weight_decay")

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        model, p = self.model, self.params
        self._check_params()
        if valid is not None and valid.nnz == 0:
            log.warning("%s: the validation set is empty; training %d epochs without early stopping",
                        model.name, p.epochs)
            valid = None
        sampler = PairwiseSampler(train, p.batch_size, model.seed, model.device)
        optimizer = make_adam(list(model.module.parameters()), p.lr, p.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda e: p.lr_decay ** (e / p.lr_decay_epochs))
        state: dict[str, Any] = {"epoch": 0, "best": -math.inf, "best_epoch": 0, "bad": 0,
                                 "best_state": None, "history": [], "done": False}
        fingerprint = self._fingerprint(train, valid)
        self._resume(state, fingerprint, optimizer, scheduler, sampler)

        first = state["epoch"] + 1
        last = first - 1 if state["done"] else p.epochs
        bar = tqdm(range(first, last + 1), desc=model.name, unit="epoch",
                   disable=None if self.progress else True, leave=False)
        for epoch in bar:
            start = time.perf_counter()
            model.module.train()
            model.on_epoch_start(epoch)
            lr = optimizer.param_groups[0]["lr"]
            total = torch.zeros((), dtype=torch.float64, device=model.device)
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
            record: dict[str, Any] = {"epoch": epoch, "loss": mean_loss, "lr": lr,
                                      "train_seconds": time.perf_counter() - start}
            postfix = {"loss": f"{mean_loss:.4f}"}
            if valid is not None and (epoch % p.eval_every == 0 or epoch == p.epochs):
                result = self.evaluator.run_model(model, valid, [train])
                value = result.metrics[self.metric_key]
                record.update({self.metric_key: value, "eval_seconds": result.seconds})
                if value > state["best"]:
                    state.update(best=value, best_epoch=epoch, bad=0, best_state=self._copy_state())
                else:
                    state["bad"] += 1
                postfix[self.metric_key] = f"{value:.4f}"
                log.info("%s epoch %d loss %.4f %s %.4f", model.name, epoch, mean_loss, self.metric_key, value)
            else:
                log.info("%s epoch %d loss %.4f", model.name, epoch, mean_loss)
            bar.set_postfix(postfix)
            state["history"].append(record)
            state["epoch"] = epoch
            state["done"] = state["bad"] >= p.patience or epoch == p.epochs
            if state["done"] or epoch % self.checkpoint_every == 0:
                self._checkpoint(state, fingerprint, optimizer, scheduler, sampler)
            for callback in self.callbacks:
                callback(record)
            if state["done"]:
                if state["bad"] >= p.patience:
                    log.info("%s: early stop at epoch %d (best %d, %s %.4f)", model.name, epoch,
                             state["best_epoch"], self.metric_key, state["best"])
                break
        bar.close()
        if state["best_state"] is not None:
            model.module.load_state_dict(state["best_state"])
        model.invalidate()
        model.history = state["history"]
        model.best_epoch = state["best_epoch"] or state["epoch"]

    def _copy_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.module.state_dict().items()}

    def _fingerprint(self, train: Interactions, valid: Interactions | None) -> str:
        """What a checkpoint must match to be resumed: model, hyperparameters, seed and data."""
        model = self.model
        return json.dumps({
            "model": model.name,
            "params": dataclasses.asdict(model.params),
            "seed": model.seed,
            "train": _digest(train),
            "valid": None if valid is None else _digest(valid),
        }, sort_keys=True, default=str)

    # --- checkpoints ------------------------------------------------------------------------------
    def _checkpoint(self, state: dict[str, Any], fingerprint: str, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, sampler: PairwiseSampler) -> None:
        folder = self.model.checkpoint_dir
        if folder is None:
            return
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        payload = {
            **state,
            "fingerprint": fingerprint,
            "module": self.model.module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "sampler": json.dumps(sampler.get_state()),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.model.device.type == "cuda" else [],
            "history": json.dumps(state["history"]),
        }
        with io.atomic_path(folder / CHECKPOINT) as tmp:
            torch.save(payload, tmp)

    def _resume(self, state: dict[str, Any], fingerprint: str, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, sampler: PairwiseSampler) -> None:
        folder = self.model.checkpoint_dir
        if folder is None or not (Path(folder) / CHECKPOINT).exists():
            return
        path = Path(folder) / CHECKPOINT
        try:
            payload = torch.load(path, weights_only=True, map_location=self.model.device)
        except Exception as error:  # a truncated or foreign file: say so instead of a traceback
            raise ModelError(f"cannot read the training checkpoint: {error}", where=str(path),
                             hint="delete it to train from scratch") from error
        if payload.get("fingerprint") != fingerprint:
            raise ModelError(
                "the training checkpoint belongs to another model, hyperparameters, seed or data",
                where=str(path), hint="use a fresh checkpoint folder, or delete the checkpoint")
        self.model.module.load_state_dict(payload["module"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        sampler.set_state(json.loads(payload["sampler"]))
        torch.set_rng_state(payload["torch_rng"].cpu())
        if payload["cuda_rng"] and self.model.device.type == "cuda":
            torch.cuda.set_rng_state_all([s.cpu() for s in payload["cuda_rng"]])
        for key in ("epoch", "best", "best_epoch", "bad", "best_state", "done"):
            state[key] = payload[key]
        state["history"] = json.loads(payload["history"])
        log.info("resumed %s after epoch %d%s", self.model.name, state["epoch"],
                 " (already finished)" if state["done"] else "")


def _digest(part: Interactions) -> str:
    """A short hash of an interaction matrix's pattern (shape, row pointers, columns)."""
    digest = hashlib.sha1(f"{part.n_users},{part.n_items}".encode())
    digest.update(np.ascontiguousarray(part.indptr, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(part.indices, dtype=np.int64).tobytes())
    return digest.hexdigest()
