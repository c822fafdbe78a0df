"""Filtering a data set: duplicates, a rating threshold, and the iterative user/item k-core.

Filtering happens **before** splitting: a split made first and filtered afterwards would lose the
per-user guarantees of its protocol (every user with test and validation items, no cold item in
train, ...). Filters therefore drop any split made by a protocol and keep only an imported
``fixed`` split, restricted to what survives (the user's own split cannot be re-made).

Each filter returns a new ``Dataset`` with users and items re-indexed ``0..n-1`` in their old order;
the items table (and with it text and image paths) follows the kept items, and provenance records
every step with before/after counts.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from modalrec.data.dataset import Dataset
from modalrec.data.interactions import Interactions
from modalrec.data.split import PARTS, Split
from modalrec.errors import ConfigError

log = logging.getLogger(__name__)

DEDUP_POLICIES = ("last", "first", "mean")


def deduplicate(
    frame: pd.DataFrame, policy: str = "last", keys: tuple[str, str] = ("user_id", "item_id")
) -> tuple[pd.DataFrame, int]:
    """Keep one row per (user, item) pair; returns the frame (kept rows in file order) and the
    number of rows removed.

    ``last`` keeps the latest interaction by timestamp (file order breaks ties and stands in when
    there are no timestamps), ``first`` the earliest, ``mean`` averages the ratings and keeps the
    latest timestamp (other columns from the pair's first row).
    """
    if policy not in DEDUP_POLICIES:
        raise ConfigError(f"unknown duplicate policy {policy!r}; choose one of {', '.join(DEDUP_POLICIES)}",
                          where="--dedup")
    keys = list(keys)
    dup = frame.duplicated(keys, keep=False)
    if not dup.any():
        return frame, 0
    if policy == "mean":
        grouped = frame.groupby(keys, sort=False)
        out = grouped.first()
        if "rating" in frame:
            out["rating"] = grouped["rating"].mean()
        if "timestamp" in frame:
            out["timestamp"] = grouped["timestamp"].max()
        out = out.reset_index()[list(frame.columns)]
    else:
        # in time order (file order on ties), so keep="last" is the latest interaction
        positions = np.arange(len(frame))
        order = np.lexsort((positions, frame["timestamp"].to_numpy())) if "timestamp" in frame else positions
        duplicated = frame.iloc[order].duplicated(keys, keep=policy).to_numpy()
        out = frame.iloc[np.sort(order[~duplicated])]
    out = out.reset_index(drop=True)
    return out, len(frame) - len(out)


def k_core_mask(users: np.ndarray, items: np.ndarray, user_k: int, item_k: int) -> np.ndarray:
    """Which interactions survive the iterative k-core: every kept user has at least ``user_k`` and
    every kept item at least ``item_k`` kept interactions.

    Removing the interactions of every node below its threshold and repeating until nothing changes
    yields the unique *maximal* such subgraph (removal never makes another node eligible again).
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    keep = np.ones(len(users), dtype=bool)
    n_users = int(users.max()) + 1 if len(users) else 0
    n_items = int(items.max()) + 1 if len(items) else 0
    while True:
        user_count = np.bincount(users[keep], minlength=n_users)
        item_count = np.bincount(items[keep], minlength=n_items)
        drop = keep & ((user_count[users] < user_k) | (item_count[items] < item_k))
        if not drop.any():
            return keep
        keep &= ~drop


def k_core(dataset: Dataset, user_k: int, item_k: int | None = None) -> Dataset:
    """The iterative k-core (``item_k`` defaults to ``user_k``); users and items outside it go."""
    item_k = user_k if item_k is None else item_k
    for name, k in (("user k", user_k), ("item k", item_k)):
        if k < 0:
            raise ConfigError(f"{name} must be >= 0, got {k}", where="--k-core")
    inter = dataset.interactions
    keep = k_core_mask(inter.users, inter.items, user_k, item_k)
    return restrict(dataset, keep, {"step": "k_core", "user_k": int(user_k), "item_k": int(item_k)})


def min_rating(dataset: Dataset, threshold: float) -> Dataset:
    """Treat ratings >= ``threshold`` as positive feedback: drop the rest, keep the rating column."""
    ratings = dataset.interactions.ratings
    if ratings is None:
        raise ConfigError("this data has no ratings, so a rating threshold cannot apply",
                          where="--min-rating", hint="drop --min-rating")
    if not np.isfinite(threshold):
        raise ConfigError(f"rating threshold must be a finite number, got {threshold}", where="--min-rating")
    return restrict(dataset, ratings >= threshold, {"step": "min_rating", "threshold": float(threshold)})


def apply_filters(dataset: Dataset, *, min_rating_threshold: float | None = None, user_k: int | None = None,
                  item_k: int | None = None) -> Dataset:
    """The usual order: the rating threshold first, then the k-core on what is left."""
    if min_rating_threshold is not None:
        dataset = min_rating(dataset, min_rating_threshold)
    if user_k is not None or item_k is not None:
        dataset = k_core(dataset, user_k or 0, item_k if item_k is not None else (user_k or 0))
    return dataset


def restrict(dataset: Dataset, keep: np.ndarray, step: dict[str, Any]) -> Dataset:
    """Keep the interactions where ``keep`` (over stored entries) is true and drop every user and
    item left without one, re-indexing both; ``step`` is recorded in provenance."""
    inter = dataset.interactions
    keep = np.asarray(keep, dtype=bool)
    users, items = inter.users[keep], inter.items[keep]
    kept_users = np.flatnonzero(np.bincount(users, minlength=inter.n_users) > 0)
    kept_items = np.flatnonzero(np.bincount(items, minlength=inter.n_items) > 0)
    user_map = _index_map(kept_users, inter.n_users)
    item_map = _index_map(kept_items, inter.n_items)
    new = _remap(inter, keep, user_map, item_map, len(kept_users), len(kept_items))

    provenance = dict(dataset.provenance)
    record = dict(step)
    record.update({
        "interactions": [inter.nnz, new.nnz],
        "users": [inter.n_users, len(kept_users)],
        "items": [inter.n_items, len(kept_items)],
    })
    split = None
    if dataset.split is not None:
        if dataset.split.protocol == "fixed":
            split = _restrict_split(dataset.split, inter, keep, user_map, item_map,
                                    len(kept_users), len(kept_items))
        else:
            log.warning("filtering drops the %r split; split again afterwards", dataset.split.protocol)
            record["dropped_split"] = dataset.split.protocol
    provenance["filters"] = [*provenance.get("filters", []), record]
    log.info("%s: %d -> %d interactions, %d -> %d users, %d -> %d items", step["step"], inter.nnz,
             new.nnz, inter.n_users, len(kept_users), inter.n_items, len(kept_items))

    user_ids = dataset.user_ids[kept_users]
    item_ids = dataset.item_ids[kept_items]
    return replace(
        dataset,
        interactions=new,
        user_ids=user_ids,
        item_ids=item_ids,
        items=dataset.items.iloc[kept_items].reset_index(drop=True),
        provenance=provenance,
        split=split,
        extras={name: _restrict_extra(t, user_ids, item_ids) for name, t in dataset.extras.items()},
        path=None,
    )


def _index_map(kept: np.ndarray, n: int) -> np.ndarray:
    mapping = np.full(n, -1, dtype=np.int64)
    mapping[kept] = np.arange(len(kept))
    return mapping


def _remap(inter: Interactions, keep: np.ndarray, user_map: np.ndarray, item_map: np.ndarray,
           n_users: int, n_items: int) -> Interactions:
    return Interactions.from_arrays(
        user_map[inter.users[keep]], item_map[inter.items[keep]], n_users, n_items,
        None if inter.ratings is None else inter.ratings[keep],
        None if inter.timestamps is None else inter.timestamps[keep],
    )


def _restrict_split(split: Split, everything: Interactions, keep: np.ndarray, user_map: np.ndarray,
                    item_map: np.ndarray, n_users: int, n_items: int) -> Split:
    """Each part keeps the (user, item) pairs the filter kept in the whole data."""
    n = everything.n_items
    kept_keys = everything.users[keep] * n + everything.items[keep]
    parts = []
    for name in PARTS:
        part = split.part(name)
        part_keep = np.isin(part.users * n + part.items, kept_keys)
        parts.append(_remap(part, part_keep, user_map, item_map, n_users, n_items))
    cold = None
    if split.cold_items is not None:
        mapped = item_map[split.cold_items]
        cold = mapped[mapped >= 0]
    return Split(*parts, protocol=split.protocol, params=dict(split.params), cold_items=cold)


def _restrict_extra(table: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray) -> pd.DataFrame:
    """Extra tables keyed by ``item_id`` / ``user_id`` keep only the surviving ids."""
    mask = np.ones(len(table), dtype=bool)
    if "item_id" in table:
        mask &= table["item_id"].astype(str).isin(item_ids.astype(str)).to_numpy()
    if "user_id" in table:
        mask &= table["user_id"].astype(str).isin(user_ids.astype(str)).to_numpy()
    return table.loc[mask].reset_index(drop=True)
