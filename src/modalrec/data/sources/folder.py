"""A user's own files: an interactions table, an optional items table and an optional image folder.

- interactions: CSV/TSV (separator from the extension, sniffed, or ``sep``) with a header; the user,
  item, rating and timestamp column names are configurable (rating and timestamp are optional).
- items: CSV/TSV/JSONL with an item id column; every other column is kept as item content (JSON
  lists and objects are stored as JSON text so the table stays a flat Parquet file).
- images: ``<item_id>.<jpg|jpeg|png|webp>``; the absolute path lands in ``image_path``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalrec.data.dataset import Dataset, sort_ids
from modalrec.data.filtering import deduplicate
from modalrec.data.sources.images import attach_images
from modalrec.data.sources.tables import Table, read_table
from modalrec.errors import DataError

log = logging.getLogger(__name__)


def read_interactions(path: str | Path, *, user_col: str = "user_id", item_col: str = "item_id",
                      rating_col: str | None = None, timestamp_col: str | None = None,
                      sep: str | None = None) -> pd.DataFrame:
    """The interactions table -> ``user_id, item_id[, rating][, timestamp], _line``.

    ``rating_col``/``timestamp_col`` left as ``None`` pick up ``rating``/``timestamp`` when present;
    named explicitly, they must exist.
    """
    table = read_table(path, sep=sep)
    hint = "name the columns with --user-col / --item-col / --rating-col / --timestamp-col"
    table.require(user_col, item_col, hint=hint)
    rating = _optional_column(table, rating_col, "rating", hint)
    timestamp = _optional_column(table, timestamp_col, "timestamp", hint)
    frame = pd.DataFrame({"user_id": table.strings(user_col), "item_id": table.strings(item_col)})
    if rating is not None:
        frame["rating"] = table.numbers(rating)
    if timestamp is not None:
        frame["timestamp"] = table.timestamps(timestamp)
    frame["_line"] = table.lines
    return frame


def read_items(path: str | Path, *, id_col: str = "item_id", sep: str | None = None) -> pd.DataFrame:
    """The items table -> ``item_id`` plus its content columns, one row per item.

    The id column is ``id_col`` when the file has it, else ``item_id``.
    """
    table = read_table(path, sep=sep)
    column = id_col if id_col in table.frame else "item_id"
    table.require(column, hint=f"the items file needs an item id column ({id_col!r} or 'item_id')")
    ids = table.strings(column)
    duplicated = pd.Series(ids).duplicated().to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise DataError(f"duplicate item id {ids[row]!r} in the items table", where=table.where(row))
    items = pd.DataFrame({"item_id": ids})
    for name in table.columns:
        if name != column:
            items[name] = table.frame[name].map(_flat).to_numpy(dtype=object)
    return items


def import_folder(
    interactions: str | Path,
    items: str | Path | None = None,
    images: str | Path | None = None,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    rating_col: str | None = None,
    timestamp_col: str | None = None,
    sep: str | None = None,
    dedup: str = "last",
    verify_images: bool = True,
) -> Dataset:
    """Build a data set from the user's files (see the module docstring).

    The item index follows the items table's row order; items that only occur in interactions are
    appended. Items in the table without interactions are kept (content can still score them).
    """
    inter = read_interactions(interactions, user_col=user_col, item_col=item_col, rating_col=rating_col,
                              timestamp_col=timestamp_col, sep=sep)
    inter, removed = deduplicate(inter, dedup)
    provenance: dict[str, Any] = {
        "source": "folder",
        "interactions_path": str(Path(interactions).resolve()),
        "columns": {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": timestamp_col},
        "dedup": dedup,
        "duplicates_removed": removed,
    }
    if removed:
        log.info("removed %d duplicate interaction(s) (policy %r)", removed, dedup)
    table = None
    if items is not None:
        table = read_items(items, id_col=item_col)  # its own format: by extension or sniffed
        provenance["items_path"] = str(Path(items).resolve())
        provenance["items_without_interactions"] = int((~table["item_id"].isin(inter["item_id"])).sum())
        if "image_path" in table and images is None:
            table, report = _resolve_listed_images(table, Path(items).resolve().parent)
            provenance.update(report)
    if images is not None:
        if table is None:
            table = pd.DataFrame({"item_id": _sorted_ids(inter["item_id"])})
        elif "image_path" in table:
            log.warning("the items table's image_path column is replaced by images from %s", images)
        table, report = attach_images(_complete(table, inter), images, verify=verify_images)
        provenance.update(report)
    return Dataset.from_frames(inter.drop(columns="_line"), table, provenance, where=str(interactions))


def _optional_column(table: Table, named: str | None, default: str, hint: str) -> str | None:
    if named is not None:
        table.require(named, hint=hint)
        return named
    return default if default in table.frame else None


def _flat(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value


def _sorted_ids(ids: pd.Series) -> np.ndarray:
    return sort_ids(ids.to_numpy())


def _complete(table: pd.DataFrame, inter: pd.DataFrame) -> pd.DataFrame:
    """Append items only seen in interactions, so they can be matched to images too."""
    extra = np.setdiff1d(inter["item_id"].unique(), table["item_id"].to_numpy())
    if not len(extra):
        return table
    return pd.concat([table, pd.DataFrame({"item_id": _sorted_ids(pd.Series(extra))})], ignore_index=True)


def _resolve_listed_images(table: pd.DataFrame, base: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """An ``image_path`` column in the items file: make paths absolute (relative to the items file);
    paths that do not exist count as missing."""
    paths = []
    missing = 0
    for value in table["image_path"]:
        if value is None:
            paths.append(None)
            continue
        path = Path(str(value))
        path = path if path.is_absolute() else base / path
        if path.is_file():
            paths.append(str(path.resolve()))
        else:
            paths.append(None)
            missing += 1
    table = table.copy()
    table["image_path"] = pd.Series(paths, index=table.index)
    return table, {"listed_images_missing": missing, "items_with_image": sum(p is not None for p in paths)}
