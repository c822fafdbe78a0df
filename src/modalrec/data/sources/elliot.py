"""Elliot-style split files: headerless ``user \\t item \\t rating [\\t timestamp]`` train/valid/test.

The three files are kept as a fixed split over one id space (ids sorted as ``Dataset.from_frames``
does: numerically when every id is an integer, else as strings).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from modalrec.data.dataset import Dataset
from modalrec.data.sources.fixed import LINE, build_fixed
from modalrec.data.sources.tables import read_delimited

NAMES = ("user_id", "item_id", "rating", "timestamp")


def read_split_file(path: str | Path, *, sep: str | None = "\t") -> pd.DataFrame:
    """One headerless part file -> ``user_id, item_id[, rating][, timestamp], _line``."""
    table = read_delimited(path, sep=sep, header=False, names=NAMES, min_fields=2, quoting=False)
    frame = pd.DataFrame({
        "user_id": table.strings("user_id"),
        "item_id": table.strings("item_id"),
    })
    if "rating" in table.frame:
        frame["rating"] = table.numbers("rating")
    if "timestamp" in table.frame:
        frame["timestamp"] = table.timestamps("timestamp")
    frame[LINE] = table.lines
    return frame


def import_elliot(train: str | Path, valid: str | Path, test: str | Path, *, sep: str | None = "\t",
                  dedup: str = "last") -> Dataset:
    """Read the three part files into a data set with a ``fixed`` split."""
    files = {"train": Path(train), "valid": Path(valid), "test": Path(test)}
    parts = {name: read_split_file(path, sep=sep) for name, path in files.items()}
    provenance = {"source": "elliot", "dedup": dedup}
    return build_fixed(parts, files, provenance=provenance, dedup=dedup)
