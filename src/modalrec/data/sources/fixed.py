"""A data set whose split comes with it (Elliot files, MMRec ``x_label``): one id space for all parts.

Shared by the sources that import a fixed split. Ids that only validation or test know are kept
(they belong to the data set and its id maps) and counted in provenance, because evaluators treat
users without training data differently and a reader should see how many there are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalrec.data.dataset import Dataset
from modalrec.data.filtering import deduplicate
from modalrec.data.interactions import Interactions
from modalrec.data.split import PARTS
from modalrec.data.splitting import fixed_split
from modalrec.errors import DataError

LINE = "_line"  # column holding each row's 1-based line in its file


def build_fixed(
    parts: dict[str, pd.DataFrame],
    files: dict[str, Path],
    *,
    items: pd.DataFrame | None = None,
    provenance: dict[str, Any] | None = None,
    dedup: str = "last",
) -> Dataset:
    """Build a data set and its fixed split from one frame per part (``train``/``valid``/``test``).

    Each frame has ``user_id``, ``item_id``, optional ``rating``/``timestamp`` and ``_line``;
    ``files`` names the file each part came from, for error messages. Duplicates inside a part are
    resolved by ``dedup``; a pair in two parts is an error (it would leak test data into training).
    """
    optional = [c for c in ("rating", "timestamp") if c in parts["train"]]
    for name in PARTS:
        have = [c for c in ("rating", "timestamp") if c in parts[name]]
        if have != optional:
            raise DataError(
                f"the {name} part has columns {have or 'no rating/timestamp'} but train has "
                f"{optional or 'none'}; all parts need the same columns", where=str(files[name]))
    provenance = dict(provenance or {})
    frames = []
    removed = {}
    for code, name in enumerate(PARTS):
        frame, n_removed = deduplicate(parts[name], dedup)
        removed[name] = n_removed
        frames.append(frame.assign(_part=code))
    everything = pd.concat(frames, ignore_index=True)
    _check_disjoint(everything, files)

    columns = ["user_id", "item_id", *optional]
    dataset = Dataset.from_frames(everything[columns], items, provenance, where=str(files["train"]))
    user_index = pd.Index(dataset.user_ids.astype(str))
    item_index = pd.Index(dataset.item_ids.astype(str))
    built = []
    for code, _name in enumerate(PARTS):
        rows = everything.loc[everything["_part"] == code]
        built.append(Interactions.from_arrays(
            user_index.get_indexer(rows["user_id"].astype(str)),
            item_index.get_indexer(rows["item_id"].astype(str)),
            dataset.n_users, dataset.n_items,
            rows["rating"].to_numpy(dtype=np.float32) if "rating" in rows else None,
            rows["timestamp"].to_numpy(dtype=np.int64) if "timestamp" in rows else None,
        ))
    train, valid, test = built
    seen_users = train.user_counts() > 0
    seen_items = train.item_counts() > 0
    unknown = {}
    for name, part in (("valid", valid), ("test", test)):
        users, items_ = part.users, part.items
        unknown[name] = {
            "users": int(np.unique(users[~seen_users[users]]).size),
            "items": int(np.unique(items_[~seen_items[items_]]).size),
            "interactions_with_unknown_user": int((~seen_users[users]).sum()),
            "interactions_with_unknown_item": int((~seen_items[items_]).sum()),
        }
    dataset.provenance.update({
        "files": {name: str(Path(files[name]).resolve()) for name in PARTS},
        "rows": {name: len(parts[name]) for name in PARTS},
        "duplicates_removed": removed,
        "not_in_train": unknown,
    })
    split = fixed_split(train, valid, test, {"source": provenance.get("source"), "dedup": dedup})
    return dataset.with_split(split)


def _check_disjoint(everything: pd.DataFrame, files: dict[str, Path]) -> None:
    clash = everything.duplicated(["user_id", "item_id"], keep=False)
    if not clash.any():
        return
    first = everything.loc[clash].iloc[0]
    same = everything.loc[clash & (everything["user_id"] == first["user_id"])
                          & (everything["item_id"] == first["item_id"])]
    (_, a), (_, b) = list(same.iterrows())[:2]
    name_a, name_b = PARTS[int(a["_part"])], PARTS[int(b["_part"])]
    raise DataError(
        f"interaction (user {first['user_id']}, item {first['item_id']}) is in both {name_a} "
        f"({files[name_a]}:{int(a[LINE])}) and {name_b}",
        where=f"{files[name_b]}:{int(b[LINE])}",
        hint="a pair may be in only one part of a split; remove it from one of the files",
    )
