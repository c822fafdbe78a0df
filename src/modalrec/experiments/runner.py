"""The experiment runner: one config from raw data to results, selection on validation only.

Phases, per data set:
1. prepare the data set (source, filters, split) and its features, cached by content hash;
2. **selection**: each model x feature set is tuned on validation with the first seed (grid or
   TPE); test metrics are never computed for these trials;
3. **final**: the chosen configuration is trained for every seed and evaluated on valid and test;
4. **audit**: content models are retrained with shuffled and random features and with each
   modality dropped, for every seed, so the gain attributable to content can be tested;
5. **cold-item audit** (``audits.cold_item``): the chosen configurations of the content models and
   of the significance reference are retrained on a cold-item copy of each data set (stage
   ``cold``), where held-out items never occur in training and are ranked among themselves.

Each trial is cached by content hash, so a rerun resumes. ``results.parquet`` has one row per
trial x seed x split x metric x cutoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from modalrec import io
from modalrec.config import ExperimentConfig, ModelConfig
from modalrec.data.splitting import DEFAULT_RATIOS
from modalrec.experiments.backends import Backend, LocalBackend
from modalrec.experiments.preparation import prepare_cold_dataset, prepare_dataset, prepare_features
from modalrec.experiments.search import grid, tpe_search
from modalrec.experiments.trial import Trial
from modalrec.models.registry import get_model

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One model on one data set with one feature set: the unit that gets tuned."""

    dataset: str
    dataset_dir: str
    model: ModelConfig
    feature_set: str
    features: list[str]

    @property
    def uses_features(self) -> bool:
        return get_model(self.model.model or self.model.name).uses_features


class Runner:
    def __init__(self, config: ExperimentConfig, out: str | Path, backend: Backend | None = None,
                 progress: bool = True) -> None:
        self.config = config
        self.out = Path(out)
        self.backend = backend or LocalBackend(1)
        self.progress = progress
        self._bar: tqdm | None = None
        self._cold_dirs: dict[str, str] = {}  # data set name -> its cold-item copy (audits.cold_item)

    # --- public ------------------------------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        self.out.mkdir(parents=True, exist_ok=True)
        io.write_json(self.out / "config.json", self.config.model_dump(mode="json"))
        jobs = self._jobs()
        self._bar = tqdm(total=0, desc="trials", unit="trial", disable=None if self.progress else True)
        self._selection_records: list[dict[str, Any]] = []
        chosen = self._select(jobs)
        records = self._selection_records + self._final_and_audit(jobs, chosen)
        self._bar.close()
        results = results_table(records)
        io.write_parquet(self.out / "results.parquet", results)
        io.write_json(self.out / "selection.json", [
            {"dataset": job.dataset, "model": job.model.name, "feature_set": job.feature_set, **chosen[n]}
            for n, job in enumerate(jobs)
        ])
        return results

    # --- phases ------------------------------------------------------------------------------------
    def _jobs(self) -> list[Job]:
        jobs = []
        for dataset_config in self.config.datasets:
            dataset_dir = prepare_dataset(dataset_config, self.out / "datasets")
            prepare_features(dataset_dir, self.config.features, self.config.device)
            split = dataset_config.split
            if self.config.audits.cold_item and split.protocol != "cold-item":
                ratios, seed = (split.ratios, split.seed) if split.protocol != "fixed" else (DEFAULT_RATIOS, 0)
                self._cold_dirs[dataset_config.name] = str(prepare_cold_dataset(dataset_dir, ratios, seed))
            for model in self.config.models:
                probe = Job(dataset_config.name, str(dataset_dir), model, "", [])
                if probe.uses_features:
                    for set_name in model.feature_sets or list(self.config.feature_sets):
                        jobs.append(Job(dataset_config.name, str(dataset_dir), model, set_name,
                                        list(self.config.feature_sets[set_name])))
                else:
                    jobs.append(probe)
        return jobs

    def _trial(self, job: Job, params: dict[str, Any], seed: int, stage: str, variant: str = "real") -> Trial:
        evaluation = self.config.evaluation.model_dump()
        if stage == "cold":  # part of the trial's identity: rank the held-out items only
            evaluation["candidates"] = "held-out"
        return Trial(
            dataset=job.dataset, dataset_dir=job.dataset_dir, label=job.model.name,
            model=job.model.model or job.model.name, params=params, features=job.features,
            feature_set=job.feature_set, variant=variant, seed=seed, stage=stage,
            evaluation=evaluation, device=self.config.device,
        )

    def _run(self, trials: list[Trial]) -> list[dict[str, Any]]:
        assert self._bar is not None
        self._bar.total += len(trials)
        self._bar.refresh()

        def done(trial: Trial, record: dict[str, Any]) -> None:
            self._bar.set_postfix_str(f"{trial.label} {trial.feature_set} {trial.variant} s{trial.seed}")
            self._bar.update(1)

        return self.backend.run(trials, self.out, done)

    def _select(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """The chosen params per job, by the validation metric of the first seed only."""
        metric = self.config.evaluation.valid_metric
        seed = self.config.seeds[0]
        chosen: list[dict[str, Any] | None] = [None] * len(jobs)
        grid_trials: list[tuple[int, Trial]] = []
        for n, job in enumerate(jobs):
            search, base = job.model.search, dict(job.model.params)
            if not search.space:
                chosen[n] = {"params": base, "valid": None}
            elif search.method == "grid":
                grid_trials += [(n, self._trial(job, {**base, **combo}, seed, "selection"))
                                for combo in grid(search.space)]
            else:
                def objective(params: dict[str, Any], job: Job = job, base: dict[str, Any] = base) -> float:
                    record = self._run([self._trial(job, {**base, **params}, seed, "selection")])[0]
                    self._selection_records.append(record)
                    return record["metrics"]["valid"][metric]

                history = tpe_search(search, objective, seed)
                best_params, best_value = max(history, key=lambda pair: pair[1])
                chosen[n] = {"params": {**base, **best_params}, "valid": best_value}
        records = self._run([trial for _, trial in grid_trials])
        self._selection_records += records
        for (n, trial), record in zip(grid_trials, records):
            value = record["metrics"]["valid"][metric]
            current = chosen[n]
            if current is None or value > current["valid"]:  # ties keep the earlier grid point
                chosen[n] = {"params": trial.params, "valid": value}
        return chosen  # type: ignore[return-value]

    def _final_and_audit(self, jobs: list[Job], chosen: list[dict[str, Any]]) -> list[dict[str, Any]]:
        audits = self.config.audits
        trials = []
        for job, pick in zip(jobs, chosen):
            variants = ["real"]
            if job.uses_features:
                variants += ["shuffled"] * audits.shuffled + ["random"] * audits.random
                if audits.drop_modality and len(job.features) > 1:
                    variants += [f"drop:{name}" for name in job.features]
            trials += [self._trial(job, pick["params"], seed, "final", variant)
                       for variant in variants for seed in self.config.seeds]
            cold_dir = self._cold_dirs.get(job.dataset)
            if cold_dir and (job.uses_features or job.model.name == self.config.significance.reference):
                cold_job = replace(job, dataset_dir=cold_dir)
                trials += [self._trial(cold_job, pick["params"], seed, "cold") for seed in self.config.seeds]
        return self._run(trials)


def results_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per trial x split x metric x cutoff (seed and stage are trial fields), in a fixed
    order so a resumed run's table equals a fresh one's."""
    rows = []
    for record in records:
        trial = record["trial"]
        for part in ("valid", "test"):
            metrics = record["metrics"].get(part, {})
            for name, value in sorted(metrics.items()):
                metric, _, cutoff = name.partition("@")
                rows.append({
                    "dataset": trial["dataset"], "model": trial["label"], "model_name": trial["model"],
                    "feature_set": trial["feature_set"], "variant": trial["variant"], "stage": trial["stage"],
                    "seed": trial["seed"], "split": part, "metric": metric, "cutoff": int(cutoff),
                    "value": float(value), "trial": record["key"], "fit_seconds": record["fit_seconds"],
                })
    return pd.DataFrame(rows)
