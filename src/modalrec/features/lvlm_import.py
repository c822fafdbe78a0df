"""Import LVLM outputs made elsewhere (CSV) as a descriptions table.

Known layouts: ``Image Name,Keywords`` (Amazon; the image name is the item id, possibly with a
folder and an image extension such as ``B09BC2LJJD.jpg``) and ``asin,result`` (Allrecipes; the
recipe id). Any other two-column CSV works with explicit column names. Items of the data set with no
output are marked missing; outputs for ids the data set does not know are counted and reported.
``outputs_table`` does the same for a bare CSV with no data set behind it.
"""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalrec.errors import DataError, FeatureError
from modalrec.features.descriptions import build_table, save_descriptions, slot_summary
from modalrec.features.prompts import PromptSpec

log = logging.getLogger(__name__)

ID_COLUMNS = ("Image Name", "image_name", "image", "asin", "parent_asin", "item_id", "id")
TEXT_COLUMNS = ("Keywords", "keywords", "result", "output", "text", "description")
_IMAGE_EXT = re.compile(r"\.(jpe?g|png|webp|gif|bmp|tiff?)$", re.IGNORECASE)


@dataclass
class ImportReport:
    """What an import matched: rows read, items with output, items missing, unknown and repeated ids."""

    rows: int
    matched: int
    missing_items: int
    unknown_ids: int
    duplicate_ids: int
    unknown_examples: list[str]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_outputs(path: str | Path, id_column: str | None = None, text_column: str | None = None) -> pd.DataFrame:
    """The CSV as ``item_id, text`` (ids cleaned of folders and image extensions)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("output file not found", where=str(path), hint="check --file")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read the CSV: {error}", where=str(path)) from error
    id_col = _pick(raw, id_column, ID_COLUMNS, "id", path)
    text_col = _pick(raw, text_column, TEXT_COLUMNS, "text", path)
    return outputs_frame(raw, id_col, text_col)


def outputs_frame(raw: pd.DataFrame, id_column: str, text_column: str) -> pd.DataFrame:
    ids = raw[id_column].astype(str).map(clean_id)
    texts = raw[text_column].map(unwrap_text)
    return pd.DataFrame({"item_id": ids, "text": texts})


def clean_id(value: str) -> str:
    """``images/B09BC2LJJD.jpg`` -> ``B09BC2LJJD``; other ids are only stripped."""
    text = str(value).strip().replace("\\", "/").rsplit("/", 1)[-1]
    return _IMAGE_EXT.sub("", text)


def unwrap_text(value: Any) -> str:
    """Outputs saved as a Python list literal (``["text"]``) become the plain text."""
    text = "" if value is None else str(value).strip()
    if text.startswith("[") and text.endswith("]") and text[1:2] in "\"'":
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed):
            return " ".join(p.strip() for p in parsed)
    return text


def outputs_table(frame: pd.DataFrame, prompt: PromptSpec, model: str = "external",
                  item_ids: np.ndarray | None = None) -> tuple[pd.DataFrame, ImportReport]:
    """A descriptions table from ``item_id, text`` rows, for ``item_ids`` (default: the rows' ids).

    With ``item_ids`` (a data set's item index) the table follows that order: items without an
    output get ``has_output`` False; outputs for unknown ids are dropped and counted.
    """
    frame = frame.copy()
    frame["item_id"] = frame["item_id"].astype(str)
    duplicated = frame["item_id"].duplicated(keep="first")
    n_dup = int(duplicated.sum())
    if n_dup:
        log.warning("%d repeated ids in the outputs: the first output of each is kept", n_dup)
    frame = frame[~duplicated]
    if item_ids is None:
        item_ids = frame["item_id"].to_numpy()
    item_ids = np.asarray(item_ids).astype(str)
    known = pd.Index(item_ids)
    position = known.get_indexer(frame["item_id"])
    unknown = frame.loc[position < 0, "item_id"].tolist()
    texts: list[str | None] = [None] * len(item_ids)
    for pos, text in zip(position, frame["text"]):
        if pos >= 0:
            texts[pos] = str(text)
    prompt_hash = prompt.prompt_hash("image")
    table = build_table(item_ids, texts, prompt, prompt_hash, model)
    matched = int(table["has_output"].sum())
    report = ImportReport(rows=len(frame) + n_dup, matched=matched, missing_items=len(item_ids) - matched,
                          unknown_ids=len(unknown), duplicate_ids=n_dup, unknown_examples=unknown[:5])
    return table, report


def import_outputs(dataset_dir: str | Path, file: str | Path, prompt: PromptSpec, name: str, *,
                   model: str | None = None, id_column: str | None = None, text_column: str | None = None
                   ) -> tuple[pd.DataFrame, ImportReport]:
    """Import a CSV of outputs into ``DIR/descriptions/<name>.parquet`` aligned to the data set."""
    dataset_dir = Path(dataset_dir)
    items_file = dataset_dir / "items.parquet"
    if not items_file.is_file():
        raise FeatureError("no items.parquet: not a modalrec data set folder", where=str(dataset_dir),
                           hint="create the data set first (`modalrec data import`)")
    item_ids = pd.read_parquet(items_file, columns=["item_id"])["item_id"].astype(str).to_numpy()
    outputs = read_outputs(file, id_column, text_column)
    label = model or f"external:{Path(file).name}"
    table, report = outputs_table(outputs, prompt, label, item_ids)
    if report.matched == 0:
        raise DataError(f"none of the {report.rows} outputs matches an item of the data set "
                        f"(first ids: {', '.join(report.unknown_examples)})", where=str(file),
                        hint="check that the file belongs to this data set and the id column (--id-column)")
    if report.unknown_ids:
        log.warning("%d outputs are for items the data set does not have (e.g. %s)", report.unknown_ids,
                    ", ".join(report.unknown_examples))
    manifest = {
        "source": "imported", "file": str(Path(file).resolve()), "model": label, "prompt": prompt.name,
        "prompt_hash": prompt.prompt_hash("image"), "prompt_spec": prompt.model_dump(mode="json"),
        "import": report.as_dict(), **slot_summary(table, prompt),
    }
    table = pd.read_parquet(save_descriptions(dataset_dir, name, table, manifest))  # as stored
    return table, report


def _pick(frame: pd.DataFrame, given: str | None, candidates: tuple[str, ...], what: str, path: Path) -> str:
    if given is not None:
        if given not in frame.columns:
            raise DataError(f"no column {given!r}", where=str(path), hint=f"columns: {', '.join(frame.columns)}")
        return given
    for name in candidates:
        if name in frame.columns:
            return name
    if len(frame.columns) == 2:
        return frame.columns[0 if what == "id" else 1]
    raise DataError(f"cannot tell which column holds the {what}", where=str(path),
                    hint=f"columns: {', '.join(frame.columns)}; pass --{what}-column")
