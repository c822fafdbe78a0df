"""Writing an imported data set to its folder without ever destroying a user's files.

- A missing or empty ``--out`` is built in a hidden sibling folder and renamed into place, so an
  error or a crash leaves no half-written data set behind.
- An existing modalrec data set is replaced in place: a marker file says "incomplete" while its
  tables are rewritten (so a crash is recognisable and a rerun may overwrite it); derived artifacts
  of the old data (its split, extra tables) go. Its stored features stay: ``FeatureStore`` records
  the item index each was made for and refuses to load them if it changed, with a re-extract hint.
- Any other non-empty folder is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from pathlib import Path

from modalrec import io
from modalrec.data.dataset import FORMAT, Dataset
from modalrec.errors import DataError
from modalrec.features.features import FeatureSet

log = logging.getLogger(__name__)

PARTIAL_MARKER = ".modalrec-partial"


def output_state(out: str | Path) -> str:
    """``new`` (missing or empty folder) or ``dataset`` (a modalrec data set, possibly left
    incomplete by a crash); anything else is refused with a DataError."""
    out = Path(out)
    if not out.exists():
        return "new"
    if not out.is_dir():
        raise DataError("exists and is not a folder", where=str(out), hint="choose another --out")
    if (out / PARTIAL_MARKER).exists():
        return "dataset"
    manifest = out / "manifest.json"
    if manifest.is_file():
        try:
            if io.read_json(manifest).get("format") == FORMAT:
                return "dataset"
        except (ValueError, OSError, AttributeError):
            pass
    if not any(out.iterdir()):
        return "new"
    raise DataError("folder is not empty and is not a modalrec data set; refusing to overwrite it",
                    where=str(out), hint="choose a new or empty --out folder")


def save_dataset(dataset: Dataset, out: str | Path, features: FeatureSet | None = None) -> Dataset:
    """Write ``dataset`` (and ``features``, aligned to its item index) to ``out`` as described in
    the module docstring; returns the data set with its ``path`` set."""
    out = Path(out)
    if output_state(out) == "new":
        _save_new(dataset, out, features or {})
    else:
        _replace(dataset, out, features or {})
    dataset.path = out
    return dataset


def save_features(dataset: Dataset, folder: str | Path, features: FeatureSet) -> None:
    """Store each modality in the data set folder's ``FeatureStore`` (rows in item-index order)."""
    if not features:
        return
    from modalrec.features.store import FeatureStore

    store = FeatureStore(folder)
    for name, feats in features.items():
        store.save(name, feats, dataset.item_ids)


def _save_new(dataset: Dataset, out: Path, features: FeatureSet) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        dataset.save(staging)
        save_features(dataset, staging, features)
        if out.exists():
            out.rmdir()  # still empty: output_state checked it
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _replace(dataset: Dataset, out: Path, features: FeatureSet) -> None:
    old_extras = _old_extras(out)
    (out / PARTIAL_MARKER).write_text("incomplete: being rewritten by modalrec\n", encoding="utf-8")
    with contextlib.suppress(FileNotFoundError):
        (out / "manifest.json").unlink()
    for name in old_extras - set(dataset.extras):
        with contextlib.suppress(FileNotFoundError):
            (out / f"extra-{name}.parquet").unlink()
    if dataset.split is None and (out / "split").is_dir():
        shutil.rmtree(out / "split")
    dataset.save(out)
    save_features(dataset, out, features)
    (out / PARTIAL_MARKER).unlink()


def _old_extras(out: Path) -> set[str]:
    try:
        return set(io.read_json(out / "manifest.json").get("extras", []))
    except (OSError, ValueError, AttributeError):
        return set()
