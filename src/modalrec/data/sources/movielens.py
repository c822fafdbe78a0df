"""MovieLens-100K from a local ``ml-100k`` folder, optionally with posters and plot overviews.

``u.data`` holds ``user \\t item \\t rating \\t timestamp``; ``u.item`` is pipe-separated latin-1:
``movie id | title | release date | video release date | IMDb URL | 19 genre flags``. The genres
become an item column (``genres``, '|'-joined names) so later checks can ask for same-genre items.
Posters are ``<movie_id>.jpg`` files; overviews come from a CSV with ``movie_id`` and ``overview``
columns (the TMDB table: duplicated movie ids are resolved by keeping the first row).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from modalrec.data.dataset import Dataset
from modalrec.data.filtering import deduplicate
from modalrec.data.sources.images import attach_images
from modalrec.data.sources.tables import read_delimited, read_table
from modalrec.errors import DataError

log = logging.getLogger(__name__)

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western")
ITEM_FIELDS = ("item_id", "title", "release_date", "video_release_date", "imdb_url")
DATA_FIELDS = ("user_id", "item_id", "rating", "timestamp")


def find_ml100k(path: str | Path) -> Path:
    """The folder holding ``u.data``: ``path`` itself or its ``ml-100k`` subfolder."""
    path = Path(path)
    for candidate in (path, path / "ml-100k"):
        if (candidate / "u.data").is_file():
            return candidate
    if not path.exists():
        raise DataError("folder not found", where=str(path), hint="--path takes the ml-100k folder")
    raise DataError("no u.data here (nor in ml-100k/ below)", where=str(path),
                    hint="point --path at the extracted ml-100k folder, or run `modalrec data download ml100k`")


def read_genres(folder: Path) -> tuple[str, ...]:
    """Genre names from ``u.genre`` (``name|index`` lines), falling back to the published list."""
    path = folder / "u.genre"
    if not path.is_file():
        return GENRES
    table = read_delimited(path, sep="|", header=False, names=("name", "index"), encoding="latin-1",
                           quoting=False)
    index = table.numbers("index", integer=True)
    names = table.strings("name")
    out = [""] * (int(index.max()) + 1)
    for k, name in zip(index, names):
        out[int(k)] = str(name)
    return tuple(out)


def read_items(folder: Path) -> pd.DataFrame:
    """``u.item`` -> ``item_id, title, genres`` in movie id order."""
    genres = read_genres(folder)
    names = (*ITEM_FIELDS, *(f"g{k}" for k in range(len(genres))))
    table = read_delimited(folder / "u.item", sep="|", header=False, names=names, encoding="latin-1",
                           quoting=False)
    ids = table.numbers("item_id", integer=True)
    flags = np.stack([table.numbers(f"g{k}", integer=True) for k in range(len(genres))], axis=1)
    if not np.isin(flags, (0, 1)).all():
        row = int(np.flatnonzero(~np.isin(flags, (0, 1)).all(axis=1))[0])
        raise DataError("genre flags must be 0 or 1", where=table.where(row))
    labels = ["|".join(g for g, f in zip(genres, row) if f) for row in flags]
    items = pd.DataFrame({"item_id": ids.astype(str), "title": table.strings("title", allow_missing=True),
                          "genres": labels})
    if items["item_id"].duplicated().any():
        row = int(np.flatnonzero(items["item_id"].duplicated().to_numpy())[0])
        raise DataError(f"duplicate movie id {items['item_id'].iloc[row]}", where=table.where(row))
    return items.iloc[np.argsort(ids, kind="stable")].reset_index(drop=True)


def read_ratings(folder: Path) -> pd.DataFrame:
    table = read_delimited(folder / "u.data", sep="\t", header=False, names=DATA_FIELDS, quoting=False)
    return pd.DataFrame({
        "user_id": table.numbers("user_id", integer=True).astype(str),
        "item_id": table.numbers("item_id", integer=True).astype(str),
        "rating": table.numbers("rating"),
        "timestamp": table.timestamps("timestamp"),
        "_line": table.lines,
    })


def read_overviews(path: str | Path) -> tuple[pd.Series, dict[str, int]]:
    """movie id -> overview text (first row per id wins; empty overviews are missing)."""
    table = read_table(path)
    table.require("movie_id", "overview", hint="the overviews CSV needs movie_id and overview columns")
    ids = table.numbers("movie_id", integer=True).astype(str)
    text = pd.Series(table.strings("overview", allow_missing=True), index=ids)
    duplicated = text.index.duplicated(keep="first")
    text = text[~duplicated]
    text = text[text.notna() & (text != "")]
    return text, {"overview_rows": len(table), "overview_duplicates_dropped": int(duplicated.sum())}


def import_movielens(path: str | Path, *, posters: str | Path | None = None,
                     overviews: str | Path | None = None, verify_images: bool = True) -> Dataset:
    """A local ml-100k folder (optionally with a poster folder and an overviews CSV) -> Dataset."""
    folder = find_ml100k(path)
    ratings = read_ratings(folder)
    ratings, removed = deduplicate(ratings, "last")
    items = read_items(folder)
    provenance: dict = {"source": "movielens", "path": str(folder.resolve()), "duplicates_removed": removed}
    if overviews is not None:
        text, report = read_overviews(overviews)
        items["overview"] = items["item_id"].map(text)
        report["overviews_path"] = str(Path(overviews).resolve())
        report["items_with_overview"] = int(items["overview"].notna().sum())
        report["overviews_without_item"] = int((~text.index.isin(items["item_id"])).sum())
        provenance.update(report)
    if posters is not None:
        items, report = attach_images(items, posters, verify=verify_images)
        provenance.update(report)
    unknown = ~ratings["item_id"].isin(items["item_id"])
    if unknown.any():
        row = ratings.loc[unknown].iloc[0]
        raise DataError(f"u.data rates movie {row['item_id']}, which u.item lacks",
                        where=f"{folder / 'u.data'}:{int(row['_line'])}",
                        hint="the two files come from different releases")
    return Dataset.from_frames(ratings, items, provenance, where=str(folder / "u.data"))
