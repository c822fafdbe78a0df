"""The experiment runner: selection on validation only, resume without lost or duplicated rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from modalrec.config import parse_config
from modalrec.data.dataset import Dataset
from modalrec.data.splitting import make_split
from modalrec.evaluation.evaluator import Evaluator
from modalrec.experiments import trial as trial_module
from modalrec.experiments.runner import Runner
from modalrec.features.features import Features
from modalrec.features.store import FeatureStore


def small_dataset(folder: Path, seed: int = 0) -> Path:
    """A random data set with a split and one stored feature, saved to ``folder``."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 80, 50
    keys = np.unique(rng.integers(0, n_users, 2400) * n_items + rng.integers(0, n_items, 2400))
    frame = pd.DataFrame({"user_id": keys // n_items, "item_id": keys % n_items,
                          "rating": rng.integers(1, 6, len(keys)).astype(float)})
    dataset = Dataset.from_frames(frame, pd.DataFrame({"item_id": np.arange(n_items).astype(str),
                                                       "title": [f"item {i}" for i in range(n_items)]}))
    dataset = dataset.with_split(make_split(dataset.interactions, "random", (0.8, 0.1, 0.1), 0))
    dataset.save(folder)
    FeatureStore(folder).save("noise", Features(rng.standard_normal((n_items, 8)).astype(np.float32)),
                              dataset.item_ids)
    return folder


def config_dict(dataset_dir: Path, **overrides) -> dict:
    raw = {
        "name": "tiny",
        "datasets": [{"name": "tiny", "source": {"format": "dataset", "options": {"path": str(dataset_dir)}},
                      "split": {"protocol": "fixed"}}],
        "features": [{"name": "noise", "kind": "stored"}],
        "feature_sets": {"noise": ["noise"]},
        "models": [
            {"name": "mostpop"},
            {"name": "bpr", "params": {"epochs": 3, "eval_every": 1},
             "search": {"method": "grid", "space": {"lr": [0.001, 0.05], "embedding_size": [8, 16]}}},
        ],
        "seeds": [0, 1],
        "evaluation": {"cutoffs": [5, 10], "valid_metric": "recall@10"},
        "audits": {"shuffled": True, "random": True, "drop_modality": True},
        "significance": {"reference": "mostpop"},
    }
    raw.update(overrides)
    return raw


def test_selection_never_evaluates_test(tmp_path, monkeypatch):
    data = small_dataset(tmp_path / "data")
    config = parse_config(config_dict(data))
    seen: list[tuple[str, str]] = []
    original = Evaluator.evaluate

    def spy(self, model, split, part="test"):
        seen.append((current_stage[0], part))
        if current_stage[0] == "selection" and part == "test":
            raise AssertionError("selection read the test split")
        return original(self, model, split, part)

    current_stage = [""]
    run_trial = trial_module.run_trial

    def tracking_run_trial(trial, root, threads=None):
        current_stage[0] = trial.stage
        return run_trial(trial, root, threads)

    monkeypatch.setattr(Evaluator, "evaluate", spy)
    monkeypatch.setattr("modalrec.experiments.backends.run_trial", tracking_run_trial)
    results = Runner(config, tmp_path / "out", progress=False).run()

    assert ("selection", "valid") in seen and ("final", "test") in seen
    selection = results[results["stage"] == "selection"]
    assert set(selection["split"]) == {"valid"}
    assert len(selection["trial"].unique()) == 4  # the 2 x 2 grid, first seed only
    assert set(selection["seed"]) == {0}
    # the chosen configuration is the best on validation recall@10
    valid = selection[(selection["metric"] == "recall") & (selection["cutoff"] == 10)]
    best_trial = valid.sort_values("value", ascending=False, kind="stable")["trial"].iloc[0]
    best_params = trial_module.load_record(tmp_path / "out", _trial_from_key(tmp_path / "out", best_trial))["trial"]["params"]
    final = results[(results["stage"] == "final") & (results["model"] == "bpr")]
    chosen = {trial_module.load_record(tmp_path / "out", _trial_from_key(tmp_path / "out", key))["trial"]["params"]["lr"]
              for key in final["trial"].unique()}
    assert chosen == {best_params["lr"]}


def _trial_from_key(root: Path, key: str) -> trial_module.Trial:
    record = trial_module.io.read_json(trial_module.trial_path(root, key))
    return trial_module.Trial(**record["trial"])


def test_final_and_audit_rows_cover_every_seed_and_variant(tmp_path):
    data = small_dataset(tmp_path / "data")
    raw = config_dict(data, models=[{"name": "mostpop"},
                                    {"name": "attribute_knn", "feature_sets": ["noise"]}])
    results = Runner(parse_config(raw), tmp_path / "out", progress=False).run()
    final = results[results["stage"] == "final"]
    assert set(final["seed"]) == {0, 1}
    variants = set(final[final["model"] == "attribute_knn"]["variant"])
    assert variants == {"real", "shuffled", "random"}  # one modality: nothing to drop
    keys = ["trial", "split", "metric", "cutoff"]
    assert not final.duplicated(keys).any()
    assert set(final["split"]) == {"valid", "test"}


def test_cold_item_audit_retrains_content_models_and_the_reference_on_cold_items(tmp_path):
    data = small_dataset(tmp_path / "data")
    raw = config_dict(data, models=[{"name": "mostpop"}, {"name": "attribute_knn", "feature_sets": ["noise"]},
                                    {"name": "bpr", "params": {"epochs": 2}}],
                      audits={"shuffled": True, "random": False, "drop_modality": False, "cold_item": True})
    results = Runner(parse_config(raw), tmp_path / "out", progress=False).run()
    cold = results[results["stage"] == "cold"]
    # content models and the significance reference (mostpop), not the other baselines
    assert set(cold["model"]) == {"attribute_knn", "mostpop"}
    assert set(cold["seed"]) == {0, 1} and set(cold["split"]) == {"valid", "test"}
    assert set(cold["variant"]) == {"real"}
    key = cold[cold["model"] == "attribute_knn"]["trial"].iloc[0]
    trial = _trial_from_key(tmp_path / "out", key)
    split = Dataset.load(trial.dataset_dir).require_split()
    assert split.protocol == "cold-item"
    assert not set(split.test.items) & set(split.train.items)  # test items never seen in training
    assert FeatureStore(Path(trial.dataset_dir)).exists("noise")  # features came along, not re-made
    # the cold rows are evaluated among held-out items only: recomputed here, to the bit
    record = trial_module.io.read_json(trial_module.trial_path(tmp_path / "out", key))
    from modalrec.models.registry import get_model, parse_params

    model_cls = get_model(trial.model)
    model = model_cls(parse_params(model_cls, trial.params), seed=trial.seed)
    model.fit(split.train, {"noise": FeatureStore(Path(trial.dataset_dir)).load("noise")}, split.valid)
    evaluator = Evaluator(cutoffs=[5, 10], candidates="held-out")
    assert evaluator.evaluate(model, split, "test").metrics == record["metrics"]["test"]
    assert Evaluator(cutoffs=[5, 10]).evaluate(model, split, "test").metrics != record["metrics"]["test"]
    # the warm results are untouched by the audit
    assert set(results[results["stage"] == "final"]["model"]) == {"mostpop", "attribute_knn", "bpr"}


def test_rerun_is_a_cache_hit(tmp_path, monkeypatch):
    data = small_dataset(tmp_path / "data")
    config = parse_config(config_dict(data))
    first = Runner(config, tmp_path / "out", progress=False).run()

    def recompute(name):
        raise AssertionError(f"trial of {name} recomputed")

    monkeypatch.setattr(trial_module, "get_model", recompute)
    second = Runner(config, tmp_path / "out", progress=False).run()
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.slow
def test_resume_after_kill_loses_and_duplicates_nothing(tmp_path):
    data = small_dataset(tmp_path / "data")
    raw = config_dict(data)
    raw["models"][1]["params"]["epochs"] = 8
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "modalrec", "run", str(config_path), "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "trials").glob("*.json"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = {p.name: p.stat().st_mtime_ns for p in (out / "trials").glob("*.json")}
    assert len(finished_before) >= 3 and not (out / "results.parquet").exists()

    subprocess.run(command, env=env, check=True, capture_output=True)
    resumed = pd.read_parquet(out / "results.parquet")
    for name, mtime in finished_before.items():  # finished trials were not recomputed
        assert (out / "trials" / name).stat().st_mtime_ns == mtime

    fresh_out = tmp_path / "fresh"
    subprocess.run([*command[:-1], str(fresh_out)], env=env, check=True, capture_output=True)
    fresh = pd.read_parquet(fresh_out / "results.parquet")
    keys = ["trial", "split", "metric", "cutoff"]
    assert not resumed.duplicated(keys).any()
    columns = [c for c in resumed.columns if c != "fit_seconds"]
    pd.testing.assert_frame_equal(resumed[columns].sort_values(keys).reset_index(drop=True),
                                  fresh[columns].sort_values(keys).reset_index(drop=True))


def test_trial_record_keeps_the_learning_curve_and_flags_the_epoch_cap(tmp_path, caplog):
    data = small_dataset(tmp_path / "data")
    common = dict(dataset="tiny", dataset_dir=str(data), label="bpr", model="bpr", stage="final",
                  evaluation={"cutoffs": [10], "valid_metric": "recall@10"})
    capped = trial_module.run_trial(trial_module.Trial(
        params={"epochs": 4, "eval_every": 2, "patience": 50}, **common), tmp_path / "out")
    assert [h["epoch"] for h in capped["history"]] == [1, 2, 3, 4]
    assert ["recall@10" in h for h in capped["history"]] == [False, True, False, True]
    assert capped["hit_epoch_cap"] is True
    assert "epoch cap" in caplog.text
    # patience 1 with lr 0: no validation can beat the first, so training stops by patience
    stopped = trial_module.run_trial(trial_module.Trial(
        params={"epochs": 40, "eval_every": 1, "patience": 1, "lr": 1e-12}, **common), tmp_path / "out")
    assert stopped["hit_epoch_cap"] is False and len(stopped["history"]) == stopped["best_epoch"] + 1
    popularity = trial_module.run_trial(trial_module.Trial(
        dataset="tiny", dataset_dir=str(data), label="mostpop", model="mostpop", params={}, stage="final",
        evaluation={"cutoffs": [10], "valid_metric": "recall@10"}), tmp_path / "out")
    assert popularity["hit_epoch_cap"] is None and popularity["history"] == []


def test_pool_workers_end_with_a_killed_runner(tmp_path):
    """A runner killed with SIGKILL must not leave its pool workers running trials."""
    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signal is Linux only")
    pids = tmp_path / "pids"
    script = f"""
import multiprocessing, time
from concurrent.futures import ProcessPoolExecutor
from modalrec.experiments.backends import exit_with_parent
import os
if __name__ == "__main__":
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"),
                               initializer=exit_with_parent, initargs=(os.getpid(),))
    futures = [pool.submit(time.sleep, 120) for _ in range(2)]
    time.sleep(3)
    open({str(pids)!r}, "w").write(" ".join(str(p.pid) for p in multiprocessing.active_children()))
    time.sleep(120)
"""
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while time.time() < deadline and not (pids.exists() and pids.read_text()):
        time.sleep(0.1)
    workers = [int(p) for p in pids.read_text().split()]
    assert workers, "the pool started no worker"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    alive = workers
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [w for w in alive if _running(w)]
    assert not alive, f"pool workers {alive} outlived the killed runner"


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped by init, a zombie just waits for that)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
