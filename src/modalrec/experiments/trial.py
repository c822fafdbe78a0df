"""One trial: train a configured model on one data set with one seed and evaluate it.

A trial is identified by the hash of everything that defines it. Its record
(``trials/<key>.json``) is written last and atomically, after its per-user tables, so a killed run
leaves either a complete trial or none, and a rerun skips exactly the finished ones.

Selection trials are evaluated on validation only: their test metrics are never computed, so
hyperparameter choice cannot read the test set. Trials whose evaluation says ``candidates:
held-out`` (the cold-item audit) rank only the held-out items of the part they evaluate, for early
stopping as for the reported metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from modalrec import io
from modalrec.config import content_hash
from modalrec.data.dataset import Dataset
from modalrec.evaluation.evaluator import Evaluator
from modalrec.experiments.single_run import load_features
from modalrec.experiments.variants import apply_variant
from modalrec.models.registry import get_model, parse_params

log = logging.getLogger(__name__)

STAGES = ("selection", "final", "cold")


@dataclass
class Trial:
    dataset: str
    dataset_dir: str
    label: str
    model: str
    params: dict[str, Any]
    features: list[str] = field(default_factory=list)
    feature_set: str = ""
    variant: str = "real"
    seed: int = 0
    stage: str = "selection"
    evaluation: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"

    @property
    def key(self) -> str:
        identity = dataclasses.asdict(self)
        identity.pop("device")
        identity.pop("dataset_dir")  # the data set's folder name already carries its content hash
        identity["dataset_folder"] = Path(self.dataset_dir).name
        return content_hash(identity)

    @property
    def parts(self) -> tuple[str, ...]:
        return ("valid",) if self.stage == "selection" else ("valid", "test")


def trial_path(root: Path, key: str) -> Path:
    return root / "trials" / f"{key}.json"


def load_record(root: Path, trial: Trial) -> dict[str, Any] | None:
    path = trial_path(root, trial.key)
    return io.read_json(path) if path.exists() else None


def run_trial(trial: Trial, root: str | Path, threads: int | None = None) -> dict[str, Any]:
    """Run ``trial`` unless its record exists; return the record."""
    root = Path(root)
    done = load_record(root, trial)
    if done is not None:
        return done
    if threads:
        import torch

        torch.set_num_threads(threads)
    dataset = Dataset.load(trial.dataset_dir)
    split = dataset.require_split()
    model_cls = get_model(trial.model)
    params = dict(trial.params)
    evaluation = dict(trial.evaluation)
    valid_metric = evaluation.pop("valid_metric", "recall@20")
    fields = {f.name for f in dataclasses.fields(model_cls.Params)}
    if "valid_metric" in fields:
        params.setdefault("valid_metric", valid_metric)
    candidates = evaluation.pop("candidates", "all")
    if "valid_candidates" in fields:
        params["valid_candidates"] = candidates
    features = apply_variant(load_features(dataset, trial.features), trial.variant, trial.seed)
    model = model_cls(parse_params(model_cls, params), seed=trial.seed, device=trial.device)
    start = time.perf_counter()
    model.fit(split.train, features, split.valid)
    fit_seconds = time.perf_counter() - start
    evaluator = Evaluator(device=trial.device, candidates=candidates, **evaluation)
    metrics: dict[str, dict[str, float]] = {}
    for part in trial.parts:
        result = evaluator.evaluate(model, split, part)
        metrics[part] = result.metrics
        table = pd.DataFrame({"user": result.users, **result.per_user})
        io.write_parquet(root / "per_user" / f"{trial.key}-{part}.parquet", table)
    record = {
        "key": trial.key,
        "trial": dataclasses.asdict(trial),
        "params": dataclasses.asdict(model.params),
        "metrics": metrics,
        "fit_seconds": fit_seconds,
        "best_epoch": getattr(model, "best_epoch", None),
        "history": list(getattr(model, "history", None) or []),
        "hit_epoch_cap": _hit_epoch_cap(model),
    }
    if record["hit_epoch_cap"]:
        log.warning("trial %s %s %s seed %d ran to its epoch cap without early stopping (best epoch %s): "
                    "it may not have converged; raise epochs", trial.label, trial.feature_set, trial.variant,
                    trial.seed, record["best_epoch"])
    io.write_json(trial_path(root, trial.key), record)
    log.info("trial %s %s %s seed %d: %s", trial.label, trial.feature_set, trial.variant, trial.seed,
             {p: round(m.get(valid_metric, float("nan")), 4) for p, m in metrics.items()})
    return record


def _hit_epoch_cap(model: Any) -> bool | None:
    """Whether an epoch-trained model stopped at ``epochs`` rather than by early stopping, a sign
    that it was still improving (None for models without epochs). The learning curve itself is
    kept in the record's ``history``."""
    epochs = getattr(model.params, "epochs", None)
    history = getattr(model, "history", None)
    if not isinstance(epochs, int) or not history:
        return None
    best = getattr(model, "best_epoch", 0) or 0
    after_best = [h for h in history if "eval_seconds" in h and h["epoch"] > best]  # validated epochs
    stopped_by_patience = len(after_best) >= getattr(model.params, "patience", 1)
    return history[-1]["epoch"] >= epochs and not stopped_by_patience


def per_user_values(root: Path, key: str, part: str) -> pd.DataFrame:
    return pd.read_parquet(root / "per_user" / f"{key}-{part}.parquet")
