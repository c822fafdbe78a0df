"""Shared fixtures. Real data lives in ../shared/data; tests that need it skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from modalrec.data.interactions import Interactions
from modalrec.data.split import Split

SHARED_DATA = Path(os.environ.get("MODALREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_data_path(*parts: str) -> Path:
    """Path under ../shared/data, or skip the calling test when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture
def shared_data():
    return shared_data_path


def random_split(n_users: int = 60, n_items: int = 40, n: int = 900, seed: int = 0) -> Split:
    """A small random split with ratings 1-5; every part shares one id space."""
    rng = np.random.default_rng(seed)
    keys = np.unique(rng.integers(0, n_users, n) * n_items + rng.integers(0, n_items, n))
    everything = Interactions.from_arrays(keys // n_items, keys % n_items, n_users, n_items,
                                          ratings=rng.integers(1, 6, len(keys)))
    part = rng.choice(3, size=everything.nnz, p=[0.7, 0.15, 0.15])
    return Split(*(everything.select(part == p) for p in range(3)), protocol="random", params={"seed": seed})


@pytest.fixture
def tiny_split() -> Split:
    return random_split()
