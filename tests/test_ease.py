"""EASE against per-item ridge regressions (the constrained problem solved column by column)."""

from __future__ import annotations

import numpy as np
import pytest

from modalrec.data.interactions import Interactions
from modalrec.errors import ConfigError, ModelError
from modalrec.models.ease import EASE, EASEParams


def train_set(n_users: int = 40, n_items: int = 15, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < 0.3
    users, items = dense.nonzero()
    return Interactions.from_arrays(users, items, n_users, n_items)


def ridge_reference(x: np.ndarray, lam: float) -> np.ndarray:
    """``min ||X - X B||^2 + lam ||B||^2`` s.t. ``diag(B) = 0`` splits into one ridge regression
    per item j of column j on the other columns: an independent route to EASE's closed form."""
    n_items = x.shape[1]
    b = np.zeros((n_items, n_items))
    for j in range(n_items):
        others = [i for i in range(n_items) if i != j]
        xo = x[:, others]
        b[others, j] = np.linalg.solve(xo.T @ xo + lam * np.eye(len(others)), xo.T @ x[:, j])
    return b


@pytest.mark.parametrize("lam", [0.5, 10.0, 500.0])
def test_matches_ridge_reference_and_zero_diagonal(lam: float) -> None:
    train = train_set()
    model = EASE(EASEParams(reg_weight=lam)).fit(train)
    x = train.csr().toarray().astype(np.float64)
    expected = ridge_reference(x, lam)
    b = model.weights.numpy()
    np.testing.assert_allclose(b, expected, rtol=1e-4, atol=1e-6)
    assert np.all(np.diag(b) == 0)
    np.testing.assert_allclose(model.score(np.arange(40)).numpy(), x @ expected, rtol=1e-4, atol=1e-6)


def test_closed_form_formula() -> None:
    train = train_set(seed=1)
    x = train.csr().toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + 3.0 * np.eye(x.shape[1]))
    expected = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    got = EASE(EASEParams(reg_weight=3.0)).fit(train).weights.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_refuses_large_catalog_with_hint() -> None:
    with pytest.raises(ModelError, match="max_items=10") as info:
        EASE(EASEParams(max_items=10)).fit(train_set(n_items=15))
    assert "knn" in str(info.value)


def test_reg_weight_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="reg_weight"):
        EASE(EASEParams(reg_weight=0.0)).fit(train_set())
