"""The MMRec toolbox's format: one ``.inter`` file plus optional ``<modality>_feat.npy`` matrices.

The ``.inter`` file is tab-separated with the header ``userID itemID rating timestamp x_label``
(rating and timestamp optional; ``x_label`` 0 = train, 1 = validation, 2 = test), so the split is
imported as ``fixed``. MMRec's feature rows are indexed by the numeric item id, so here the item
index *is* the item id: ``n_items = max(max item id + 1, feature rows)``, and items with feature
rows but no interaction still exist. A feature row of all zeros counts as missing content (the
``mask``); MMRec's mean-filled rows cannot be told apart and count as present.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from modalrec.data.dataset import Dataset
from modalrec.data.sources.fixed import LINE, build_fixed
from modalrec.data.sources.tables import Table, read_delimited
from modalrec.errors import ConfigError, DataError
from modalrec.features.features import Features, FeatureSet

FEATURE_SUFFIX = "_feat.npy"
COLUMNS = {"user": "userID", "item": "itemID", "rating": "rating", "timestamp": "timestamp", "label": "x_label"}
LABELS = {0: "train", 1: "valid", 2: "test"}


def find_inter_file(folder: str | Path) -> Path:
    """The one ``.inter`` file in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("folder not found" if not folder.exists() else "expected a folder", where=str(folder),
                        hint="--path takes the folder holding the .inter file (or use --inter FILE)")
    found = sorted(folder.glob("*.inter"))
    if not found:
        raise DataError("no .inter file in this folder", where=str(folder),
                        hint="pass the file itself with --inter")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataError(f"several .inter files ({names}); cannot tell which to import", where=str(folder),
                        hint="pass one with --inter FILE")
    return found[0]


def find_feature_files(folder: str | Path) -> dict[str, Path]:
    """``<modality>_feat.npy`` files in ``folder``, by modality name (``image``, ``text``, ...)."""
    return {p.name[: -len(FEATURE_SUFFIX)]: p for p in sorted(Path(folder).glob(f"*{FEATURE_SUFFIX}"))}


def read_inter(path: str | Path) -> tuple[Table, dict[str, pd.DataFrame]]:
    """Parse the ``.inter`` file into one frame per split part (``user_id, item_id, ..., _line``)."""
    table = read_delimited(path, sep="\t", quoting=False)
    # RecBole-style headers carry a type suffix (``userID:token``); the name is what matters
    table.frame.columns = [str(c).split(":")[0] for c in table.frame.columns]
    table.require(COLUMNS["user"], COLUMNS["item"], COLUMNS["label"],
                  hint="an MMRec .inter file has the header: userID itemID rating timestamp x_label")
    users = _non_negative(table, COLUMNS["user"])
    items = _non_negative(table, COLUMNS["item"])
    labels = table.numbers(COLUMNS["label"], integer=True)
    bad = ~np.isin(labels, list(LABELS))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"x_label must be 0 (train), 1 (valid) or 2 (test), got {labels[row]}",
                        where=table.where(row))
    frame = pd.DataFrame({"user_id": users.astype(str), "item_id": items.astype(str)})
    if COLUMNS["rating"] in table.frame:
        frame["rating"] = table.numbers(COLUMNS["rating"])
    if COLUMNS["timestamp"] in table.frame:
        frame["timestamp"] = table.timestamps(COLUMNS["timestamp"])
    frame[LINE] = table.lines
    frame["_item"] = items
    parts = {name: frame.loc[labels == code].reset_index(drop=True) for code, name in LABELS.items()}
    return table, parts


def load_feature_matrix(path: str | Path) -> np.ndarray:
    """A 2-d finite numeric matrix from ``.npy`` (never unpickled)."""
    path = Path(path)
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read features: {error}", where=str(path)) from None
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise DataError(f"features must be a 2-d numeric matrix, got shape {matrix.shape} of {matrix.dtype}",
                        where=str(path))
    if not np.isfinite(matrix).all():
        row = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise DataError(f"row {row} (item {row}) holds NaN or infinite values", where=str(path))
    return matrix.astype(np.float32, copy=False)


def import_mmrec(path: str | Path | None = None, *, inter: str | Path | None = None, dedup: str = "last",
                 features: bool = True) -> tuple[Dataset, FeatureSet]:
    """Import a folder (``path``: one ``.inter`` file and optional ``*_feat.npy``) or a single
    ``.inter`` file (``inter``); returns the data set (with its fixed split) and the features."""
    if (path is None) == (inter is None):
        raise ConfigError("give either --path DIR or --inter FILE for --format mmrec", where="--path")
    inter_path = find_inter_file(path) if path is not None else Path(inter)
    feature_files = find_feature_files(path) if (path is not None and features) else {}
    _, parts = read_inter(inter_path)

    max_item = max(int(part["_item"].max()) for part in parts.values() if len(part))
    matrices = {name: load_feature_matrix(p) for name, p in feature_files.items()}
    n_items = max([max_item + 1, *(m.shape[0] for m in matrices.values())])
    for name, matrix in matrices.items():
        if matrix.shape[0] != n_items:
            why = (f"item ids go up to {max_item}" if matrix.shape[0] <= max_item
                   else "another feature file has more rows")
            raise DataError(f"{name} features have {matrix.shape[0]} rows but the data needs {n_items} "
                            f"({why}); rows must be aligned to the item id",
                            where=str(feature_files[name]))
    items = pd.DataFrame({"item_id": np.arange(n_items).astype(str)})
    files = dict.fromkeys(LABELS.values(), inter_path)
    parts = {name: frame.drop(columns="_item") for name, frame in parts.items()}
    provenance = {"source": "mmrec", "dedup": dedup, "inter": str(inter_path.resolve()),
                  "features": {name: str(p.resolve()) for name, p in feature_files.items()},
                  "items_without_interactions": int(n_items - len(np.unique(np.concatenate(
                      [frame["item_id"].to_numpy() for frame in parts.values()]))))}
    dataset = build_fixed(parts, files, items=items, provenance=provenance, dedup=dedup)
    feature_set: FeatureSet = {}
    for name, matrix in matrices.items():
        mask = np.abs(matrix).sum(axis=1) > 0
        feature_set[name] = Features(matrix, mask, {
            "modality": name,
            "extractor": "imported",
            "source": "mmrec",
            "file": str(feature_files[name].resolve()),
            "sha256": _sha256(feature_files[name]),
            "dim": int(matrix.shape[1]),
            "missing_rows": int((~mask).sum()),
        })
    return dataset, feature_set


def _non_negative(table: Table, column: str) -> np.ndarray:
    values = table.numbers(column, integer=True)
    if (values < 0).any():
        row = int(np.flatnonzero(values < 0)[0])
        raise DataError(f"{column} must be a non-negative integer id, got {values[row]}", where=table.where(row))
    return values


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
