"""VBPR (both variants), LATTICE, FREEDOM and BM3: any number of modalities, determinism, exact
save/load, and each model's own mechanics checked against formulas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.conftest import random_split

from modalrec.errors import ConfigError, ModelError
from modalrec.features.features import Features
from modalrec.models.base import Recommender
from modalrec.models.graph import knn_graph, symmetric_normalize
from modalrec.models.registry import get_model

MULTIMODAL = ["vbpr", "vbpr-mmrec", "lattice", "freedom", "bm3"]
FAST = {"epochs": 2, "batch_size": 128, "knn_k": 5}


def features(n_items: int, dims: dict[str, int], seed: int = 0) -> dict[str, Features]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, dim in dims.items():
        mask = np.ones(n_items, dtype=bool)
        mask[[1, 2]] = False
        matrix = rng.random((n_items, dim), dtype=np.float32)
        matrix[~mask] = 0
        out[name] = Features(matrix, mask)
    return out


def make(name: str, seed: int = 0, **params) -> Recommender:
    cls = get_model(name)
    known = {f for f in cls.Params.__dataclass_fields__}
    chosen = {k: v for k, v in {**FAST, **params}.items() if k in known}
    return cls(cls.Params(**chosen), seed=seed)


@pytest.fixture(scope="module")
def split():
    return random_split(n_users=50, n_items=40, n=800)


@pytest.mark.parametrize("name", MULTIMODAL)
def test_zero_modalities_refused_with_clear_message(name: str, split) -> None:
    with pytest.raises(ModelError, match="needs at least one feature modality"):
        make(name).fit(split.train, {}, split.valid)


@pytest.mark.parametrize("name", MULTIMODAL)
def test_three_modalities_deterministic_and_exact_round_trip(name: str, split, tmp_path: Path) -> None:
    feats = features(split.train.n_items, {"image": 9, "text": 5, "lvlm": 13})
    a = make(name, seed=3).fit(split.train, feats, split.valid)
    b = make(name, seed=3).fit(split.train, feats, split.valid)
    c = make(name, seed=4).fit(split.train, feats, split.valid)
    users = np.arange(split.train.n_users)
    scores = a.score(users)
    assert torch.isfinite(scores).all()
    assert torch.equal(scores, b.score(users)), "same seed, same data: same scores"
    assert not torch.equal(scores, c.score(users))
    assert a.feature_dims == {"image": 9, "text": 5, "lvlm": 13}
    projections = getattr(a.module, "projections", None)
    if projections is not None:
        assert [p.in_features for p in projections] == [9, 5, 13], "one projection per modality"

    for f in feats.values():  # the model keeps its own copy of the features
        f.matrix[:] = 0
    assert torch.equal(a.score(users), scores)
    a.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")  # no features needed to score
    assert torch.equal(loaded.score(users), scores)


@pytest.mark.parametrize("name", ["lattice", "freedom", "bm3"])
def test_tuned_features_round_trip(name: str, split, tmp_path: Path) -> None:
    feats = features(split.train.n_items, {"image": 6, "text": 4})
    model = make(name, tune_features=True, reg_weight=0.1).fit(split.train, feats, split.valid)
    m = model.module
    assert not torch.equal(m.tuned_0, m.feat_0), "the features were fine-tuned"
    torch.testing.assert_close(m.feat_0, torch.from_numpy(feats["image"].matrix))
    model.save(tmp_path / "m")
    users = np.arange(10)
    assert torch.equal(Recommender.load(tmp_path / "m").score(users), model.score(users))


def test_vbpr_scores_follow_the_paper_formula(split) -> None:
    feats = features(split.train.n_items, {"image": 6, "text": 4})
    model = make("vbpr", reg_e=0.01).fit(split.train, feats, split.valid)
    m = model.module
    f = torch.cat([torch.from_numpy(x.matrix) for x in feats.values()], dim=1).double()
    expected = (m.beta_item.double()[None, :] + m.gamma_user.double() @ m.gamma_item.double().T
                + m.theta_user.double() @ (f @ m.E.double()).T + (f @ m.beta_prime.double())[None, :])
    torch.testing.assert_close(model.score(np.arange(split.train.n_users)).double(), expected, atol=1e-5, rtol=1e-5)
    assert float(m.beta_prime.detach().abs().sum()) > 0, "the visual bias is trained"


def test_vbpr_mmrec_shapes_and_scores(split) -> None:
    feats = features(split.train.n_items, {"image": 6, "text": 4})
    model = make("vbpr-mmrec", embedding_size=8).fit(split.train, feats, split.valid)
    m = model.module
    assert m.user.shape == (split.train.n_users, 16) and m.item.shape == (split.train.n_items, 8)
    f = torch.cat([torch.from_numpy(x.matrix) for x in feats.values()], dim=1)
    items = torch.cat([m.item, m.linear(f)], dim=1)
    torch.testing.assert_close(model.score(np.arange(5)), (m.user[:5] @ items.T).detach(), atol=1e-5, rtol=1e-5)


def test_vbpr_loss_matches_scores(split) -> None:
    """The training loss ranks with the very scores used at test time."""
    feats = features(split.train.n_items, {"image": 6})
    model = make("vbpr", reg_weight=0.0).fit(split.train, feats, split.valid)
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([6, 7, 8])
    scores = model.score(users.numpy())
    diff = scores[torch.arange(3), pos] - scores[torch.arange(3), neg]
    expected = torch.nn.functional.softplus(-diff).mean()
    torch.testing.assert_close(model.loss(users, pos, neg).detach(), expected, atol=1e-5, rtol=1e-5)


def test_vbpr_squared_objective_matches_the_per_factor_formula(split) -> None:
    """The one-pass objective (``bpr_objective`` over concatenated tables) gives the loss and every
    gradient of the paper's formula written factor by factor."""
    feats = features(split.train.n_items, {"image": 6, "text": 4})
    model = make("vbpr", reg_weight=0.3, reg_e=0.01, epochs=1).fit(split.train, feats, split.valid)
    m = model.module
    users, pos, neg = torch.tensor([0, 1, 2, 1, 5]), torch.tensor([3, 4, 5, 4, 9]), torch.tensor([6, 3, 8, 2, 4])
    f = torch.cat([torch.from_numpy(x.matrix) for x in feats.values()], dim=1)

    def reference() -> torch.Tensor:
        gu, tu = m.gamma_user[users], m.theta_user[users]
        score = {}
        for name, items in (("pos", pos), ("neg", neg)):
            content = f[items] @ m.E
            score[name] = m.beta_item[items] + (gu * m.gamma_item[items]).sum(1) + (tu * content).sum(1) \
                + f[items] @ m.beta_prime
        squares = sum(t.pow(2).sum() for t in (gu, tu, m.gamma_item[pos], m.gamma_item[neg],
                                                 m.beta_item[pos], m.beta_item[neg]))
        return (torch.nn.functional.softplus(score["neg"] - score["pos"]).mean() + 0.3 * squares / (2 * len(users))
                + 0.01 * (m.E.pow(2).sum() + m.beta_prime.pow(2).sum()) / 2)

    results = []
    for loss_of in (lambda: model.loss(users, pos, neg), reference):
        m.zero_grad(set_to_none=True)
        loss = loss_of()
        loss.backward()
        results.append((loss.detach(), {n: q.grad.clone() for n, q in m.named_parameters()}))
    (ours, our_grads), (want, want_grads) = results
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-6)
    assert our_grads.keys() == want_grads.keys()
    for name in want_grads:
        torch.testing.assert_close(our_grads[name], want_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_bm3_ignores_negatives(split) -> None:
    feats = features(split.train.n_items, {"image": 6, "text": 4})
    model = make("bm3").fit(split.train, feats, split.valid)
    users, pos = torch.tensor([0, 1, 2, 1]), torch.tensor([3, 4, 5, 4])
    torch.manual_seed(0)
    a = model.loss(users, pos, torch.tensor([6, 7, 8, 9]))
    torch.manual_seed(0)
    b = model.loss(users, pos, torch.tensor([10, 11, 12, 13]))
    assert torch.equal(a, b)


def test_bm3_loss_and_gradients_match_the_authors_formulation(split) -> None:
    """Without dropout the targets are the detached online rows, so the loss can be written as the
    authors' code writes it: cosine terms per pair over whole matrices, predictor applied to every
    row, then gathered. Loss and every gradient must agree."""
    feats = features(split.train.n_items, {"image": 6, "text": 4})
    model = make("bm3", dropout=0.0, reg_weight=0.1, cl_weight=2.0, tune_features=True).fit(split.train, feats, None)
    m = model.module
    users, pos = torch.tensor([0, 1, 2, 1, 7, 0]), torch.tensor([3, 4, 5, 4, 3, 9])

    def reference() -> torch.Tensor:
        user_emb, item_emb = model.forward()
        cos = lambda a, b: F.cosine_similarity(a, b, dim=-1)  # noqa: E731
        u_online, i_online = m.predictor(user_emb), m.predictor(item_emb)
        u_target, i_target = user_emb.detach(), item_emb.detach()
        loss = (1 - cos(u_online[users], i_target[pos]).mean()) + (1 - cos(i_online[pos], u_target[users]).mean())
        modal = 0.0
        for i, proj in enumerate(m.projections):
            z = proj(getattr(m, f"tuned_{i}"))
            z_online = m.predictor(z)[pos]
            modal = modal + (1 - cos(z_online, i_target[pos]).mean()) + (1 - cos(z_online, z.detach()[pos]).mean())
        reg = (user_emb.norm() + item_emb.norm()) / model.n_items
        return loss + 0.1 * reg + 2.0 * modal

    def loss_and_grads(loss_fn) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        m.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()  # not autograd.grad: the tuned features' gradient goes to .grad directly
        return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}

    got, got_grads = loss_and_grads(lambda: model.loss(users, pos, pos))
    want, want_grads = loss_and_grads(reference)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert got_grads.keys() == want_grads.keys() and "tuned_1" in got_grads
    for name in got_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_predicted_agreement_gradient_matches_autograd_including_tiny_rows() -> None:
    from modalrec.models.bm3 import predicted_agreement, unit_rows
    torch.manual_seed(0)
    x = torch.randn(12, 5, dtype=torch.float64)
    x[3] *= 1e-10  # with a zero bias its prediction's norm is below eps: clamped
    weight, bias = torch.randn(4, 5, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    targets = torch.randn(12, 4, dtype=torch.float64)
    for a in (x, weight, bias):
        a.requires_grad_(True)
    got = torch.autograd.grad(predicted_agreement(x, weight, bias, targets), (x, weight, bias))
    want = torch.autograd.grad((unit_rows(x @ weight.T + bias) * targets).sum(), (x, weight, bias))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    rows = torch.arange(12) != 3  # finite differences would step across the clamp on row 3
    assert torch.autograd.gradcheck(lambda a, b, c: predicted_agreement(a, b, c, targets[rows]),
                                    (x.detach()[rows].requires_grad_(True), weight, bias))


def test_freedom_prunes_each_epoch_and_scores_on_full_graph(split) -> None:
    feats = features(split.train.n_items, {"image": 6, "text": 4})
    model = make("freedom", dropout=0.8).fit(split.train, feats, split.valid)
    keep = int(split.train.nnz * 0.2)
    model.on_epoch_start(1)
    first = model.train_adj.a.to_dense()
    assert int((first != 0).sum()) == 2 * keep  # both directions of each kept edge
    model.on_epoch_start(1)
    assert torch.equal(model.train_adj.a.to_dense(), first), "an epoch's pruning is reproducible"
    model.on_epoch_start(2)
    assert not torch.equal(model.train_adj.a.to_dense(), first)
    full = model.norm_adj.a.to_dense()
    assert int((full != 0).sum()) == 2 * split.train.nnz
    # item graph: 0.1 image + 0.9 text of 1/k-normalised kNN graphs; items without content empty
    graph = model.item_graph().toarray()
    np.testing.assert_allclose(graph.sum(axis=1)[3:], 1.0, rtol=1e-5)
    assert (graph[[1, 2]] == 0).all() and (graph[:, [1, 2]] == 0).all()


def test_freedom_modality_weights_checked(split) -> None:
    feats = features(split.train.n_items, {"a": 6, "b": 4, "c": 3})
    with pytest.raises(ConfigError, match="3 modalities"):
        make("freedom", modality_weights=(0.5, 0.5)).fit(split.train, feats, split.valid)


def test_freedom_alignment_loss_reaches_projections(split) -> None:
    feats = features(split.train.n_items, {"image": 6, "text": 4})
    model = make("freedom", reg_weight=0.1, epochs=1).fit(split.train, feats, split.valid)
    model.module.zero_grad()
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([2, 3, 2]), torch.tensor([4, 2, 5])  # repeats
    loss = model.loss(users, pos, neg)
    loss.backward()
    assert all(p.weight.grad is not None and p.weight.grad.abs().sum() > 0 for p in model.module.projections)
    with torch.no_grad():  # the paper's formula, every row projected on its own
        user_emb, item_emb = model.forward(model.train_adj)
        u = user_emb[users]
        expected = F.softplus((u * item_emb[neg]).sum(1) - (u * item_emb[pos]).sum(1)).mean()
        for proj, name in zip(model.module.projections, ["image", "text"]):
            f = torch.from_numpy(feats[name].matrix)
            expected += 0.1 * F.softplus((u * proj(f[neg])).sum(1) - (u * proj(f[pos])).sum(1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_lattice_learned_graph_rebuilt_once_per_epoch(split) -> None:
    feats = features(split.train.n_items, {"image": 6, "text": 4})
    model = make("lattice", epochs=1).fit(split.train, feats, split.valid)
    m = model.module
    batch = (torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    model.on_epoch_start(2)
    m.zero_grad()
    model.loss(*batch).backward()
    assert m.modal_weight.grad is not None and m.modal_weight.grad.abs().sum() > 0
    assert m.projections[0].weight.grad.abs().sum() > 0, "first batch: gradient through the learned graph"
    m.zero_grad()
    model.loss(*batch).backward()
    assert m.modal_weight.grad is None or m.modal_weight.grad.abs().sum() == 0, "later batches: graph detached"
    assert m.item.grad.abs().sum() > 0


def test_lattice_lambda_one_keeps_only_the_original_graph(split) -> None:
    feats = features(split.train.n_items, {"image": 6})
    model = make("lattice", lambda_coeff=1.0, epochs=1).fit(split.train, feats, split.valid)
    with torch.no_grad():
        rows, cols, values = model.item_edges()
    n = split.train.n_items
    dense = torch.zeros(n, n).index_put((rows, cols), values, accumulate=True).numpy()
    expected = symmetric_normalize(knn_graph(feats["image"].matrix, 5, feats["image"].mask, weighted=True))
    np.testing.assert_allclose(dense, expected.toarray(), atol=1e-6)
