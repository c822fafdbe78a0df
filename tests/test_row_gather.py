"""``gather_rows``: the same gradient as ``index_select`` through autograd, kept in one buffer."""

import pytest
import torch
from tests.conftest import random_split
from tests.test_multimodal_models import features, make

from modalrec.models import row_gather
from modalrec.models.row_gather import gather_rows


def _loss(table: torch.Tensor, rows: torch.Tensor, gather, direct: bool) -> torch.Tensor:
    weights = torch.linspace(-1.0, 2.0, table.shape[1])
    loss = (gather(table, rows) * weights).square().sum()
    if direct:  # the table also used whole in the same graph
        loss = loss + table.sum(0).pow(3).sum()
    return loss


@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("set_to_none", [True, False])
def test_gradient_matches_index_select_over_steps(direct: bool, set_to_none: bool) -> None:
    torch.manual_seed(0)
    start = torch.randn(40, 6)
    ours = torch.nn.Parameter(start.clone())
    reference = torch.nn.Parameter(start.clone())
    opt_ours = torch.optim.Adam([ours], lr=0.05)
    opt_ref = torch.optim.Adam([reference], lr=0.05)
    buffers = set()
    for _ in range(4):
        rows = torch.randint(0, 40, (30,))  # repeated rows accumulate
        for opt in (opt_ours, opt_ref):
            opt.zero_grad(set_to_none=set_to_none)
        _loss(ours, rows, gather_rows, direct).backward()
        _loss(reference, rows, lambda t, r: t.index_select(0, r), direct).backward()
        torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-6, atol=1e-6)
        buffers.add(ours.grad.data_ptr())
        opt_ours.step()
        opt_ref.step()
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)
    assert len(buffers) == 1 or direct  # the buffer is reused unless autograd allocated first


def test_plain_index_select_without_a_trainable_leaf() -> None:
    table = torch.randn(10, 3)
    rows = torch.tensor([4, 1, 4])
    assert torch.equal(gather_rows(table, rows), table[rows])
    leaf = torch.nn.Parameter(torch.randn(10, 3))
    with torch.no_grad():
        assert gather_rows(leaf, rows).grad_fn is None
    derived = leaf * 2  # not a leaf: ordinary autograd
    gather_rows(derived, rows).sum().backward()
    assert torch.equal(leaf.grad, torch.bincount(rows, minlength=10).float()[:, None].expand(10, 3) * 2)


def test_training_keeps_one_buffer_per_tuned_matrix_then_releases_them() -> None:
    split = random_split(n_users=30, n_items=25, n=400)
    held: list[int] = []
    model = make("bm3", epochs=2)
    model.callbacks = [lambda record: held.append(len(row_gather._BUFFERS))]
    model.fit(split.train, features(split.train.n_items, {"image": 6, "text": 4}), None)
    assert held == [2, 2]
    assert len(row_gather._BUFFERS) == 0
