"""Stored item features of one data set: ``DIR/features/<name>/``.

Each feature folder holds ``matrix.npy`` (float32, one row per item index), ``mask.npy`` (items
that really had content), ``item_ids.parquet`` (the item index the rows follow) and
``manifest.json``. The manifest is written last and atomically, so a folder without one is an
interrupted write and is never listed or loaded. Loading checks the stored item ids against the data
set's ``items.parquet``: features made before a re-import or a filter would silently point at the
wrong items otherwise.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalrec import io
from modalrec.errors import FeatureError
from modalrec.features.features import Features, FeatureSet

FORMAT = "modalrec-features"
VERSION = 1
FOLDER = "features"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def check_name(name: str) -> str:
    """Feature names become folder names: letters, digits and ``._+-``, not starting with a dot."""
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 120:
        raise FeatureError(
            f"bad feature name {name!r}",
            hint="use letters, digits and . _ + - (for example 'minilm' or 'clip-image'); pass --name",
        )
    return name


def safe_name(text: str) -> str:
    """A valid feature name derived from any text (an extractor spec such as ``st:/a/b``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-.")
    return (cleaned or "features")[-120:].lstrip("-.") or "features"


class FeatureStore:
    """Save, list and load the features of the data set folder ``dataset_dir``."""

    def __init__(self, dataset_dir: str | Path) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.root = self.dataset_dir / FOLDER

    # --- listing ----------------------------------------------------------------------------------
    def folder(self, name: str) -> Path:
        return self.root / check_name(name)

    def names(self) -> list[str]:
        """Complete feature folders (with a manifest), sorted by name."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").is_file())

    def exists(self, name: str) -> bool:
        return (self.folder(name) / "manifest.json").is_file()

    def manifest(self, name: str) -> dict[str, Any]:
        path = self._require(name) / "manifest.json"
        manifest = io.read_json(path)
        if manifest.get("format") != FORMAT:
            raise FeatureError("not a modalrec feature manifest", where=str(path))
        return manifest

    # --- loading ----------------------------------------------------------------------------------
    def load(self, name: str) -> Features:
        """The features called ``name``, checked against the data set's current item index."""
        folder = self._require(name)
        manifest = self.manifest(name)
        matrix = io.read_npy(folder / "matrix.npy")
        mask = io.read_npy(folder / "mask.npy")
        stored_ids = pd.read_parquet(folder / "item_ids.parquet")["item_id"].astype(str).to_numpy()
        if matrix.shape != (manifest["n_items"], manifest["dim"]) or mask.shape != (manifest["n_items"],):
            raise FeatureError(
                f"feature files disagree with the manifest (matrix {matrix.shape}, mask {mask.shape})",
                where=str(folder), hint=f"re-extract the features '{name}'",
            )
        if len(stored_ids) != matrix.shape[0]:
            raise FeatureError("item_ids.parquet has a different row count than matrix.npy", where=str(folder),
                               hint=f"re-extract the features '{name}'")
        self._check_ids(name, stored_ids)
        return Features(matrix, mask, manifest)

    def load_set(self, names: Sequence[str]) -> FeatureSet:
        """Several stored features as an ordered ``FeatureSet`` (the order given)."""
        if len(set(names)) != len(names):
            raise FeatureError(f"feature names repeated in {list(names)}")
        return {name: self.load(name) for name in names}

    def item_ids(self) -> np.ndarray:
        """The data set's current item ids, as strings, in item-index order."""
        path = self.dataset_dir / "items.parquet"
        if not path.is_file():
            raise FeatureError("no items.parquet: not a modalrec data set folder", where=str(self.dataset_dir),
                               hint="create the data set first (`modalrec data import` or `data synth`)")
        return pd.read_parquet(path, columns=["item_id"])["item_id"].astype(str).to_numpy()

    # --- saving -----------------------------------------------------------------------------------
    def save(self, name: str, features: Features, item_ids: np.ndarray) -> Path:
        """Write ``features`` (rows in the order of ``item_ids``) under ``name``, replacing any old one.

        The old manifest goes first and the new one last, so a crash in between leaves a folder
        that is never mistaken for complete features.
        """
        folder = self.folder(name)
        ids = np.asarray(item_ids).astype(str)
        if ids.shape != (features.n_items,):
            raise FeatureError(f"{len(ids)} item ids for {features.n_items} feature rows",
                               hint="pass one item id per feature row, in item-index order")
        if len(np.unique(ids)) != len(ids):
            raise FeatureError("item ids given to FeatureStore.save are not unique")
        if (self.dataset_dir / "items.parquet").is_file():
            self._check_ids(name, ids, saving=True)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.json").unlink(missing_ok=True)
        io.write_npy(folder / "matrix.npy", features.matrix)
        io.write_npy(folder / "mask.npy", features.mask)
        io.write_parquet(folder / "item_ids.parquet", pd.DataFrame({"item_id": ids}))
        manifest = dict(features.manifest)
        manifest.update({
            "format": FORMAT,
            "version": VERSION,
            "name": name,
            "n_items": features.n_items,
            "dim": features.dim,
            "n_with_content": int(features.mask.sum()),
            "saved_at": manifest.get("saved_at") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        io.write_json(folder / "manifest.json", manifest)
        return folder

    # --- helpers ----------------------------------------------------------------------------------
    def _require(self, name: str) -> Path:
        folder = self.folder(name)
        if not (folder / "manifest.json").is_file():
            available = self.names()
            state = "incomplete (interrupted write)" if folder.is_dir() else "not found"
            raise FeatureError(
                f"features {name!r} {state}", where=str(self.root),
                hint=("available: " + ", ".join(available)) if available
                else "extract some with `modalrec features extract DIR --extractor minilm`",
            )
        return folder

    def _check_ids(self, name: str, stored: np.ndarray, saving: bool = False) -> None:
        current = self.item_ids()
        if len(current) == len(stored) and bool((current == stored).all()):
            return
        if len(current) != len(stored):
            detail = f"{len(stored)} feature rows but the data set has {len(current)} items"
        else:
            first = int(np.flatnonzero(current != stored)[0])
            detail = f"row {first} is item {stored[first]!r} but the data set has {current[first]!r} there"
        if saving:
            raise FeatureError(f"features {name!r} do not follow the data set's item index: {detail}",
                               where=str(self.dataset_dir), hint="reorder the rows to items.parquet's order")
        raise FeatureError(
            f"features {name!r} were made for a different item index: {detail}", where=str(self.folder(name)),
            hint=f"the data set was re-imported or filtered since; re-extract '{name}'",
        )
