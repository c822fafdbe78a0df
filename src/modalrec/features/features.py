"""Item features for one modality, and ordered sets of them.

A model takes any number of modalities; an LVLM embedding is simply one more ``Features``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modalrec.errors import FeatureError


@dataclass(eq=False)
class Features:
    """An ``(n_items, d)`` float32 matrix aligned to the item index, plus a mask of items that
    really had content and a manifest saying how the matrix was made."""

    matrix: np.ndarray
    mask: np.ndarray | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.matrix = np.ascontiguousarray(self.matrix, dtype=np.float32)
        if self.matrix.ndim != 2:
            raise FeatureError(f"features must be a 2-d matrix, got shape {self.matrix.shape}")
        if self.mask is None:
            self.mask = np.ones(self.matrix.shape[0], dtype=bool)
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.mask.shape != (self.matrix.shape[0],):
            raise FeatureError("feature mask must have one entry per item row")
        if not np.isfinite(self.matrix).all():
            raise FeatureError("features contain NaN or infinite values")

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


FeatureSet = dict[str, Features]
"""Modality name -> features, in a fixed order (dicts keep insertion order)."""


def check_aligned(features: FeatureSet, n_items: int) -> None:
    """Every modality must have exactly one row per item index."""
    for name, feats in features.items():
        if feats.n_items != n_items:
            raise FeatureError(
                f"modality {name!r} has {feats.n_items} rows but the data has {n_items} items",
                hint="re-extract the features for this data set",
            )
