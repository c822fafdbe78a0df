"""Do the multimodal models really use content? A small synthetic world where content drives
preference: with features made from the true item attributes, VBPR (both variants) beats BPR-MF and
LATTICE beats LightGCN; with the feature rows permuted across items, the gain is gone.

FREEDOM uses the content (true features beat permuted ones clearly) but its pruned backbone stays
below LightGCN on this world, so it is checked against itself. BM3 is the exception, by design of
its authors' code: content reaches the user and item embeddings only through the predictor it
shares with the modality terms (every target is detached), so the model hardly uses it. The last
test pins that mechanism down.

The second audit, on a cold-item split (test items never seen in training, ranked among
themselves): the collaborative models rank them at chance, the content models well above it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalrec.data.sources.synthetic import ATTRIBUTES, SyntheticConfig, simulate
from modalrec.data.splitting import cold_item_split, random_split
from modalrec.evaluation.evaluator import Evaluator
from modalrec.features.features import Features
from modalrec.models.registry import get_model

pytestmark = pytest.mark.slow

TRAINING = {"epochs": 30, "batch_size": 256, "lr": 0.01, "patience": 1000}
COUNTERPART = {"vbpr": "bpr", "vbpr-mmrec": "bpr", "lattice": "lightgcn"}
EXTRA = {"lightgcn": {"n_layers": 2}, "vbpr-mmrec": {"reg_weight": 1e-3}}


def attribute_features(attributes, modality: str, rng: np.random.Generator, noise: float) -> np.ndarray:
    """One-hot codes of the attributes a modality shows (its own and the shared ones), plus noise."""
    blocks = []
    for name, (shown_in, values) in ATTRIBUTES.items():
        if shown_in in (modality, "both"):
            index = {v: i for i, v in enumerate(values)}
            blocks.append(np.eye(len(values))[[index[v] for v in attributes[name]]])
    onehot = np.concatenate(blocks, axis=1)
    return (onehot + noise * rng.standard_normal(onehot.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def world():
    dataset = simulate(SyntheticConfig(n_users=300, n_items=150, content_weight=0.9, seed=0,
                                       interactions_per_user=20, popularity_skew=0.5))
    attributes = dataset.extras["attributes"].set_index("item_id").loc[dataset.item_ids.astype(str)]
    rng = np.random.default_rng(0)
    raw = {m: attribute_features(attributes, m, rng, noise=0.3) for m in ("image", "text")}
    split = random_split(dataset.interactions, (0.8, 0.1, 0.1), seed=0)
    permutation = np.random.default_rng(1).permutation(split.train.n_items)
    return split, raw, permutation


@pytest.fixture(scope="module")
def recall(world):
    split, raw, permutation = world
    cache: dict[tuple[str, str], float] = {}

    def run(name: str, kind: str) -> float:
        if (name, kind) not in cache:
            cls = get_model(name)
            features = None
            if cls.uses_features:
                features = {m: Features(f if kind == "real" else f[permutation]) for m, f in raw.items()}
            torch.set_num_threads(1)
            model = cls(cls.Params(**TRAINING, **EXTRA.get(name, {})), seed=0).fit(split.train, features, split.valid)
            cache[name, kind] = Evaluator(cutoffs=[20]).evaluate(model, split, "test").metrics["recall@20"]
        return cache[name, kind]

    return run


@pytest.mark.parametrize("name", list(COUNTERPART))
def test_real_content_helps_and_shuffled_content_does_not(name: str, recall) -> None:
    baseline = recall(COUNTERPART[name], "none")
    real = recall(name, "real")
    shuffled = recall(name, "shuffled")
    gain, shuffled_gain = real - baseline, shuffled - baseline
    assert gain > 0.03, f"{name} {real:.4f} should beat {COUNTERPART[name]} {baseline:.4f} with true content"
    assert shuffled_gain < gain / 2, (
        f"{name}: gain {gain:+.4f} with true content but {shuffled_gain:+.4f} with rows permuted")


def test_freedom_uses_content(recall) -> None:
    real, shuffled = recall("freedom", "real"), recall("freedom", "shuffled")
    assert real - shuffled > 0.03, f"freedom: {real:.4f} with true content, {shuffled:.4f} with rows permuted"


def test_bm3_content_reaches_embeddings_only_through_the_shared_predictor(world) -> None:
    split, raw, _ = world
    cls = get_model("bm3")
    model = cls(cls.Params(epochs=1, batch_size=256), seed=0)
    model.fit(split.train, {m: Features(f) for m, f in raw.items()})
    m = model.module
    users, pos = torch.arange(20), torch.arange(20)
    base = cls.Params(epochs=1, batch_size=256, cl_weight=0.0)
    for cl_weight in (0.0, 2.0):
        model.params = cls.Params(**{**base.__dict__, "cl_weight": cl_weight})
        m.zero_grad()
        torch.manual_seed(0)
        model.loss(users, pos, pos).backward()
        if cl_weight == 0.0:
            grads = (m.user.grad.clone(), m.item.grad.clone())
    # the modality terms change no gradient of the id embeddings ...
    torch.testing.assert_close(m.user.grad, grads[0])
    torch.testing.assert_close(m.item.grad, grads[1])
    # ... only the projections' and the shared predictor's
    assert all(p.weight.grad.abs().sum() > 0 for p in m.projections)


@pytest.fixture(scope="module")
def cold_recall(world):
    _, raw, _ = world
    dataset = simulate(SyntheticConfig(n_users=300, n_items=150, content_weight=0.9, seed=0,
                                       interactions_per_user=20, popularity_skew=0.5))
    split = cold_item_split(dataset.interactions, (0.7, 0.1, 0.2), seed=0)
    n_candidates = len(np.unique(split.test.items))

    def run(name: str) -> float:
        cls = get_model(name)
        features = {m: Features(f) for m, f in raw.items()} if cls.uses_features else None
        torch.set_num_threads(1)
        params = cls.Params(**TRAINING, **EXTRA.get(name, {}), valid_candidates="held-out")
        model = cls(params, seed=0).fit(split.train, features, split.valid)
        return Evaluator(cutoffs=[5], candidates="held-out").evaluate(model, split, "test").metrics["recall@5"]

    return run, 5 / n_candidates


def test_cold_items_are_ranked_by_content_only(cold_recall) -> None:
    run, chance = cold_recall  # 30 cold test items: recall@5 of a random ranking is about 1/6
    collaborative = {name: run(name) for name in ("bpr", "lightgcn", "bm3")}
    for name, value in collaborative.items():  # bm3: content never reaches its item embeddings
        assert abs(value - chance) < 0.05, f"{name} ranks cold items at {value:.4f}, chance {chance:.4f}"
    for name in ("vbpr", "vbpr-mmrec", "freedom", "lattice"):
        value = run(name)
        assert value > chance + 0.05, f"{name} ranks cold items at {value:.4f}, chance {chance:.4f}"
