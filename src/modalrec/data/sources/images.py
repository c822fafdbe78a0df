"""Item images kept in a folder as ``<item_id>.<jpg|jpeg|png|webp>``.

Images are not copied: the items table stores each image's absolute path (``None`` when an item has
none). A file that cannot be opened as an image is recorded in provenance as missing content rather
than aborting the import, because one broken poster should not cost a user the whole data set.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from modalrec.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
_SHOWN = 20  # how many offending ids provenance lists by name


def index_images(folder: str | Path) -> dict[str, Path]:
    """Map file stem -> image path; when one stem has several files, the first extension in
    ``IMAGE_EXTENSIONS`` order wins."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError("image folder not found", where=str(folder), hint="check --images / --posters")
    if not folder.is_dir():
        raise DataError("expected a folder of images, found a file", where=str(folder))
    rank = {ext: k for k, ext in enumerate(IMAGE_EXTENSIONS)}
    found: dict[str, Path] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        raise DataError(f"cannot list image folder: {error.strerror or error}", where=str(folder)) from None
    for entry in entries:
        ext = entry.suffix.lower()
        if ext not in rank or not entry.is_file():
            continue
        current = found.get(entry.stem)
        if current is None or rank[ext] < rank[current.suffix.lower()]:
            found[entry.stem] = entry.resolve()
    return found


def is_readable_image(path: Path) -> bool:
    """Whether Pillow can open the file and its header checks out (a cheap test, no full decode)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # any decoder failure means "unreadable"
        return False


def attach_images(items: pd.DataFrame, folder: str | Path, *, verify: bool = True,
                  progress: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Add an ``image_path`` column (absolute path or ``None``) keyed by ``items['item_id']``.

    Returns the new table and a provenance report: how many items got an image, which files could
    not be read (treated as missing), and how many images match no item.
    """
    images = index_images(folder)
    ids = items["item_id"].astype(str).tolist()
    paths: list[str | None] = []
    unreadable: list[str] = []
    for item_id in tqdm(ids, desc="checking images", unit="img", disable=not (progress and verify),
                        leave=False):
        path = images.get(item_id)
        if path is not None and verify and not is_readable_image(path):
            unreadable.append(item_id)
            path = None
        paths.append(None if path is None else str(path))
    table = items.copy()
    table["image_path"] = pd.Series(paths, index=table.index)  # missing: NaN, as after a Parquet round trip
    known = set(ids)
    report = {
        "images_dir": str(Path(folder).resolve()),
        "items_with_image": sum(p is not None for p in paths),
        "items_without_image": sum(p is None for p in paths),
        "unreadable_images": len(unreadable),
        "unreadable_image_items": unreadable[:_SHOWN],
        "images_without_item": sum(stem not in known for stem in images),
    }
    if unreadable:
        log.warning("%d image(s) could not be read and count as missing (first: %s)",
                    len(unreadable), ", ".join(unreadable[:5]))
    return table, report
