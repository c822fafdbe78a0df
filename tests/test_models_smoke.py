"""One test over every registered model, now and in the future, plus registry and CLI discovery.

Models are collected from the registry at collection time, so a new model file is tested without
editing this one. Generic rules give each model a short, valid configuration: gradient models get
``epochs=2`` (and a small batch), feature models get two random modalities of different widths, and
a model that takes one modality by a ``modality`` parameter gets the first.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import random_split
from modalrec.cli import models as models_cli
from modalrec.errors import ConfigError, ModelError
from modalrec.features.features import Features
from modalrec.models import registry
from modalrec.models.base import Recommender

MODELS = registry.model_names()
MODALITIES = {"image": 12, "text": 7}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny data: a second torch thread only adds synchronisation overhead."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def smoke_params(cls: type[Recommender]) -> object:
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    overrides: dict[str, object] = {}
    if "epochs" in fields:
        overrides["epochs"] = 2
    if "batch_size" in fields:
        overrides["batch_size"] = 128
    if "modality" in fields:
        overrides["modality"] = next(iter(MODALITIES))
    return cls.Params(**overrides)


def smoke_features(cls: type[Recommender], n_items: int) -> dict[str, Features] | None:
    if not cls.uses_features:
        return None
    rng = np.random.default_rng(0)
    mask = np.ones(n_items, dtype=bool)
    mask[1] = False  # one item without content, as real data has
    return {name: Features(rng.random((n_items, dim), dtype=np.float32), mask)
            for name, dim in MODALITIES.items()}


def fit(name: str, seed: int = 0, device: str = "cpu"):
    cls = registry.get_model(name)
    split = random_split()
    model = cls(smoke_params(cls), seed=seed, device=device)
    model.fit(split.train, smoke_features(cls, split.train.n_items), split.valid)
    return model, split


def test_registry_is_not_empty() -> None:
    assert {"mostpop", "bpr", "lightgcn", "knn", "ease", "attribute_knn"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_fits_scores_masks_and_round_trips(name: str, tmp_path: Path) -> None:
    model, split = fit(name)
    n_users, n_items = split.train.n_users, split.train.n_items
    users = np.arange(n_users)
    scores = model.score(users)
    assert scores.shape == (n_users, n_items)
    assert scores.dtype == torch.float32
    assert torch.isfinite(scores).all(), f"{name} gave non-finite scores"
    assert model.score(np.array([], dtype=np.int64)).shape == (0, n_items)
    with pytest.raises(ModelError, match="out of range"):
        model.score(np.array([n_users]))

    items, values = model.recommend(users, k=5)
    assert items.shape == (n_users, 5)
    train = split.train.csr().toarray() > 0
    shown = np.isfinite(values)
    assert shown.all(), "every tiny-data user has more than 5 unseen items"
    assert not train[np.repeat(users, 5), items.ravel()].any(), f"{name} recommended a seen item"

    loaded = Recommender.load(model.save(tmp_path / name))
    assert type(loaded) is type(model)
    assert torch.equal(loaded.score(users), scores), f"{name}: save/load changed the scores"
    loaded_items, _ = loaded.recommend(users, k=5)
    assert np.array_equal(loaded_items, items)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_is_deterministic_for_a_seed(name: str) -> None:
    a, split = fit(name, seed=5)
    b, _ = fit(name, seed=5)
    users = np.arange(split.train.n_users)
    assert torch.equal(a.score(users), b.score(users)), f"{name}: same seed, different scores"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", MODELS)
def test_every_model_trains_scores_and_moves_on_cuda(name: str, tmp_path: Path) -> None:
    """The same rules on a GPU, and a model trained there loads on a CPU with the same scores."""
    model, split = fit(name, device="cuda")
    users = np.arange(split.train.n_users)
    scores = model.score(users)
    assert scores.device.type == "cuda" and scores.shape == (split.train.n_users, split.train.n_items)
    assert torch.isfinite(scores).all(), f"{name} gave non-finite scores on cuda"
    items, values = model.recommend(users, k=5)
    train = split.train.csr().toarray() > 0
    assert np.isfinite(values).all()
    assert not train[np.repeat(users, 5), items.ravel()].any(), f"{name} recommended a seen item on cuda"
    loaded = Recommender.load(model.save(tmp_path / name), device="cpu")
    torch.testing.assert_close(loaded.score(users), scores.cpu(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in MODELS if registry.get_model(n).uses_features])
def test_feature_models_refuse_to_fit_without_features(name: str) -> None:
    cls = registry.get_model(name)
    with pytest.raises(ModelError, match="needs at least one feature modality"):
        cls(smoke_params(cls)).fit(random_split().train)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_documents_its_reference_and_defaults(name: str) -> None:
    cls = registry.get_model(name)
    assert cls.reference, f"{name} has no reference"
    specs = registry.param_specs(cls)
    assert [s[0] for s in specs] == [f.name for f in dataclasses.fields(cls.Params)]
    cls.Params()  # every parameter has a default


# --- parameters from the command line ----------------------------------------------------------------

def test_parse_params_coerces_and_checks() -> None:
    knn = registry.get_model("knn")
    params = registry.parse_params(knn, {"k": "25", "shrink": "10", "similarity": "jaccard"})
    assert (params.k, params.shrink, params.similarity) == (25, 10.0, "jaccard")
    with pytest.raises(ConfigError, match="has no parameter 'neighbours'") as info:
        registry.parse_params(knn, {"neighbours": "5"})
    assert "k" in str(info.value.hint)
    with pytest.raises(ConfigError, match="knn.k must be int, got '2.5'"):
        registry.parse_params(knn, {"k": "2.5"})
    with pytest.raises(ConfigError, match="knn.similarity must be one of cosine, asymmetric, jaccard"):
        registry.parse_params(knn, {"similarity": "pearson"})
    bpr = registry.get_model("bpr")
    with pytest.raises(ConfigError, match="bpr.lr must be float, got 'fast'"):
        registry.parse_params(bpr, {"lr": "fast"})
    attr = registry.get_model("attribute_knn")
    assert registry.parse_params(attr, {"modality": "none"}).modality is None
    with pytest.raises(ConfigError, match="bad parameter 'lr'"):
        registry.parse_assignments(["lr"])


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown model 'bpr2'") as info:
        registry.get_model("bpr2")
    assert "lightgcn" in str(info.value.hint)


# --- `modalrec models list` / `show` -----------------------------------------------------------------

def run_cli(*argv: str) -> str:
    parser = argparse.ArgumentParser()
    models_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    return out.getvalue()


def test_models_list_shows_every_model_with_features_reference_and_defaults() -> None:
    text = run_cli("models", "list")
    for name in MODELS:
        cls = registry.get_model(name)
        header = next(line for line in text.splitlines() if line.startswith(name + "  "))
        assert ("uses features" if cls.uses_features else "no features") in header
        assert cls.reference in header
    assert "    k: int = 40" in text
    assert "    similarity: cosine|asymmetric|jaccard = 'cosine'" in text
    assert "    reg_weight: float = 500.0" in text  # EASE
    assert "    modality: str | None = None" in text


def test_models_show_explains_parameters() -> None:
    text = run_cli("models", "show", "lightgcn")
    assert "He et al., SIGIR 2020" in text
    row = next(line for line in text.splitlines() if line.startswith("n_layers"))
    assert "3" in row and "Propagation depth" in row
    assert any(line.startswith("patience") and "without improvement" in line for line in text.splitlines())
    with pytest.raises(ConfigError, match="unknown model"):
        run_cli("models", "show", "nope")
