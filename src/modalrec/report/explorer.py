"""The item explorer: what a person checks before trusting a representation.

For a few items it gathers the image, the text, the LVLM description and its parsed slots, and the
nearest neighbours under each stored representation (cosine, computed for these rows only).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from modalrec.data.dataset import Dataset

TEXT_LIMIT = 400


@dataclass
class ExplorerItem:
    item_id: str
    title: str
    text: str
    image_png: str | None
    descriptions: dict[str, str] = field(default_factory=dict)
    slots: dict[str, dict[str, str]] = field(default_factory=dict)
    neighbours: dict[str, list[tuple[str, str, float]]] = field(default_factory=dict)


def thumbnail(path: object, size: int = 96) -> str | None:
    """A base64 PNG thumbnail, or None for a missing or unreadable image."""
    if not isinstance(path, str) or not path or not Path(path).exists():
        return None
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except OSError:
        return None
    return base64.b64encode(buffer.getvalue()).decode()


def pick_items(dataset: Dataset, n: int, seed: int = 0) -> np.ndarray:
    """Popular-enough items first (people recognise them), then a seeded sample of those."""
    counts = dataset.interactions.item_counts()
    pool = np.argsort(-counts, kind="stable")[: max(n * 5, n)]
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))


def explore(dataset: Dataset, items: np.ndarray, k: int = 5) -> list[ExplorerItem]:
    from modalrec.features.store import FeatureStore

    assert dataset.path is not None
    store = FeatureStore(dataset.path)
    table = dataset.items
    titles = table["title"].astype(str) if "title" in table else table["item_id"].astype(str)
    text_columns = [c for c in dataset.text_fields if c != "title"]
    neighbours = {name: _neighbours(store.load(name).matrix, items, k) for name in store.names()}
    descriptions = _descriptions(dataset.path)
    out = []
    for item in items:
        row = table.iloc[item]
        text = " ".join(str(row[c]) for c in text_columns if isinstance(row[c], str))
        entry = ExplorerItem(
            item_id=str(dataset.item_ids[item]), title=titles.iloc[item],
            text=text[:TEXT_LIMIT] + ("…" if len(text) > TEXT_LIMIT else ""),
            image_png=thumbnail(row.get("image_path")),
        )
        for name, (indices, sims) in neighbours.items():
            position = int(np.flatnonzero(items == item)[0])
            entry.neighbours[name] = [(str(dataset.item_ids[j]), titles.iloc[j], float(s))
                                      for j, s in zip(indices[position], sims[position])]
        for name, frame in descriptions.items():
            match = frame[frame["item_id"].astype(str) == entry.item_id]
            if len(match):
                first = match.iloc[0]
                entry.descriptions[name] = str(first.get("text", ""))
                entry.slots[name] = {c.removeprefix("slot_"): str(first[c]) for c in match.columns
                                     if c.startswith("slot_") and isinstance(first[c], str)}
        out.append(entry)
    return out


def _neighbours(matrix: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = matrix / np.where(norms > 0, norms, 1.0)
    sims = unit[items] @ unit.T
    sims[np.arange(len(items)), items] = -np.inf
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(sims, top, axis=1)


def _descriptions(folder: Path) -> dict[str, pd.DataFrame]:
    path = folder / "descriptions"
    return {p.stem: pd.read_parquet(p) for p in sorted(path.glob("*.parquet"))} if path.exists() else {}
