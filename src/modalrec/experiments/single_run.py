"""One training run as a folder: ``run.json`` (what was asked), ``model/`` and ``metrics.json``.

This is what ``modalrec train``, ``evaluate`` and ``recommend`` operate on. Re-running ``train``
with the same settings resumes from the trainer checkpoint or reports the finished run; a run
folder holding a different configuration is never overwritten.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalrec import io
from modalrec.data.dataset import Dataset
from modalrec.errors import ConfigError
from modalrec.evaluation.evaluator import EvaluationResult, Evaluator
from modalrec.features.features import FeatureSet
from modalrec.models.base import Recommender
from modalrec.models.registry import get_model, parse_params

log = logging.getLogger(__name__)


@dataclass
class RunSpec:
    """Everything that defines a training run."""

    dataset: str
    model: str
    params: dict[str, Any]
    seed: int = 0
    features: list[str] = dataclasses.field(default_factory=list)
    device: str = "cpu"

    def identity(self) -> dict[str, Any]:
        """The parts that must match for a run folder to be resumed (device may differ)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "device"}


def load_features(dataset: Dataset, names: list[str]) -> FeatureSet:
    if not names:
        return {}
    from modalrec.features.store import FeatureStore

    assert dataset.path is not None
    return FeatureStore(dataset.path).load_set(names)


def train_run(spec: RunSpec, out: str | Path) -> Recommender:
    """Fit ``spec`` on its data set's split and save the run under ``out``."""
    out = Path(out)
    meta_path = out / "run.json"
    if meta_path.exists():
        previous = io.read_json(meta_path)
        if previous["spec"] != spec.identity():
            raise ConfigError(
                "this run folder holds a different run", where=str(out),
                hint="choose a new --out folder, or delete the old run yourself",
            )
        if previous.get("finished"):
            log.info("run already finished: %s", out)
            return Recommender.load(out / "model", device=spec.device)
    elif out.exists() and any(out.iterdir()):
        raise ConfigError("output folder exists and is not a modalrec run", where=str(out),
                          hint="choose an empty or new --out folder")
    dataset = Dataset.load(spec.dataset)
    split = dataset.require_split()
    model_cls = get_model(spec.model)
    params = parse_params(model_cls, spec.params)
    features = load_features(dataset, spec.features)
    io.write_json(meta_path, {"spec": spec.identity(), "finished": False})
    model = model_cls(params, seed=spec.seed, device=spec.device)
    if hasattr(model, "checkpoint_dir"):
        model.checkpoint_dir = out / "checkpoint"
    start = time.perf_counter()
    model.fit(split.train, features, split.valid)
    seconds = time.perf_counter() - start
    model.save(out / "model")
    io.write_json(meta_path, {
        "spec": spec.identity(),
        "params": dataclasses.asdict(model.params),
        "fit_seconds": seconds,
        "best_epoch": getattr(model, "best_epoch", None),
        "finished": True,
    })
    return model


def load_run(run: str | Path, device: str = "cpu") -> tuple[RunSpec, Dataset, Recommender]:
    run = Path(run)
    meta_path = run / "run.json"
    if not meta_path.exists():
        raise ConfigError("not a modalrec run folder (run.json missing)", where=str(run),
                          hint="create one with `modalrec train DIR --model NAME --out RUN`")
    meta = io.read_json(meta_path)
    if not meta.get("finished"):
        raise ConfigError("this run has not finished training", where=str(run),
                          hint="re-run the same `modalrec train` command to resume it")
    spec = RunSpec(**meta["spec"], device=device)
    return spec, Dataset.load(spec.dataset), Recommender.load(run / "model", device=device)


def evaluate_run(run: str | Path, evaluator: Evaluator) -> dict[str, EvaluationResult]:
    """Evaluate on validation and test; write ``metrics.json`` and per-user Parquet tables."""
    run = Path(run)
    _, dataset, model = load_run(run, device=str(evaluator.device))
    split = dataset.require_split()
    results = {part: evaluator.evaluate(model, split, part) for part in ("valid", "test")}
    for part, result in results.items():
        table = pd.DataFrame({"user": result.users, **result.per_user})
        io.write_parquet(run / f"per_user_{part}.parquet", table)
    io.write_json(run / "metrics.json", {part: r.metrics for part, r in results.items()})
    return results


def recommend_run(run: str | Path, user_ids: list[str], k: int) -> pd.DataFrame:
    """Top-k external item ids (and titles where known) for the given external user ids."""
    _, dataset, model = load_run(run)
    users = dataset.user_index(user_ids)
    items, scores = model.recommend(users, k)
    rows = []
    for user_id, item_row, score_row in zip(user_ids, items, scores):
        for rank, (item, score) in enumerate(zip(item_row, score_row), start=1):
            if not np.isfinite(score):
                continue
            row = {"user": user_id, "rank": rank, "item": dataset.item_ids[item], "score": float(score)}
            if "title" in dataset.items:
                row["title"] = dataset.items["title"].iloc[item]
            rows.append(row)
    return pd.DataFrame(rows)
