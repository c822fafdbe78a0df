"""A data set: interactions, an items table, id maps, provenance and (optionally) a split.

On disk it is a folder of Parquet files and a JSON manifest; extracted features live beside them
under ``features/``, so a data set folder is the unit users pass around.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalrec import io
from modalrec.data.interactions import Interactions
from modalrec.data.split import Split
from modalrec.errors import DataError

FORMAT = "modalrec-dataset"
VERSION = 1


def sort_ids(ids: np.ndarray) -> np.ndarray:
    """Unique external ids in a deterministic order: numeric when all look like integers."""
    unique = pd.unique(pd.Series(ids, dtype=str))
    as_int = pd.to_numeric(pd.Series(unique), errors="coerce")
    if len(unique) and as_int.notna().all() and (as_int == as_int.round()).all():
        order = np.argsort(as_int.to_numpy(), kind="stable")
    else:
        order = np.argsort(unique, kind="stable")
    return np.asarray(unique[order], dtype=object)


@dataclass(eq=False)
class Dataset:
    """Interactions over internal indices plus what the indices mean.

    ``items`` has one row per item index, with an ``item_id`` column, any text columns and an
    optional ``image_path`` column. ``extras`` holds further tables (for example the synthetic
    world's true attributes), saved as Parquet beside the rest.
    """

    interactions: Interactions
    user_ids: np.ndarray
    item_ids: np.ndarray
    items: pd.DataFrame
    provenance: dict[str, Any] = field(default_factory=dict)
    split: Split | None = None
    extras: dict[str, pd.DataFrame] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        if len(self.user_ids) != self.interactions.n_users:
            raise DataError("user id map does not match the interactions' user count")
        if len(self.item_ids) != self.interactions.n_items:
            raise DataError("item id map does not match the interactions' item count")
        if len(self.items) != len(self.item_ids):
            raise DataError("items table must have one row per item index")

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_frames(
        cls,
        interactions: pd.DataFrame,
        items: pd.DataFrame | None = None,
        provenance: dict[str, Any] | None = None,
        where: str | None = None,
    ) -> Dataset:
        """Build from external ids: ``interactions`` has ``user_id``, ``item_id`` and optional
        ``rating`` and ``timestamp``; ``items`` has ``item_id`` and any content columns.

        The item index follows the items table's row order when one is given (so features aligned
        to it stay aligned); items only seen in interactions are appended in sorted id order.
        """
        if interactions.empty:
            raise DataError("no interactions", where=where, hint="check the file and the column mapping")
        for column in ("user_id", "item_id"):
            if column not in interactions:
                raise DataError(f"missing column {column!r}", where=where)
        inter = interactions.copy()
        inter["user_id"] = inter["user_id"].astype(str)
        inter["item_id"] = inter["item_id"].astype(str)
        user_ids = sort_ids(inter["user_id"].to_numpy())
        if items is None:
            item_ids = sort_ids(inter["item_id"].to_numpy())
            table = pd.DataFrame({"item_id": item_ids})
        else:
            table = items.copy()
            table["item_id"] = table["item_id"].astype(str)
            if table["item_id"].duplicated().any():
                dup = table.loc[table["item_id"].duplicated(), "item_id"].iloc[0]
                raise DataError(f"duplicate item id {dup!r} in the items table", where=where)
            extra = np.setdiff1d(inter["item_id"].unique(), table["item_id"].to_numpy())
            if len(extra):
                table = pd.concat([table, pd.DataFrame({"item_id": sort_ids(extra)})], ignore_index=True)
            item_ids = table["item_id"].to_numpy(dtype=object)
        user_index = pd.Index(user_ids)
        item_index = pd.Index(item_ids)
        matrix = Interactions.from_arrays(
            user_index.get_indexer(inter["user_id"]),
            item_index.get_indexer(inter["item_id"]),
            len(user_ids),
            len(item_ids),
            inter["rating"].to_numpy(dtype=np.float32) if "rating" in inter else None,
            inter["timestamp"].to_numpy(dtype=np.int64) if "timestamp" in inter else None,
        )
        return cls(matrix, user_ids, item_ids, table.reset_index(drop=True), dict(provenance or {}))

    def with_split(self, split: Split) -> Dataset:
        if (split.train.n_users, split.train.n_items) != (self.n_users, self.n_items):
            raise DataError("split does not match this data set's users and items")
        return replace(self, split=split)

    # --- views ---------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return self.interactions.n_users

    @property
    def n_items(self) -> int:
        return self.interactions.n_items

    @property
    def text_fields(self) -> list[str]:
        return [c for c in self.items.columns if c not in ("item_id", "image_path")]

    def require_split(self) -> Split:
        if self.split is None:
            raise DataError("this data set has no split", where=str(self.path or ""),
                            hint="run `modalrec data split DIR --protocol random`")
        return self.split

    def user_index(self, ids: list[str] | np.ndarray) -> np.ndarray:
        return _lookup(self.user_ids, ids, "user")

    def item_index(self, ids: list[str] | np.ndarray) -> np.ndarray:
        return _lookup(self.item_ids, ids, "item")

    def info(self) -> dict[str, Any]:
        n = self.interactions.nnz
        info: dict[str, Any] = {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n,
            "density": n / max(1, self.n_users * self.n_items),
            "has_ratings": self.interactions.ratings is not None,
            "has_timestamps": self.interactions.timestamps is not None,
            "text_fields": self.text_fields,
            "images": int(self.items["image_path"].notna().sum()) if "image_path" in self.items else 0,
        }
        if self.split is not None:
            info["split"] = {"protocol": self.split.protocol, **self.split.sizes()}
        return info

    # --- persistence ----------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write every table atomically; the manifest goes last and marks the folder complete."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        io.write_parquet(folder / "interactions.parquet", self.interactions.to_frame())
        io.write_parquet(folder / "users.parquet", pd.DataFrame({"user_id": self.user_ids.astype(str)}))
        io.write_parquet(folder / "items.parquet", _relative_images(self.items, folder))
        for name, table in self.extras.items():
            io.write_parquet(folder / f"extra-{name}.parquet", table)
        if self.split is not None:
            self.split.save(folder / "split")
        io.write_json(folder / "manifest.json", {
            "format": FORMAT,
            "version": VERSION,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": self.interactions.nnz,
            "provenance": self.provenance,
            "extras": sorted(self.extras),
            "has_split": self.split is not None,
        })
        self.path = folder
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Dataset:
        folder = Path(folder)
        manifest_path = folder / "manifest.json"
        if not manifest_path.exists():
            raise DataError("not a modalrec data set (no manifest.json)", where=str(folder),
                            hint="create one with `modalrec data synth` or `modalrec data import`")
        manifest = io.read_json(manifest_path)
        if manifest.get("format") != FORMAT:
            raise DataError("manifest.json is not a modalrec data set manifest", where=str(manifest_path))
        n_users, n_items = manifest["n_users"], manifest["n_items"]
        interactions = Interactions.from_frame(pd.read_parquet(folder / "interactions.parquet"), n_users, n_items)
        items = _absolute_images(pd.read_parquet(folder / "items.parquet"), folder)
        users = pd.read_parquet(folder / "users.parquet")["user_id"].to_numpy(dtype=object)
        extras = {name: pd.read_parquet(folder / f"extra-{name}.parquet") for name in manifest["extras"]}
        split = Split.load(folder / "split") if manifest.get("has_split") else None
        return cls(
            interactions, users, items["item_id"].to_numpy(dtype=object), items,
            manifest["provenance"], split, extras, folder,
        )

    def save_split(self, split: Split) -> Dataset:
        """Attach ``split`` and persist it (and the manifest flag) in this data set's folder."""
        if self.path is None:
            raise DataError("data set has no folder yet; save it first")
        dataset = self.with_split(split)
        dataset.save(self.path)
        return dataset


def _lookup(known: np.ndarray, ids: list[str] | np.ndarray, kind: str) -> np.ndarray:
    index = pd.Index(known.astype(str))
    wanted = np.asarray(ids, dtype=str)
    found = index.get_indexer(wanted)
    if (found < 0).any():
        missing = wanted[found < 0][:5].tolist()
        raise DataError(f"unknown {kind} id(s): {', '.join(missing)}")
    return found.astype(np.int64)


def _relative_images(items: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """Image paths inside the data set folder are stored relative, so the folder can move."""
    if "image_path" not in items:
        return items
    root = folder.resolve()

    def rel(value: object) -> object:
        if not isinstance(value, str) or not value:
            return None if value is None or (isinstance(value, float) and np.isnan(value)) else value
        path = Path(value)
        return str(path.resolve().relative_to(root)) if path.is_absolute() and path.resolve().is_relative_to(root) else value

    return items.assign(image_path=items["image_path"].map(rel))


def _absolute_images(items: pd.DataFrame, folder: Path) -> pd.DataFrame:
    if "image_path" not in items:
        return items
    root = folder.resolve()
    return items.assign(image_path=items["image_path"].map(
        lambda v: str(root / v) if isinstance(v, str) and v and not Path(v).is_absolute() else v))
