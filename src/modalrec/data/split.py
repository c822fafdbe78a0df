"""A train / validation / test split over one id space, and how it was made."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalrec import io
from modalrec.data.interactions import Interactions
from modalrec.errors import DataError

PARTS = ("train", "valid", "test")


@dataclass(eq=False)
class Split:
    """Three disjoint interaction sets over the same users and items.

    ``cold_items`` lists items held out of training entirely (cold-item protocol), so only content
    can score them.
    """

    train: Interactions
    valid: Interactions
    test: Interactions
    protocol: str
    params: dict[str, Any] = field(default_factory=dict)
    cold_items: np.ndarray | None = None

    def __post_init__(self) -> None:
        shapes = {(p.n_users, p.n_items) for p in (self.train, self.valid, self.test)}
        if len(shapes) != 1:
            raise DataError(f"split parts disagree in shape: {sorted(shapes)}")

    def part(self, name: str) -> Interactions:
        if name not in PARTS:
            raise DataError(f"unknown split part {name!r}; choose one of {', '.join(PARTS)}")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {name: self.part(name).nnz for name in PARTS}

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        for name in PARTS:
            io.write_parquet(folder / f"{name}.parquet", self.part(name).to_frame())
        meta = {
            "protocol": self.protocol,
            "params": self.params,
            "n_users": self.train.n_users,
            "n_items": self.train.n_items,
            "sizes": self.sizes(),
        }
        if self.cold_items is not None:
            io.write_npy(folder / "cold_items.npy", self.cold_items.astype(np.int64))
        elif (folder / "cold_items.npy").exists():
            (folder / "cold_items.npy").unlink()
        io.write_json(folder / "split.json", meta)  # written last: its presence marks completeness

    @classmethod
    def load(cls, folder: str | Path) -> Split:
        folder = Path(folder)
        meta_path = folder / "split.json"
        if not meta_path.exists():
            raise DataError("no split saved here", where=str(folder), hint="run `modalrec data split`")
        meta = io.read_json(meta_path)
        n_users, n_items = meta["n_users"], meta["n_items"]
        parts = {
            name: Interactions.from_frame(pd.read_parquet(folder / f"{name}.parquet"), n_users, n_items)
            for name in PARTS
        }
        cold_path = folder / "cold_items.npy"
        cold = io.read_npy(cold_path) if cold_path.exists() else None
        return cls(**parts, protocol=meta["protocol"], params=meta["params"], cold_items=cold)
