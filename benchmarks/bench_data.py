"""Data sets shared by the benchmark scripts: real splits from ../shared/data and a synthetic catalog.

- ``ml100k``: MovieLens-100K, every rating as implicit feedback, per-user random 0.8 / 0.1 / 0.1 with
  seed 0 (``modalrec.data.splitting.random_split``, which reproduces the MMRec reference split), and
  the reference's poster (EfficientNet-Lite0, 1280-d) and overview (MiniLM, 384-d) features.
- ``baby``: Amazon 2014 Baby with its fixed split; user and item strings mapped to 0-based ids in
  sorted order over the three files. No features: feature rows get seeded random ones
  (4096-d "image", 384-d "text", MMRec's Baby widths), which is fine for timing only.
- ``synthetic20k``: a 20,000-item catalog with popularity-skewed interactions and random features.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from modalrec.data.interactions import Interactions
from modalrec.data.split import Split
from modalrec.features.features import Features, FeatureSet

SHARED = Path(os.environ.get("MODALREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DATASETS = ("ml100k", "baby", "synthetic20k")


@dataclass
class BenchData:
    name: str
    split: Split
    features: FeatureSet
    features_are_real: bool


def require(path: Path) -> Path:
    if not path.exists():
        raise SystemExit(f"missing {path}: point MODALREC_SHARED_DATA at the shared data folder")
    return path


def ml100k_split(seed: int = 0) -> Split:
    ratings = pd.read_csv(require(SHARED / "ml100k-tmdb" / "ml-100k" / "u.data"), sep="\t",
                          names=["user", "item", "rating", "timestamp"])
    inter = Interactions.from_arrays(ratings["user"].to_numpy() - 1, ratings["item"].to_numpy() - 1, 943, 1682,
                                     ratings["rating"].to_numpy(), ratings["timestamp"].to_numpy())
    try:
        from modalrec.data.splitting import random_split
    except ImportError:  # the data layer not there yet: the same rule, written out
        return _random_split(inter, seed)
    return random_split(inter, (0.8, 0.1, 0.1), seed=seed)


def _random_split(inter: Interactions, seed: int) -> Split:
    """Per user (items in id order), shuffle with one default_rng(seed); k = max(1, round(0.1 n))
    to test, the next k to validation, the rest to training."""
    rng = np.random.default_rng(seed)
    part = np.zeros(inter.nnz, dtype=np.int8)
    for user in range(inter.n_users):
        start, n = int(inter.indptr[user]), int(inter.indptr[user + 1] - inter.indptr[user])
        k = max(1, int(np.floor(0.1 * n + 0.5)))
        order = start + rng.permutation(n)
        part[order[:k]], part[order[k : 2 * k]] = 2, 1
    return Split(*(inter.select(part == p) for p in range(3)), protocol="random", params={"seed": seed})


def ml100k_features() -> FeatureSet:
    folder = SHARED / "ml100k-mmrec-ref"
    image = np.load(require(folder / "image_feat.npy"))
    text = np.load(require(folder / "text_feat.npy"))
    missing = np.loadtxt(folder / "missing_image_items.txt", dtype=np.int64, ndmin=1) \
        if (folder / "missing_image_items.txt").exists() else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(image), dtype=bool)
    mask[missing] = False
    return {"image": Features(image, mask), "text": Features(text)}


def baby_split() -> Split:
    folder = SHARED / "amazon2014-baby"
    parts = [pd.read_csv(require(folder / f"{name}.tsv"), sep="\t", names=["user", "item", "rating"],
                         dtype={"user": str, "item": str}) for name in ("train", "val", "test")]
    users = np.array(sorted(set().union(*(p["user"] for p in parts))))
    items = np.array(sorted(set().union(*(p["item"] for p in parts))))
    inter = [Interactions.from_arrays(np.searchsorted(users, p["user"].to_numpy()),
                                      np.searchsorted(items, p["item"].to_numpy()), len(users), len(items),
                                      p["rating"].to_numpy()) for p in parts]
    return Split(*inter, protocol="fixed", params={"source": "amazon2014-baby"})


def random_features(n_items: int, dims: dict[str, int], seed: int = 0) -> FeatureSet:
    rng = np.random.default_rng(seed)
    return {name: Features(rng.standard_normal((n_items, dim), dtype=np.float32)) for name, dim in dims.items()}


def synthetic_split(n_users: int = 30_000, n_items: int = 20_000, per_user: int = 20, seed: int = 0) -> Split:
    """Zipf-like item popularity; per user about ``per_user`` distinct items, split 0.8/0.1/0.1."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    users = np.repeat(np.arange(n_users), per_user)
    items = rng.choice(n_items, size=len(users), p=popularity)
    keys = np.unique(users * n_items + items)
    inter = Interactions.from_arrays(keys // n_items, keys % n_items, n_users, n_items)
    part = rng.choice(3, size=inter.nnz, p=[0.8, 0.1, 0.1])
    return Split(*(inter.select(part == p) for p in range(3)), protocol="random", params={"seed": seed})


def load(name: str, with_features: bool = True) -> BenchData:
    if name == "ml100k":
        split = ml100k_split()
        return BenchData(name, split, ml100k_features() if with_features else {}, True)
    if name == "baby":
        split = baby_split()
        feats = random_features(split.train.n_items, {"image": 4096, "text": 384}) if with_features else {}
        return BenchData(name, split, feats, False)
    if name == "synthetic20k":
        split = synthetic_split()
        feats = random_features(split.train.n_items, {"image": 4096, "text": 384}) if with_features else {}
        return BenchData(name, split, feats, False)
    raise SystemExit(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


def with_train_users(part: Interactions, train: Interactions) -> Interactions:
    """``part`` without users who have no training interaction (the reference protocol drops them)."""
    keep = train.user_counts()[part.users] > 0
    return part.select(keep)
