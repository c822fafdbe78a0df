"""The Ray backends: same trial records as local processes, byte-identical features, nothing lost to
a killed worker, resume without recomputation, and a clear error when Ray is not installed.

One local Ray instance with 2 CPUs is shared by the module (Ray takes seconds to start). Functions
and classes defined here run inside Ray workers, which cannot import this test module, so the
module is registered to be pickled by value.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import ray
import torch

from modalrec import io
from modalrec.config import ResourcesConfig, parse_config
from modalrec.data.dataset import Dataset
from modalrec.data.splitting import make_split
from modalrec.errors import ConfigError, DependencyError, FeatureError
from modalrec.experiments.backends import LocalBackend, make_backend
from modalrec.experiments.ray_backend import RayBackend
from modalrec.experiments.runner import Runner
from modalrec.experiments.trial import Trial, run_trial, trial_path
from modalrec.features.extraction import PARTIAL, extract
from modalrec.features.features import Features
from modalrec.features.ray_extraction import RayBatchEncoder, extract_ray, registry_factory
from modalrec.features.registry import EncodedBatch, Extractor, ExtractorInputs, get_extractor
from modalrec.features.store import FeatureStore
from modalrec.ray_support import require_ray

# --- helpers that also run inside Ray workers ---------------------------------------------------


def attempt(markers: Path, name: str) -> int:
    """Count this call in ``markers`` (one file per call); returns the attempt number, from 1."""
    markers.mkdir(parents=True, exist_ok=True)
    (markers / f"{name}-{uuid.uuid4().hex}").touch()
    return len(list(markers.glob(f"{name}-*")))


def crashing_trial(trial: Trial, root: str, threads: int | None, markers: str, before: Sequence[str],
                   after: Sequence[str]) -> dict[str, Any]:
    """``run_trial``, except that the first attempt of a trial labelled in ``before`` kills its worker
    process before training, and one labelled in ``after`` kills it after its record is written."""
    label = f"{trial.model}-{trial.params['lr']}"
    first = attempt(Path(markers), label) == 1
    if first and label in before:
        os._exit(1)
    record = run_trial(trial, root, threads)
    if first and label in after:
        (Path(markers) / f"{label}.written").write_text(str(trial_path(Path(root), trial.key).stat().st_mtime_ns))
        os._exit(1)
    return record


def counting_trial(trial: Trial, root: str, threads: int | None, markers: str) -> dict[str, Any]:
    attempt(Path(markers), trial.key)
    return run_trial(trial, root, threads)


class HashExtractor(Extractor):
    """A cheap deterministic text encoder (sha256 of the text as 8 floats) that can misbehave:
    ``fail`` batch starts raise on their first attempt, ``kill`` batch starts kill the actor."""

    modality = "text"

    def __init__(self, markers: str, fail: Sequence[str] = (), kill: Sequence[str] = ()) -> None:
        super().__init__("hash")
        self.markers, self.fail, self.kill = Path(markers), set(fail), set(kill)

    def inputs(self, items: pd.DataFrame, base_dir: Path | None = None) -> ExtractorInputs:
        return ExtractorInputs([t or None for t in items["title"].tolist()])

    def fingerprint(self) -> dict[str, Any]:
        return {"extractor": "hash", "version": 1}

    @property
    def dim(self) -> int:
        return 8

    def encode(self, values: Sequence[Any]) -> EncodedBatch:
        label = str(values[0])
        first = attempt(self.markers, hashlib.sha256(label.encode()).hexdigest()[:12]) == 1
        if first and label in self.kill:
            os._exit(1)
        if first and label in self.fail:
            raise RuntimeError(f"transient failure at {label}")
        digests = [np.frombuffer(hashlib.sha256(str(v).encode()).digest(), dtype=np.uint32) for v in values]
        return EncodedBatch(np.stack(digests).astype(np.float32) / 2**32, np.ones(len(values), dtype=bool))


def calls(markers: Path) -> int:
    return len(list(markers.glob("*-*"))) if markers.exists() else 0


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance with 2 CPUs for the whole module, shut down after."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


@pytest.fixture
def one_thread():
    """Trials and encoders in Ray workers use one thread each; so does the local reference here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_dataset(folder: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    n_users, n_items = 60, 40
    keys = np.unique(rng.integers(0, n_users, 1500) * n_items + rng.integers(0, n_items, 1500))
    frame = pd.DataFrame({"user_id": keys // n_items, "item_id": keys % n_items})
    items = pd.DataFrame({"item_id": np.arange(n_items).astype(str),
                          "title": ["" if i % 9 == 4 else f"item {i}: a {['red', 'blue', 'green'][i % 3]} thing "
                                    + "with words " * (i % 5) for i in range(n_items)]})
    dataset = Dataset.from_frames(frame, items)
    dataset = dataset.with_split(make_split(dataset.interactions, "random", (0.8, 0.1, 0.1), 0))
    dataset.save(folder)
    FeatureStore(folder).save("noise", Features(rng.standard_normal((n_items, 8)).astype(np.float32)),
                              dataset.item_ids)
    return folder


def experiment(dataset_dir: Path) -> dict:
    return {
        "name": "ray",
        "datasets": [{"name": "tiny", "source": {"format": "dataset", "options": {"path": str(dataset_dir)}},
                      "split": {"protocol": "fixed"}}],
        "features": [{"name": "noise", "kind": "stored"}],
        "feature_sets": {"noise": ["noise"]},
        "models": [{"name": "mostpop"},
                   {"name": "bpr", "params": {"epochs": 2, "eval_every": 1},
                    "search": {"method": "grid", "space": {"lr": [0.01, 0.05], "embedding_size": [8, 16]}}}],
        "seeds": [0],
        "evaluation": {"cutoffs": [5, 10], "valid_metric": "recall@10"},
        "audits": {"shuffled": False, "random": False, "drop_modality": False},
        "resources": {"cpus": 1},
    }


def bpr_trials(dataset_dir: Path, rates: Sequence[float]) -> list[Trial]:
    return [Trial(dataset="tiny", dataset_dir=str(dataset_dir), label="bpr", model="bpr",
                  params={"epochs": 2, "eval_every": 1, "embedding_size": 8, "lr": lr}, stage="final",
                  evaluation={"cutoffs": [10], "valid_metric": "recall@10"}) for lr in rates]


def ignore(trial: Trial, record: dict[str, Any]) -> None:
    pass


# --- without a cluster ---------------------------------------------------------------------------


def test_missing_ray_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(DependencyError, match=r"pip install 'modalrec\[ray\]'"):
        require_ray()
    backend = make_backend("ray", 2)
    with pytest.raises(DependencyError, match=r"ray\[data,tune\]"):
        backend.run(bpr_trials(tmp_path, [0.01]), tmp_path / "out", ignore)
    with pytest.raises(DependencyError, match="not installed"):
        list(RayBatchEncoder(workers=1, factory=HashExtractor)(HashExtractor(str(tmp_path)), ["a"], [(0, 1)]))


def test_resources_are_validated_and_become_task_options(tmp_path):
    raw = experiment(tmp_path)
    for bad, message in (({"cpus": 0}, "resources.cpus"), ({"gpus": -1}, "resources.gpus"),
                         ({"memory_gb": 0}, "resources.memory_gb"), ({"disk": 1}, "resources.disk")):
        with pytest.raises(ConfigError, match=message):
            parse_config({**raw, "resources": bad})
    trial = bpr_trials(tmp_path, [0.01])[0]
    options = RayBackend(resources=ResourcesConfig(cpus=2, memory_gb=1.5)).options(trial)
    assert (options["num_cpus"], options["num_gpus"], options["memory"]) == (2, 0.0, int(1.5 * 1024**3))
    assert options["max_retries"] == 3
    trial.device = "cuda:0"
    assert RayBackend().options(trial)["num_gpus"] == 1.0  # one GPU per trial by default on CUDA
    assert RayBackend(resources=ResourcesConfig(gpus=0.25)).options(trial)["num_gpus"] == 0.25
    with pytest.raises(ConfigError, match="workers"):
        RayBackend(workers=0)


def test_extractors_outside_the_registry_need_a_factory(tmp_path):
    with pytest.raises(ConfigError, match="factory"):
        registry_factory(HashExtractor(str(tmp_path)))
    factory = registry_factory(get_extractor("minilm"))
    assert factory().name == "minilm"


# --- on the shared local cluster -------------------------------------------------------------------


@pytest.mark.slow
def test_ray_trials_match_local_and_resume_without_tasks(ray_session, tmp_path, one_thread):
    data = small_dataset(tmp_path / "data")
    config = parse_config(experiment(data))
    local = Runner(config, tmp_path / "local", LocalBackend(1), progress=False).run()
    markers = tmp_path / "calls"
    backend = RayBackend(workers=2, resources=config.resources,
                         trial_function=functools.partial(counting_trial, markers=str(markers)))
    distributed = Runner(config, tmp_path / "ray", backend, progress=False).run()

    columns = [c for c in local.columns if c != "fit_seconds"]
    pd.testing.assert_frame_equal(distributed[columns], local[columns])
    assert len(local) and set(local["stage"]) == {"selection", "final"}
    for key in local["trial"].unique():
        mine = io.read_json(trial_path(tmp_path / "ray", key))
        theirs = io.read_json(trial_path(tmp_path / "local", key))
        assert mine["metrics"] == theirs["metrics"] and mine["params"] == theirs["params"]
    assert io.read_json(tmp_path / "ray" / "selection.json") == io.read_json(tmp_path / "local" / "selection.json")
    sent = calls(markers)
    assert sent == local["trial"].nunique()  # every trial ran once on Ray

    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "trials").iterdir()}
    again = Runner(config, tmp_path / "ray", backend, progress=False).run()
    pd.testing.assert_frame_equal(again, distributed)
    assert calls(markers) == sent  # resume: nothing was sent to the cluster
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "trials").iterdir()} == stamps


@pytest.mark.slow
def test_a_killed_worker_loses_and_duplicates_nothing(ray_session, tmp_path, one_thread):
    data = small_dataset(tmp_path / "data")
    trials = bpr_trials(data, [0.01, 0.02, 0.03, 0.04])
    reference = [run_trial(trial, tmp_path / "local") for trial in trials]
    out, markers = tmp_path / "ray", tmp_path / "markers"

    finished = RayBackend(workers=2).run(trials[:2], out, ignore)  # an earlier run finished two trials
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    crash = functools.partial(crashing_trial, markers=str(markers), before=["bpr-0.03"], after=["bpr-0.04"])
    seen: list[str] = []
    records = RayBackend(workers=2, trial_function=crash).run(trials, out, lambda t, r: seen.append(t.key))

    assert [r["metrics"] for r in records] == [r["metrics"] for r in reference]
    assert [r["key"] for r in records[:2]] == [r["key"] for r in finished]
    assert [r["metrics"] for r in records[:2]] == [r["metrics"] for r in finished]
    assert sorted(seen) == sorted(t.key for t in trials)  # every trial reported once
    assert len(list(markers.glob("bpr-0.03-*"))) == 2 and len(list(markers.glob("bpr-0.04-*"))) == 2
    assert not list(markers.glob("bpr-0.01-*")) and not list(markers.glob("bpr-0.02-*"))  # never re-sent
    for path, (content, stamp) in before.items():  # finished results untouched
        assert path.read_bytes() == content and path.stat().st_mtime_ns == stamp
    # the record written before the crash was kept, not rewritten, by the retry
    written = int((markers / "bpr-0.04.written").read_text())
    assert trial_path(out, trials[3].key).stat().st_mtime_ns == written
    assert sorted(p.stem for p in (out / "trials").glob("*.json")) == sorted(t.key for t in trials)
    assert len(list((out / "per_user").glob("*.parquet"))) == 2 * len(trials)  # final trials: valid + test
    assert not list(out.rglob("*.tmp*"))


@pytest.mark.slow
def test_bad_input_in_a_trial_is_reported_as_locally_and_not_retried(ray_session, tmp_path):
    data = small_dataset(tmp_path / "data")
    trial = bpr_trials(data, [0.01])[0]
    trial.params["no_such_param"] = 1
    with pytest.raises(ConfigError) as local:
        LocalBackend(1).run([trial], tmp_path / "local", ignore)
    markers = tmp_path / "calls"
    backend = RayBackend(workers=1, trial_function=functools.partial(counting_trial, markers=str(markers)))
    with pytest.raises(ConfigError) as distributed:
        backend.run([trial], tmp_path / "ray", ignore)
    assert str(distributed.value) == str(local.value) and "no_such_param" in str(local.value)
    assert calls(markers) == 1


@pytest.mark.slow
def test_ray_extraction_is_byte_identical_to_local(ray_session, tmp_path, one_thread):
    for name in ("local", "ray"):
        small_dataset(tmp_path / name)
    local = extract(tmp_path / "local", get_extractor("minilm"), batch_size=8, progress=False)
    distributed = extract_ray(tmp_path / "ray", get_extractor("minilm"), workers=2, batch_size=8, progress=False)
    assert distributed.computed_items == local.computed_items == 36  # 4 of 40 items have no text
    for file in ("matrix.npy", "mask.npy", "item_ids.parquet"):
        assert (local.path / file).read_bytes() == (distributed.path / file).read_bytes(), file
    assert distributed.features.manifest["fingerprint_id"] == local.features.manifest["fingerprint_id"]
    again = extract_ray(tmp_path / "ray", get_extractor("minilm"), workers=2, batch_size=8, progress=False)
    assert again.cache_hit and again.computed_items == 0


@pytest.mark.slow
def test_ray_extraction_retries_failed_batches_and_resumes_from_chunks(ray_session, tmp_path):
    for name in ("local", "ray"):
        small_dataset(tmp_path / name)
    reference = extract(tmp_path / "local", HashExtractor(str(tmp_path / "m0")), batch_size=4, progress=False)

    # a first run stops at its 4th batch (after 3 finished) and keeps their chunks
    class Interrupted(Exception):
        pass

    def stop_after_three(extractor, values, ranges):
        for n, (start, end) in enumerate(ranges):
            if n == 3:
                raise Interrupted
            yield start, end, extractor.encode(values[start:end])

    with pytest.raises(Interrupted):
        extract(tmp_path / "ray", HashExtractor(str(tmp_path / "m1")), batch_size=4, progress=False,
                encode_batches=stop_after_three)
    assert len(list((tmp_path / "ray" / "features" / PARTIAL).glob("*/chunk-*.npz"))) == 3

    # the Ray run: one batch raises once, another kills its actor once; both are retried
    values = HashExtractor(str(tmp_path)).inputs(pd.read_parquet(tmp_path / "ray" / "items.parquet")).values
    todo = [v for v in values if v is not None]
    markers = tmp_path / "m2"
    factory = functools.partial(HashExtractor, str(markers), fail=[todo[16]], kill=[todo[24]])
    result = extract_ray(tmp_path / "ray", HashExtractor(str(markers)), workers=2, factory=factory,
                         batch_size=4, progress=False)

    assert (result.resumed_items, result.computed_items) == (12, len(todo) - 12)
    batches = -(-len(todo) // 4)
    assert calls(markers) == (batches - 3) + 2  # finished batches never recomputed; two retried
    for file in ("matrix.npy", "mask.npy"):
        assert (reference.path / file).read_bytes() == (result.path / file).read_bytes(), file
    assert not (tmp_path / "ray" / "features" / PARTIAL / result.features.manifest["fingerprint_id"]).exists()


@pytest.mark.slow
def test_ray_extraction_gives_up_after_its_retries(ray_session, tmp_path):
    small_dataset(tmp_path / "data")
    values = HashExtractor(str(tmp_path)).inputs(pd.read_parquet(tmp_path / "data" / "items.parquet")).values
    first = next(v for v in values if v is not None)

    class Broken(HashExtractor):
        def encode(self, batch: Sequence[Any]) -> EncodedBatch:
            if batch[0] == first:
                attempt(self.markers, "broken")
                if "bad-input" in self.fail:
                    raise FeatureError("this input cannot be encoded", where="item 0", hint="fix item 0")
                raise RuntimeError("always broken")
            return super().encode(batch)

    markers = tmp_path / "m"
    with pytest.raises(FeatureError, match="a batch failed on Ray after 1 retries") as failure:
        extract_ray(tmp_path / "data", Broken(str(markers)), workers=1, factory=functools.partial(Broken, str(markers)),
                    batch_size=4, max_retries=1, progress=False)
    message = str(failure.value)
    assert "RuntimeError: always broken" in message and "rerun" in message and "\n" not in message
    assert len(list(markers.glob("broken-*"))) == 2  # one try and one retry, in the actor
    chunks = list((tmp_path / "data" / "features" / PARTIAL).glob("*/chunk-*.npz"))
    assert all(not c.name.startswith("chunk-000000000-") for c in chunks)  # the broken batch never landed

    # bad input is the user's error: not retried, and reported as raised, where and hint included
    markers = tmp_path / "m2"
    with pytest.raises(FeatureError, match="cannot be encoded") as failure:
        extract_ray(tmp_path / "data", Broken(str(markers)), workers=1, batch_size=4, max_retries=1,
                    factory=functools.partial(Broken, str(markers), fail=["bad-input"]), progress=False)
    assert (failure.value.where, failure.value.hint) == ("item 0", "fix item 0")
    assert len(list(markers.glob("broken-*"))) == 1


@pytest.mark.slow
def test_describe_run_on_ray_equals_local(ray_session, tmp_path, one_thread):
    from modalrec.cli.main import main
    from modalrec.features.descriptions import load_descriptions
    from test_lvlm import build_qwen, make_dataset  # the tiny random Qwen2-VL of the LVLM tests

    model = str(build_qwen(tmp_path / "qwen"))
    command = ["--model", model, "--prompt", "baby", "--pooling", "eos,mean_all", "--batch-size", "2",
               "--max-new-tokens", "6", "--name", "q"]
    local, distributed = make_dataset(tmp_path / "local"), make_dataset(tmp_path / "ray")
    assert main(["describe", "run", str(local), *command]) == 0
    assert main(["describe", "run", str(distributed), *command, "--backend", "ray", "--workers", "2"]) == 0

    table, manifest = load_descriptions(local, "q")
    ray_table, ray_manifest = load_descriptions(distributed, "q")
    pd.testing.assert_frame_equal(ray_table, table)
    assert ray_manifest["identity"] == manifest["identity"] and ray_manifest["computed_items"] == 6
    assert ray_manifest["model_info"]["model_class"] == manifest["model_info"]["model_class"]
    for pooling in ("eos", "mean_all"):
        mine, theirs = FeatureStore(distributed).folder(f"lvlm-q-{pooling}"), FeatureStore(local).folder(f"lvlm-q-{pooling}")
        for file in ("matrix.npy", "mask.npy"):
            assert (mine / file).read_bytes() == (theirs / file).read_bytes(), (pooling, file)
