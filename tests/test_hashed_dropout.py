"""``hashed_dropout``: a Bernoulli mask with F.dropout's scaling, fixed by torch's seed."""

import math

import numpy as np
import pytest
import torch

from modalrec.models.hashed_dropout import hashed_dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_drop_share_and_scaling(p: float) -> None:
    torch.manual_seed(1)
    x = torch.randn(500, 400)
    out = hashed_dropout(x, p)
    dropped = out == 0
    n = x.numel()
    assert abs(dropped.float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    kept = ~dropped
    reference = x * (torch.ones(()) / (1 - p))  # the float32 scale F.dropout multiplies by
    assert torch.equal(out[kept], reference[kept])


def test_mask_elements_are_independent() -> None:
    torch.manual_seed(2)
    mask = (hashed_dropout(torch.ones(1000, 64), 0.3) != 0).numpy().astype(float)
    flat = mask.ravel()
    for lag in (1, 2, 64):  # neighbours in a row and the same column of the next row
        assert abs(np.corrcoef(flat[:-lag], flat[lag:])[0, 1]) < 0.01
    assert abs(mask.mean(0) - 0.7).max() < 5 * math.sqrt(0.21 / 1000)  # every column alike


def test_seeded_by_torch_and_fresh_per_call() -> None:
    x = torch.ones(300, 64)
    torch.manual_seed(7)
    first, second = hashed_dropout(x, 0.3), hashed_dropout(x, 0.3)
    torch.manual_seed(7)
    assert torch.equal(hashed_dropout(x, 0.3), first)
    agree = ((first != 0) == (second != 0)).float().mean().item()
    assert abs(agree - (0.7**2 + 0.3**2)) < 0.01  # independent masks, not the same one


def test_edge_cases_and_fallbacks() -> None:
    x = torch.randn(20, 8)
    assert torch.equal(hashed_dropout(x, 0.0), x)
    assert torch.equal(hashed_dropout(x, 1.0), torch.zeros_like(x))
    assert torch.equal(hashed_dropout(x, 0.5, training=False), x)
    transposed = hashed_dropout(x.T, 0.5)
    assert transposed.shape == (8, 20) and torch.equal(transposed[transposed != 0], (x.T * 2)[transposed != 0])
    with pytest.raises(ValueError, match="dropout probability"):
        hashed_dropout(x, 1.5)
    leaf = torch.randn(20, 8, requires_grad=True)
    hashed_dropout(leaf, 0.5).sum().backward()  # with autograd: F.dropout, gradient flows
    assert set(leaf.grad.unique().tolist()) <= {0.0, 2.0}
    assert hashed_dropout(x.double(), 0.5).dtype == torch.float64
