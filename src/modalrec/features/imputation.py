"""Fill the rows of items without content (missing poster, empty text, undecodable file).

The mask always says which rows are real; the fill only matters to models that ignore it.
- ``mean`` (the default): the mean of the rows that have content. It is the neutral input for the
  linear projections most multimodal models put on features (the item gets the average content
  effect) and it is MMRec's convention, so parity runs need it.
- ``zero``: zeros. Neutral for sums and dot products, but an out-of-distribution point for
  features that are never zero (pooled CNN activations), and cosine with a zero row is undefined.

Beware that a mean row is close to everything under cosine similarity: kNN graph builders should
use the mask instead of either fill (see ml100k-mmrec-ref's README).
"""

from __future__ import annotations

import logging

import numpy as np

from modalrec.errors import ConfigError

log = logging.getLogger(__name__)

IMPUTE_METHODS = ("mean", "zero")
DEFAULT_IMPUTE = "mean"


def check_method(method: str) -> str:
    if method not in IMPUTE_METHODS:
        raise ConfigError(f"unknown imputation {method!r}", hint=f"choose one of: {', '.join(IMPUTE_METHODS)}")
    return method


def impute(matrix: np.ndarray, mask: np.ndarray, method: str = DEFAULT_IMPUTE) -> np.ndarray:
    """A float32 copy of ``matrix`` whose rows with ``mask`` False are zero or the mean of the rest."""
    check_method(method)
    matrix = np.array(matrix, dtype=np.float32, copy=True)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (matrix.shape[0],):
        raise ValueError("mask must have one entry per matrix row")
    if mask.all():
        return matrix
    fill = np.zeros(matrix.shape[1], dtype=np.float32)
    if method == "mean":
        if mask.any():
            fill = matrix[mask].astype(np.float64).mean(axis=0).astype(np.float32)
        else:
            log.warning("no item has content: mean imputation falls back to zeros")
    matrix[~mask] = fill
    return matrix
