"""LightGCN: propagation against a dense matrix reference, the loss by hand, the graph built once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import modalrec.models.lightgcn as lightgcn_module
from modalrec.data.interactions import Interactions
from modalrec.errors import ConfigError
from modalrec.models.lightgcn import LightGCN, LightGCNParams


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny data: a second torch thread only adds synchronisation overhead."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_train() -> Interactions:
    rng = np.random.default_rng(0)
    dense = rng.random((12, 9)) < 0.3
    dense[:, 8] = False  # an item without interactions: an isolated node
    dense[0, 0] = True
    users, items = dense.nonzero()
    return Interactions.from_arrays(users, items, 12, 9)


def dense_propagation(user: np.ndarray, item: np.ndarray, train: Interactions, layers: int) -> np.ndarray:
    """The paper's matrix form: E = sum_k 1/(K+1) (D^-1/2 A D^-1/2)^k E0, written densely."""
    r = train.csr().toarray().astype(np.float64)
    n_users, n_items = r.shape
    a = np.zeros((n_users + n_items, n_users + n_items))
    a[:n_users, n_users:] = r
    a[n_users:, :n_users] = r.T
    degree = a.sum(1)
    inv = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 0.0)
    norm = inv[:, None] * a * inv[None, :]
    e = np.vstack([user, item]).astype(np.float64)
    total, layer = e.copy(), e.copy()
    for _ in range(layers):
        layer = norm @ layer
        total += layer
    return total / (layers + 1)


def fitted(layers: int, **extra) -> tuple[LightGCN, Interactions]:
    train = small_train()
    model = LightGCN(LightGCNParams(n_layers=layers, epochs=2, embedding_size=4, **extra), seed=1)
    model.fit(train)
    return model, train


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_propagation_matches_dense_reference(layers: int) -> None:
    model, train = fitted(layers)
    user = model.module.user.detach().numpy()
    item = model.module.item.detach().numpy()
    expected = dense_propagation(user, item, train, layers)
    got_user, got_item = model.embeddings()
    np.testing.assert_allclose(got_user.detach().numpy(), expected[:12], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_item.detach().numpy(), expected[12:], rtol=1e-5, atol=1e-6)
    scores = model.score(np.arange(12)).numpy()
    np.testing.assert_allclose(scores, expected[:12] @ expected[12:].T, rtol=1e-4, atol=1e-6)


def test_isolated_item_keeps_only_its_share_of_layer_zero() -> None:
    model, _ = fitted(2)
    _, item = model.embeddings()
    np.testing.assert_allclose(item[8].detach().numpy(), model.module.item[8].detach().numpy() / 3, rtol=1e-6)


@pytest.mark.parametrize("style", ["norm", "squared"])
def test_loss_by_hand(style: str) -> None:
    model, train = fitted(2, reg_weight=0.3, reg_style=style)
    users, pos, neg = torch.tensor([0, 3, 3]), torch.tensor([0, 1, 2]), torch.tensor([5, 6, 7])
    e = dense_propagation(model.module.user.detach().numpy(), model.module.item.detach().numpy(), train, 2)
    u, i, j = e[users.numpy()], e[12 + pos.numpy()], e[12 + neg.numpy()]
    diff = (u * i).sum(1) - (u * j).sum(1)
    ranking = np.mean(np.log1p(np.exp(-diff)))
    ego = [model.module.user.detach().numpy()[users.numpy()],
           model.module.item.detach().numpy()[pos.numpy()], model.module.item.detach().numpy()[neg.numpy()]]
    if style == "norm":
        penalty = sum(np.linalg.norm(t) for t in ego) / 3
    else:
        penalty = sum((t**2).sum() for t in ego) / (2 * 3)
    got = model.loss(users, pos, neg).item()
    assert got == pytest.approx(ranking + 0.3 * penalty, rel=1e-5)


def test_graph_is_built_once_per_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = lightgcn_module.normalized_adjacency

    def counting(train: Interactions):
        calls.append(1)
        return original(train)

    monkeypatch.setattr(lightgcn_module, "normalized_adjacency", counting)
    fitted(2, eval_every=1)
    assert len(calls) == 1


def test_negative_layers_rejected() -> None:
    with pytest.raises(ConfigError, match="n_layers"):
        LightGCN(LightGCNParams(n_layers=-1)).fit(small_train())


def test_gradient_through_sparse_propagation_matches_dense_autograd() -> None:
    model, train = fitted(2, reg_weight=0.0)
    users, pos, neg = torch.tensor([0, 3, 5]), torch.tensor([0, 1, 2]), torch.tensor([5, 6, 8])
    model.module.zero_grad()
    model.loss(users, pos, neg).backward()
    sparse_grad = torch.cat([model.module.user.grad, model.module.item.grad]).clone()

    dense = torch.tensor(model.adjacency.to_dense().numpy(), dtype=torch.float64)
    ego = torch.cat([model.module.user, model.module.item]).detach().double().requires_grad_()
    total, layer = ego, ego
    for _ in range(2):
        layer = dense @ layer
        total = total + layer
    final = total / 3
    u, i, j = final[users], final[12 + pos], final[12 + neg]
    torch.nn.functional.softplus((u * j).sum(1) - (u * i).sum(1)).mean().backward()
    np.testing.assert_allclose(sparse_grad.numpy(), ego.grad.numpy(), rtol=1e-4, atol=1e-7)


def test_loaded_model_scores_from_the_saved_embeddings(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modalrec.models.base import Recommender

    model, _ = fitted(2)
    scores = model.score(np.arange(12))
    loaded = Recommender.load(model.save(tmp_path / "m"))
    # Propagation is not run again: scores come from the stored final embeddings, so they match
    # even where sparse kernels are not bit-for-bit reproducible (cuSPARSE on CUDA).
    monkeypatch.setattr(loaded, "embeddings", lambda: pytest.fail("recomputed the propagation"))
    assert torch.equal(loaded.score(np.arange(12)), scores)
    loaded.invalidate()  # once parameters may change, the stored embeddings are dropped
    monkeypatch.undo()
    assert torch.allclose(loaded.score(np.arange(12)), scores, atol=1e-6)
