"""Build one representation from several modalities: normalise, project, combine, reduce.

Steps, in order:
1. ``normalize`` each modality: ``l2`` (unit rows, so no modality dominates by its scale) or
   ``zscore`` (per column, with the mean and deviation of the items that have content).
2. For ``mean``, ``sum`` and ``product`` every modality must live in a space of one size: those of
   another size than ``dim`` are projected to it, either by a seeded Gaussian random projection
   (``gaussian``: entries N(0, 1/dim), which preserves distances in expectation, Johnson-Lindenstrauss,
   and needs no fitting) or by ``pca`` (top principal directions of the items with content, which
   keeps most variance but is fitted on this catalogue). ``concat`` needs no common size; with
   ``dim`` it projects every modality first.
3. Combine: concatenation, element-wise mean, sum or product.
4. Optional ``pca`` reduction of the result, deterministic (numpy SVD, signs fixed so the largest
   loading of each component is positive).
The mask of the result is ``any`` (an item has content if one modality has it) or ``all``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modalrec.errors import ConfigError
from modalrec.features.features import Features

METHODS = ("concat", "mean", "sum", "product")
NORMALIZATIONS = ("l2", "zscore")
PROJECTIONS = ("gaussian", "pca")
MASK_RULES = ("any", "all")


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Unit-length rows; all-zero rows stay zero."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def zscore(matrix: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Columns centred and scaled by the statistics of rows with content (constant columns -> 0)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    rows = matrix if mask is None or not np.any(mask) else matrix[np.asarray(mask, dtype=bool)]
    mean, std = rows.mean(axis=0), rows.std(axis=0)
    return ((matrix - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def normalize(matrix: np.ndarray, method: str | None, mask: np.ndarray | None = None) -> np.ndarray:
    if method is None:
        return np.asarray(matrix, dtype=np.float32)
    if method == "l2":
        return l2_normalize(matrix)
    if method == "zscore":
        return zscore(matrix, mask)
    raise ConfigError(f"unknown normalisation {method!r}", where="--normalize",
                      hint=f"choose one of: {', '.join(NORMALIZATIONS)}")


def pca_basis(matrix: np.ndarray, n_components: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components (n_components, d)) of the rows with content, by SVD, with fixed signs."""
    rows = np.asarray(matrix, dtype=np.float64)
    if mask is not None and np.any(mask):
        rows = rows[np.asarray(mask, dtype=bool)]
    limit = min(rows.shape)
    if not 1 <= n_components <= limit:
        raise ConfigError(f"cannot keep {n_components} principal components of a {rows.shape[0]} x "
                          f"{rows.shape[1]} matrix", where="--pca", hint=f"choose 1..{limit}")
    mean = rows.mean(axis=0)
    _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
    components = vt[:n_components]
    signs = np.sign(components[np.arange(n_components), np.argmax(np.abs(components), axis=1)])
    return mean, components * np.where(signs == 0, 1.0, signs)[:, None]


def pca_reduce(matrix: np.ndarray, n_components: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Coordinates on the top ``n_components`` principal directions (fitted on rows with content)."""
    mean, components = pca_basis(matrix, n_components, mask)
    return ((np.asarray(matrix, dtype=np.float64) - mean) @ components.T).astype(np.float32)


def gaussian_projection(d_in: int, d_out: int, seed: int) -> np.ndarray:
    """A (d_in, d_out) matrix with entries N(0, 1/d_out): norms and distances kept in expectation."""
    rng = np.random.default_rng([seed, d_in, d_out])
    return (rng.standard_normal((d_in, d_out)) / np.sqrt(d_out)).astype(np.float32)


def project(matrix: np.ndarray, dim: int, method: str = "gaussian", seed: int = 0,
            mask: np.ndarray | None = None, stream: int = 0) -> np.ndarray:
    """``matrix`` in ``dim`` dimensions (unchanged when it already has ``dim`` columns)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if dim < 1:
        raise ConfigError(f"projection size must be at least 1, got {dim}", where="--dim")
    if matrix.shape[1] == dim:
        return matrix
    if method == "gaussian":
        return matrix @ gaussian_projection(matrix.shape[1], dim, seed * 1_000_003 + stream)
    if method == "pca":
        return pca_reduce(matrix, dim, mask)
    raise ConfigError(f"unknown projection {method!r}", where="--projection",
                      hint=f"choose one of: {', '.join(PROJECTIONS)}")


def combine_masks(masks: Sequence[np.ndarray], rule: str = "any") -> np.ndarray:
    if rule not in MASK_RULES:
        raise ConfigError(f"unknown mask rule {rule!r}", hint=f"choose one of: {', '.join(MASK_RULES)}")
    stacked = np.vstack([np.asarray(m, dtype=bool) for m in masks])
    return stacked.any(axis=0) if rule == "any" else stacked.all(axis=0)


def fuse(features: Mapping[str, Features], method: str = "concat", *, dim: int | None = None,
         projection: str = "gaussian", normalize_each: str | None = None, pca: int | None = None,
         mask_rule: str = "any", seed: int = 0) -> Features:
    """One ``Features`` from several modalities (see the module docstring for the steps)."""
    if method not in METHODS:
        raise ConfigError(f"unknown fusion {method!r}", where="--method", hint=f"choose one of: {', '.join(METHODS)}")
    if not features:
        raise ConfigError("nothing to fuse", where="--features", hint="name at least one stored feature")
    names = list(features)
    sizes = {f.n_items for f in features.values()}
    if len(sizes) != 1:
        raise ConfigError(f"modalities have different item counts {sorted(sizes)}", where="--features",
                          hint="all features must come from the same data set")
    mats = [normalize(f.matrix, normalize_each, f.mask) for f in features.values()]
    dims = [m.shape[1] for m in mats]
    if method != "concat" and dim is None:
        if len(set(dims)) > 1:
            raise ConfigError(f"{method} fusion needs one size but the modalities have {dims}", where="--dim",
                              hint="pass --dim N to project every modality to N dimensions")
        dim = dims[0]
    if dim is not None:
        mats = [project(m, dim, projection, seed, f.mask, stream=i)
                for i, (m, f) in enumerate(zip(mats, features.values()))]
    if method == "concat":
        fused = np.hstack(mats)
    elif method == "mean":
        fused = np.mean(mats, axis=0)
    elif method == "sum":
        fused = np.sum(mats, axis=0)
    else:
        fused = np.prod(mats, axis=0)
    mask = combine_masks([f.mask for f in features.values()], mask_rule)
    if pca is not None:
        fused = pca_reduce(fused, pca, mask)
    manifest: dict[str, Any] = {
        "extractor": f"fusion:{method}",
        "modality": "fused",
        "fusion": {"method": method, "inputs": names, "input_dims": dims, "dim": dim, "projection": projection,
                   "normalize": normalize_each, "pca": pca, "mask_rule": mask_rule, "seed": seed},
        "inputs_fingerprints": {n: f.manifest.get("fingerprint_id") for n, f in features.items()},
    }
    manifest["fingerprint_id"] = hashlib.sha256(repr(sorted(manifest["fusion"].items())).encode()
                                                + repr(sorted(manifest["inputs_fingerprints"].items())).encode()
                                                ).hexdigest()[:24]
    return Features(np.asarray(fused, dtype=np.float32), mask, manifest)
