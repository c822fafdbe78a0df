"""The training loop: determinism, early stopping with best weights restored, checkpoint/resume,
the sampler, and the BPR loss and penalty by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import random_split
from modalrec.data.interactions import Interactions
from modalrec.data.split import Split
from modalrec.errors import ConfigError, ModelError
from modalrec.evaluation.evaluator import Evaluator
from modalrec.models.base import Recommender
from modalrec.models.bpr import BPR, BPRParams
from modalrec.models.bpr_objective import bpr_loss, embedding_penalty
from modalrec.training import sampler as sampler_module
from modalrec.training.gradient import GradientRecommender, TrainParams
from modalrec.training.sampler import PairwiseSampler
from modalrec.training.trainer import CHECKPOINT, parse_metric


class Interrupt(Exception):
    pass


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: a second thread only adds synchronisation (and bit-for-bit comparisons hold
    for a fixed thread count either way)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def structured_split(seed: int = 0, n_users: int = 120, n_items: int = 90, groups: int = 5) -> Split:
    """Users mostly interact with items of their own group, so BPR keeps improving for a couple of
    dozen epochs and then plateaus: early stopping and resuming have something to do."""
    rng = np.random.default_rng(seed)
    user_group, item_group = rng.integers(0, groups, n_users), np.arange(n_items) % groups
    keys = []
    for u in range(n_users):
        own = np.flatnonzero(item_group == user_group[u])
        items = np.concatenate([rng.choice(own, 11, replace=False), rng.integers(0, n_items, 3)])
        keys.extend(u * n_items + np.unique(items))
    keys = np.unique(keys)
    everything = Interactions.from_arrays(keys // n_items, keys % n_items, n_users, n_items)
    part = rng.choice(3, size=everything.nnz, p=[0.7, 0.15, 0.15])
    return Split(*(everything.select(part == p) for p in range(3)), protocol="random")


def bpr(**params) -> BPR:
    defaults = {"epochs": 40, "batch_size": 128, "lr": 0.01, "embedding_size": 8, "patience": 4,
                "valid_metric": "recall@10"}
    return BPR(BPRParams(**(defaults | params)), seed=3)


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in history]


# --- determinism, early stopping, best weights ------------------------------------------------------

def test_same_seed_same_scores_bit_for_bit() -> None:
    split = structured_split()
    a = bpr().fit(split.train, valid=split.valid)
    b = bpr().fit(split.train, valid=split.valid)
    users = np.arange(split.train.n_users)
    assert torch.equal(a.score(users), b.score(users))
    assert without_timings(a.history) == without_timings(b.history)
    short = BPRParams(**(vars(a.params) | {"epochs": 2}))
    c3, c4 = BPR(short, seed=3).fit(split.train), BPR(short, seed=4).fit(split.train)
    assert not torch.equal(c3.score(users), c4.score(users))


def test_early_stopping_restores_the_best_weights() -> None:
    split = structured_split()
    model = bpr(epochs=200).fit(split.train, valid=split.valid)
    values = [r["recall@10"] for r in model.history]
    assert 10 < len(model.history) < 200  # learnt for a while, then stopped early
    best = int(np.argmax(values))  # first maximum: later ties are no improvement
    assert model.best_epoch == model.history[best]["epoch"] > 5
    assert model.history[-1]["epoch"] - model.best_epoch == 4
    assert all(v <= values[best] for v in values[best + 1 :])
    again = Evaluator(cutoffs=[10]).run(model.score, split.valid, [split.train]).metrics["recall@10"]
    assert again == pytest.approx(values[best], abs=1e-12)


def test_validation_every_n_epochs_and_at_the_last() -> None:
    split = random_split()
    model = bpr(epochs=7, eval_every=3).fit(split.train, valid=split.valid)
    validated = [r["epoch"] for r in model.history if "recall@10" in r]
    assert validated == [3, 6, 7]
    assert [r["epoch"] for r in model.history] == list(range(1, 8))


def test_learning_rate_schedule() -> None:
    split = random_split()
    model = bpr(epochs=4, lr=0.02, lr_decay=0.5, lr_decay_epochs=2).fit(split.train)
    expected = [0.02 * 0.5 ** (e / 2) for e in range(4)]  # lr at epoch e (0-based), MMRec's rule
    assert [r["lr"] for r in model.history] == pytest.approx(expected)


def test_other_metric_and_no_validation() -> None:
    split = random_split()
    model = bpr(epochs=3, valid_metric="ndcg@5").fit(split.train, valid=split.valid)
    assert "ndcg@5" in model.history[-1]
    plain = bpr(epochs=3).fit(split.train)
    assert len(plain.history) == 3 and "recall@10" not in plain.history[-1]
    assert plain.best_epoch == 3


@pytest.mark.parametrize("bad, match", [
    ({"epochs": 0}, "epochs"), ({"valid_metric": "auc@20"}, "bad validation metric"),
    ({"valid_metric": "recall"}, "bad validation metric"), ({"batch_size": 0}, "batch_size"),
    ({"lr": 0.0}, "lr"), ({"weight_decay": -1.0}, "weight_decay"),
])
def test_bad_training_parameters(bad: dict, match: str) -> None:
    split = random_split()
    with pytest.raises(ConfigError, match=match):
        bpr(**bad).fit(split.train, valid=split.valid)


def test_parse_metric() -> None:
    assert parse_metric("recall@20") == ("recall", 20)
    assert parse_metric("ndcg@5") == ("ndcg", 5)
    with pytest.raises(ConfigError):
        parse_metric("recall@0")


class NaNModel(GradientRecommender):
    name = "nan-test"

    def build_module(self) -> torch.nn.Module:
        module = torch.nn.Module()
        module.w = torch.nn.Parameter(torch.zeros(self.n_items, 2))
        return module

    def loss(self, users, pos, neg):
        return self.module.w.sum() * float("nan")

    def embeddings(self):
        return torch.zeros(self.n_users, 2), self.module.w


def test_non_finite_loss_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="training loss became nan"):
        NaNModel(TrainParams(epochs=2)).fit(random_split().train)


def test_weight_decay_shrinks_embeddings() -> None:
    split = random_split()
    plain = bpr(epochs=5).fit(split.train)
    decayed = bpr(epochs=5, weight_decay=1.0).fit(split.train)
    assert decayed.module.item.norm() < plain.module.item.norm()


# --- checkpoints -----------------------------------------------------------------------------------

def interrupt_at(epoch: int):
    def callback(record: dict) -> None:
        if record["epoch"] == epoch:
            raise Interrupt

    return callback


@pytest.mark.parametrize("eval_every", [1, 2])
def test_interrupted_fit_resumes_to_identical_scores(tmp_path: Path, eval_every: int) -> None:
    split = structured_split()
    users = np.arange(split.train.n_users)
    reference = bpr(eval_every=eval_every).fit(split.train, valid=split.valid)
    assert reference.history[-1]["epoch"] < 40  # the reference stops early: resuming must too

    first = bpr(eval_every=eval_every)
    first.checkpoint_dir = tmp_path / "ckpt"
    first.callbacks.append(interrupt_at(9))
    with pytest.raises(Interrupt):
        first.fit(split.train, valid=split.valid)
    assert (tmp_path / "ckpt" / CHECKPOINT).exists()

    resumed = bpr(eval_every=eval_every)
    resumed.checkpoint_dir = tmp_path / "ckpt"
    seen: list[int] = []
    resumed.callbacks.append(lambda record: seen.append(record["epoch"]))
    resumed.fit(split.train, valid=split.valid)
    assert seen[0] == 10  # epochs 1..9 were not trained again
    assert torch.equal(resumed.score(users), reference.score(users))
    assert without_timings(resumed.history) == without_timings(reference.history)
    assert resumed.best_epoch == reference.best_epoch

    # A finished fit resumes to the same model without training again.
    again = bpr(eval_every=eval_every)
    again.checkpoint_dir = tmp_path / "ckpt"
    again.callbacks.append(lambda record: pytest.fail("a finished fit trained again"))
    again.fit(split.train, valid=split.valid)
    assert torch.equal(again.score(users), reference.score(users))


def test_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    split = random_split()
    model = bpr(epochs=2)
    model.checkpoint_dir = tmp_path
    model.fit(split.train, valid=split.valid)
    other = bpr(epochs=2, reg_weight=0.5)
    other.checkpoint_dir = tmp_path
    with pytest.raises(ModelError, match="another model, hyperparameters, seed or data"):
        other.fit(split.train, valid=split.valid)
    (tmp_path / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read the training checkpoint"):
        model.fit(split.train, valid=split.valid)


def test_saved_model_scores_identically(tmp_path: Path) -> None:
    split = random_split()
    model = bpr(epochs=3).fit(split.train, valid=split.valid)
    loaded = Recommender.load(model.save(tmp_path / "m"))
    users = np.arange(split.train.n_users)
    assert isinstance(loaded, BPR)
    assert torch.equal(loaded.score(users), model.score(users))
    assert loaded.history == model.history


# --- sampler ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bitset_bytes", [sampler_module.BITSET_BYTES, 0])
def test_sampler_covers_each_pair_once_with_true_negatives(bitset_bytes: int, monkeypatch) -> None:
    # both collision tests: the bit set and, where it would not fit, binary search
    monkeypatch.setattr(sampler_module, "BITSET_BYTES", bitset_bytes)
    train = random_split(n_users=30, n_items=12, n=250).train
    sampler = PairwiseSampler(train, batch_size=16, seed=0, device=torch.device("cpu"))
    assert (sampler.bits is None) == (bitset_bytes == 0)
    batches = list(sampler.epoch())
    assert len(batches) == len(sampler) == -(-train.nnz // 16)
    assert all(len(b[0]) == 16 for b in batches[:-1])
    users = torch.cat([b[0] for b in batches]).numpy()
    pos = torch.cat([b[1] for b in batches]).numpy()
    neg = torch.cat([b[2] for b in batches]).numpy()
    dense = train.csr().toarray() > 0
    assert sorted(zip(users, pos)) == sorted(zip(train.users, train.items))
    assert dense[users, pos].all()
    assert not dense[users, neg].any()


def test_sampler_is_seeded_and_its_state_round_trips() -> None:
    train = random_split().train
    cpu = torch.device("cpu")

    def draw(sampler: PairwiseSampler) -> list[np.ndarray]:
        return [torch.stack(b).numpy() for b in sampler.epoch()]

    a, b = PairwiseSampler(train, 50, 7, cpu), PairwiseSampler(train, 50, 7, cpu)
    assert all(np.array_equal(x, y) for x, y in zip(draw(a), draw(b)))
    state = a.get_state()
    after = draw(a)
    b.set_state(state)
    assert all(np.array_equal(x, y) for x, y in zip(after, draw(b)))
    c = PairwiseSampler(train, 50, 8, cpu)
    assert not all(np.array_equal(x, y) for x, y in zip(draw(PairwiseSampler(train, 50, 7, cpu)), draw(c)))


def test_negatives_are_uniform_over_non_positives() -> None:
    # One user who has items 0 and 1 of 6: negatives must be uniform on 2..5.
    train = Interactions.from_arrays(np.zeros(2), np.array([0, 1]), 1, 6)
    sampler = PairwiseSampler(train, 2, 0, torch.device("cpu"))
    negatives = sampler.negatives(np.zeros(40000, dtype=np.int64))
    counts = np.bincount(negatives, minlength=6)
    assert counts[:2].sum() == 0
    assert np.allclose(counts[2:] / 40000, 0.25, atol=0.01)


def test_sampler_refuses_a_user_with_every_item() -> None:
    train = Interactions.from_arrays(np.zeros(3), np.arange(3), 1, 3)
    with pytest.raises(ModelError, match="every item"):
        PairwiseSampler(train, 2, 0, torch.device("cpu"))


# --- BPR loss and penalty by hand ------------------------------------------------------------------

def test_bpr_loss_and_penalties_by_hand() -> None:
    pos, neg = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.5])
    expected = -(np.log(1 / (1 + np.exp(-1.0))) + np.log(1 / (1 + np.exp(1.0)))) / 2
    assert bpr_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)
    u = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # norms 5 and 0: Frobenius 5
    i = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # Frobenius sqrt(5)
    assert embedding_penalty("norm", u, i).item() == pytest.approx((5 + np.sqrt(5)) / 2)
    assert embedding_penalty("squared", u, i).item() == pytest.approx((25 + 5) / (2 * 2))


def test_bpr_model_loss_by_hand() -> None:
    split = random_split()
    model = bpr(epochs=1, reg_weight=0.1).fit(split.train)
    users, pos, neg = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])
    u = model.module.user.detach().numpy()[[0, 1]]
    i = model.module.item.detach().numpy()[[2, 3]]
    j = model.module.item.detach().numpy()[[4, 5]]
    diff = (u * i).sum(1) - (u * j).sum(1)
    ranking = np.mean(np.log1p(np.exp(-diff)))
    penalty = (np.linalg.norm(u) + np.linalg.norm(i) + np.linalg.norm(j)) / 2
    assert model.loss(users, pos, neg).item() == pytest.approx(ranking + 0.1 * penalty, rel=1e-5)
