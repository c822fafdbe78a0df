"""The fused BPR objective against the same formula through autograd (float64 tables take that path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalrec.models.bpr_objective import _FusedBPR, bpr_objective


def _leaves(*arrays: np.ndarray, dtype: torch.dtype) -> list[torch.Tensor]:
    return [torch.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]


def _run(tables: list[torch.Tensor], users, pos, neg, reg: float, style: str, separate: bool,
         scale: float) -> tuple[float, list[np.ndarray]]:
    reg_tables = tables[2:] if separate else [None, None]
    loss = bpr_objective(tables[0], tables[1], users, pos, neg, reg, style, *reg_tables)
    (scale * loss).backward()
    return float(loss.detach()), [t.grad.double().numpy() for t in tables]


@pytest.mark.parametrize("style", ["norm", "squared"])
@pytest.mark.parametrize("separate", [False, True])
def test_fused_loss_and_gradients_match_autograd(style: str, separate: bool) -> None:
    rng = np.random.default_rng(3)
    # penalised tables of their own widths (VBPR: [gamma_u ; theta_u] and [gamma_i ; beta_i])
    arrays = [rng.normal(size=(30, 8)), rng.normal(size=(50, 8)), rng.normal(size=(30, 5)), rng.normal(size=(50, 3))]
    arrays[0][4] *= 12  # large scores: softplus and sigmoid must stay stable
    count = 2 if not separate else 4
    users, pos, neg = (torch.from_numpy(rng.integers(0, n, 400)) for n in (30, 50, 50))  # many repeats
    fused = _leaves(*arrays[:count], dtype=torch.float32)
    reference = _leaves(*arrays[:count], dtype=torch.float64)
    reg_tables = fused[2:] if separate else [None, None]
    taken = bpr_objective(fused[0], fused[1], users, pos, neg, 0.3, style, *reg_tables).grad_fn
    assert type(taken).__name__ == _FusedBPR.__name__ + "Backward"
    loss, grads = _run(fused, users, pos, neg, 0.3, style, separate, scale=2.5)
    ref_loss, ref_grads = _run(reference, users, pos, neg, 0.3, style, separate, scale=2.5)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    assert np.abs(grads[0]).sum() > 0


def test_fused_path_is_taken_and_deterministic() -> None:
    rng = np.random.default_rng(0)
    tables = _leaves(rng.normal(size=(20, 6)), rng.normal(size=(40, 6)), dtype=torch.float32)
    users, pos, neg = (torch.from_numpy(rng.integers(0, n, 300)) for n in (20, 40, 40))
    loss = bpr_objective(*tables, users, pos, neg, 0.1)
    assert loss.grad_fn is not None and type(loss.grad_fn).__name__ == _FusedBPR.__name__ + "Backward"
    first = _run(tables, users, pos, neg, 0.1, "norm", False, 1.0)[1]
    for t in tables:
        t.grad = None
    second = _run(tables, users, pos, neg, 0.1, "norm", False, 1.0)[1]
    for a, b in zip(first, second):
        assert np.array_equal(a, b)


def test_all_zero_penalised_rows_give_no_nan() -> None:
    user = torch.zeros(3, 4, requires_grad=True)
    item = torch.ones(5, 4, requires_grad=True)
    idx = torch.tensor([0, 1, 2])
    loss = bpr_objective(user, item, idx, idx, idx + 2, 1.0)
    loss.backward()
    assert loss.item() == pytest.approx(np.log(2) + 2 * np.sqrt(12) / 3, rel=1e-6)
    assert torch.isfinite(user.grad).all() and torch.isfinite(item.grad).all()


def test_bad_penalty_style() -> None:
    table = torch.ones(2, 2, requires_grad=True)
    with pytest.raises(ValueError, match="reg_style"):
        bpr_objective(table, table, torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), 0.1, "l1")
