"""Small input files in each supported format, written into a test's tmp_path.

Shared by the data-layer tests (sources, filtering, CLI); every value is chosen so the expected
counts can be read off the file by eye.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

# u.data rows: user, item, rating, timestamp (3 users, 4 movies, 9 ratings)
ML_RATINGS = [
    (1, 1, 5, 100), (1, 2, 3, 200), (1, 3, 4, 300), (1, 4, 1, 400),
    (2, 1, 4, 150), (2, 3, 2, 250), (2, 4, 5, 350),
    (3, 2, 5, 120), (3, 4, 4, 220),
]
ML_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
             "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
             "War", "Western"]
# movie id -> (title, genre names)
ML_MOVIES = {
    1: ("Toy Story (1995)", ["Animation", "Children's", "Comedy"]),
    2: ("GoldenEye (1995)", ["Action", "Adventure", "Thriller"]),
    3: ("Café au lait (1993)", ["Comedy"]),  # latin-1 on disk
    4: ('"Heat" (1995)', ["Action", "Crime", "Thriller"]),  # a quote is an ordinary character here
}


def write_ml100k(root: Path) -> Path:
    """A miniature ``ml-100k`` folder (u.data, u.item in latin-1, u.genre) under ``root``."""
    folder = root / "ml-100k"
    folder.mkdir(parents=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ML_RATINGS))
    lines = []
    for movie, (title, genres) in ML_MOVIES.items():
        flags = "|".join("1" if g in genres else "0" for g in ML_GENRES)
        lines.append(f"{movie}|{title}|01-Jan-1995||http://example.org/{movie}|{flags}\n")
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1"))
    (folder / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(ML_GENRES)) + "\n")
    return folder


def write_image(path: Path, color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (8, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_posters(root: Path, movies: list[int]) -> Path:
    folder = root / "posters"
    for movie in movies:
        write_image(folder / f"{movie}.jpg", (10 * movie, 50, 90))
    return folder


def write_overviews(root: Path) -> Path:
    """TMDB-like CSV: a quoted multi-line overview, a duplicated movie id (first row wins), an
    empty overview and a movie unknown to u.item."""
    path = root / "items.csv"
    path.write_text(
        "movie_id,title,overview,year\n"
        '1,Toy Story (1995),"Toys come to life.\nWoody is jealous.",1995\n'
        "2,GoldenEye (1995),A spy stops a satellite.,1995\n"
        "2,GoldenEye (1995),DUPLICATE ROW,1995\n"
        "3,Cafe au lait (1993),,1993\n"
        "99,Unknown,Not in u.item.,2000\n",
        encoding="utf-8",
    )
    return path


# Elliot parts: user, item, rating (the test part knows an item and a user train does not)
ELLIOT = {
    "train": [("u1", "a", 5), ("u1", "b", 3), ("u2", "a", 4), ("u2", "c", 2), ("u3", "b", 1)],
    "valid": [("u1", "c", 4), ("u3", "a", 5)],
    "test": [("u2", "b", 3), ("u4", "d", 5)],
}


def write_elliot(root: Path) -> dict[str, Path]:
    paths = {}
    for name, rows in ELLIOT.items():
        path = root / f"{name}.tsv"
        path.write_text("".join(f"{u}\t{i}\t{r}\n" for u, i, r in rows))
        paths[name] = path
    return paths


# MMRec rows: user, item, rating, timestamp, x_label; items 0..4 interact, feature rows go to 6
MMREC = [
    (0, 0, 5, 10, 0), (0, 1, 3, 11, 0), (0, 2, 4, 12, 1), (0, 3, 2, 13, 2),
    (1, 1, 4, 20, 0), (1, 4, 5, 21, 0), (1, 0, 1, 22, 1), (1, 2, 3, 23, 2),
    (2, 3, 5, 30, 0), (2, 4, 4, 31, 2),
]
MMREC_FEATURE_ROWS = 7


def write_mmrec(root: Path, rows: list[tuple] = MMREC, features: bool = True) -> Path:
    folder = root / "mmrec"
    folder.mkdir(parents=True)
    body = "".join("\t".join(str(v) for v in row) + "\n" for row in rows)
    (folder / "data.inter").write_text("userID\titemID\trating\ttimestamp\tx_label\n" + body)
    if features:
        rng = np.random.default_rng(0)
        image = rng.normal(size=(MMREC_FEATURE_ROWS, 4)).astype(np.float32)
        image[5] = 0.0  # a zero row: an item without an image
        np.save(folder / "image_feat.npy", image)
        np.save(folder / "text_feat.npy", rng.normal(size=(MMREC_FEATURE_ROWS, 3)).astype(np.float32))
    return folder


def write_folder_source(root: Path) -> dict[str, Path]:
    """A user's own files: interactions CSV (with a duplicate), items JSONL, images (one corrupt)."""
    root.mkdir(parents=True, exist_ok=True)
    inter = root / "events.csv"
    inter.write_text(
        "uid,iid,stars,when\n"
        "alice,p1,5,100\n"
        "alice,p2,3,110\n"
        "bob,p1,4,120\n"
        "\n"
        "bob,p3,2,130\n"
        "carol,p2,5,140\n"
        "alice,p1,1,90\n"  # an older duplicate of (alice, p1): the latest (rating 5) stays
        "carol,p4,4,150\n",
    )
    items = root / "items.jsonl"
    items.write_text(
        '{"iid": "p3", "title": "Lamp", "tags": ["light", "home"]}\n'
        '{"iid": "p1", "title": "Chair", "tags": []}\n'
        '{"iid": "p2", "title": "Table"}\n'
        '{"iid": "p9", "title": "Never bought"}\n',
    )
    images = root / "images"
    write_image(images / "p1.jpg")
    write_image(images / "p2.png", (0, 0, 255))
    write_image(images / "p9.webp", (0, 255, 0))
    (images / "p3.jpg").write_bytes(b"this is not an image")
    (images / "zz.jpg").write_bytes(b"no item has this id")
    (images / "notes.txt").write_text("ignored")
    return {"interactions": inter, "items": items, "images": images}


def ml100k_zip_bytes(root: Path) -> bytes:
    """A zip laid out like GroupLens' ml-100k.zip, holding the miniature folder."""
    folder = write_ml100k(root / "zip-src")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"ml-100k/{path.name}")
    return buffer.getvalue()
