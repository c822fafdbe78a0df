"""Robust reading of CSV / TSV / JSONL tables with errors that name the file and line.

Every source reads its files through here, so a malformed row is always reported the way a text
editor shows it (``path:line``, 1-based) instead of as a pandas traceback. Values stay strings until
a caller asks for numbers, and the conversion then names the first offending line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from modalrec.errors import DataError

_EXTENSION_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".inter": "\t", ".psv": "|"}
_SEPARATOR_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}
_SNIFF_CANDIDATES = ("\t", ",", ";", "|")
JSON_EXTENSIONS = (".jsonl", ".ndjson", ".json")


@dataclass
class Table:
    """Rows of one file: a frame of raw values plus the 1-based line where each row starts."""

    path: Path
    frame: pd.DataFrame
    lines: np.ndarray
    separator: str | None = None

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in self.frame.columns]

    def where(self, row: int | None = None) -> str:
        """``path:line`` for a row index, or just the path."""
        return str(self.path) if row is None else f"{self.path}:{int(self.lines[row])}"

    def require(self, *columns: str, hint: str | None = None) -> None:
        """Fail naming the first missing column and listing the columns that are there."""
        for column in columns:
            if column not in self.frame.columns:
                found = ", ".join(repr(c) for c in self.columns) or "none"
                raise DataError(f"missing column {column!r} (columns found: {found})",
                                where=self.where(), hint=hint)

    def strings(self, column: str, *, allow_missing: bool = False) -> np.ndarray:
        """The column as stripped strings; an empty value is an error unless ``allow_missing``."""
        values = self.frame[column]
        if pd.api.types.infer_dtype(values, skipna=False) == "string":
            text = values.str.strip()  # the common case: every value read from a text file
        else:
            text = values.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v))
                              else str(v).strip())
        empty = text.isna() | (text == "")
        if empty.any() and not allow_missing:
            row = int(np.flatnonzero(empty.to_numpy())[0])
            raise DataError(f"empty value in column {column!r}", where=self.where(row))
        return text.to_numpy(dtype=object)

    def numbers(self, column: str, *, integer: bool = False, allow_missing: bool = False) -> np.ndarray:
        """The column as float64 (or int64); names the first line whose value is not a number."""
        raw = self.frame[column]
        array = _fast_floats(raw)
        if array is not None:
            bad = np.zeros(len(array), dtype=bool)
        else:
            values = pd.to_numeric(raw, errors="coerce")  # surrounding whitespace is accepted
            bad = values.isna().to_numpy().copy()
            if bad.any() and allow_missing:
                bad &= ~_blank(raw).to_numpy()
            array = values.to_numpy(dtype=np.float64)
        finite = np.isfinite(array)
        bad |= ~np.isnan(array) & ~finite
        if integer:
            bad |= finite & (array != np.round(array))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            kind = "an integer" if integer else "a number"
            raise DataError(f"{column!r} is not {kind}: {raw.iloc[row]!r}", where=self.where(row))
        return array.astype(np.int64) if integer and not allow_missing else array

    def timestamps(self, column: str) -> np.ndarray:
        """Integer timestamps: numbers as given, or ISO dates converted to Unix seconds."""
        raw = self.frame[column]
        if _fast_floats(raw) is not None:
            return self.numbers(column, integer=True)
        if pd.to_numeric(raw, errors="coerce").isna().all():
            text = raw.map(lambda v: v.strip() if isinstance(v, str) else v)
            dates = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
            if dates.notna().all():
                epoch = pd.Timestamp("1970-01-01", tz="UTC")
                return ((dates - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)
        return self.numbers(column, integer=True)  # names the first bad line, if any


def separator_for(path: str | Path, sep: str | None = None) -> str:
    """The field separator: ``sep`` if given (``tab``/``\\t`` spelled out work), else from the
    extension, else sniffed from the first non-empty line."""
    if sep:
        return _SEPARATOR_NAMES.get(sep.lower(), sep)
    path = Path(path)
    if path.suffix.lower() in _EXTENSION_SEPARATORS:
        return _EXTENSION_SEPARATORS[path.suffix.lower()]
    first = ""
    with _open_text(path, "utf-8") as handle:
        for line in handle:
            if line.strip():
                first = line
                break
    counts = {c: first.count(c) for c in _SNIFF_CANDIDATES}
    best = max(counts, key=lambda c: counts[c])
    return best if counts[best] else ","


def read_delimited(
    path: str | Path,
    *,
    sep: str | None = None,
    header: bool = True,
    names: Sequence[str] | None = None,
    min_fields: int | None = None,
    encoding: str = "utf-8",
    allow_empty: bool = False,
    quoting: bool = True,
) -> Table:
    """Read a delimited text file into string columns, checking every row's field count.

    With ``header`` the first non-blank line names the columns; otherwise ``names`` does, and rows
    may have between ``min_fields`` and ``len(names)`` fields, the same number on every row.
    Blank lines are skipped; empty trailing fields (a trailing separator) are tolerated. With
    ``quoting=False`` a double quote is an ordinary character (formats that define no quoting, such
    as MovieLens' pipe files, where a title may start with one).
    """
    path = Path(path)
    separator = separator_for(path, sep)
    text = _read_text(path, encoding)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator, strict=False,
                        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    rows: list[list[str]] = []
    lines: list[int] = []
    columns: list[str] | None = None if header else list(names or [])
    if not header and not columns:
        raise ValueError("read_delimited without a header needs names")
    width: int | None = None
    last = 0
    try:
        for fields in reader:
            start, last = last + 1, reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line
            if columns is None:
                columns = [f.strip() for f in fields]
                _check_header(columns, path, start)
                width = len(columns)
                continue
            if width is None:
                width = _headerless_width(len(fields), columns, min_fields, path, start, separator)
            if len(fields) != width:
                if len(fields) > width and not any(f.strip() for f in fields[width:]):
                    fields = fields[:width]
                else:
                    expected = ", ".join(columns[:width])
                    raise DataError(
                        f"expected {width} fields ({expected}) separated by {_show(separator)}, "
                        f"found {len(fields)}",
                        where=f"{path}:{start}",
                        hint="check the separator (--sep) and quoting of this line",
                    )
            rows.append(fields)
            lines.append(start)
    except csv.Error as error:
        raise DataError(f"cannot parse line: {error}", where=f"{path}:{last + 1}") from None
    if columns is None:
        raise DataError("file is empty", where=str(path), hint="point to the file with the data")
    if not rows and not allow_empty:
        raise DataError("no data rows", where=str(path), hint="the file has no rows to import")
    used = columns[: width or len(columns)]
    frame = pd.DataFrame(rows, columns=used, dtype=object) if rows else pd.DataFrame(columns=used, dtype=object)
    return Table(path, frame, np.asarray(lines, dtype=np.int64), separator)


def read_jsonl(path: str | Path, *, encoding: str = "utf-8", allow_empty: bool = False) -> Table:
    """One JSON object per line (``.jsonl``), or a JSON array of objects (``.json``)."""
    path = Path(path)
    text = _read_text(path, encoding)
    records: list[dict] = []
    lines: list[int] = []
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" and stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"invalid JSON: {error.msg}", where=f"{path}:{error.lineno}") from None
        for k, record in enumerate(data):
            if not isinstance(record, dict):
                raise DataError(f"record {k + 1} is not a JSON object", where=str(path))
            records.append(record)
            lines.append(k + 1)
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"invalid JSON: {error.msg}", where=f"{path}:{number}") from None
            if not isinstance(record, dict):
                raise DataError("line is not a JSON object", where=f"{path}:{number}")
            records.append(record)
            lines.append(number)
    if not records and not allow_empty:
        raise DataError("no data rows", where=str(path), hint="the file has no records to import")
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    return Table(path, frame, np.asarray(lines, dtype=np.int64), None)


def read_table(path: str | Path, *, sep: str | None = None, encoding: str = "utf-8") -> Table:
    """A headed table by extension: JSON lines for ``.jsonl``/``.ndjson``/``.json``, else delimited."""
    path = Path(path)
    if path.suffix.lower() in JSON_EXTENSIONS:
        return read_jsonl(path, encoding=encoding)
    return read_delimited(path, sep=sep, encoding=encoding)


# --- helpers -------------------------------------------------------------------------------------
def _fast_floats(values: pd.Series) -> np.ndarray | None:
    """Every value parsed with ``float`` (the fast path); ``None`` when any value is empty, not a
    number or NaN, so the careful path can find and name it."""
    try:
        array = values.to_numpy(dtype=object).astype(np.float64)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(array).any() else array


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | values.map(lambda v: isinstance(v, str) and not v.strip())


def _read_text(path: Path, encoding: str) -> str:
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(f"not valid {encoding} text (byte {error.start})", where=f"{path}:{line}",
                        hint="re-save the file as UTF-8") from None
    return text


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError("file not found", where=str(path), hint="check the path")
    if path.is_dir():
        raise DataError("is a folder, expected a file", where=str(path))
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read file: {error.strerror or error}", where=str(path)) from None


def _open_text(path: Path, encoding: str) -> io.StringIO:
    return io.StringIO(_read_text(path, encoding))


def _check_header(columns: list[str], path: Path, line: int) -> None:
    seen: set[str] = set()
    for name in columns:
        if not name:
            raise DataError("empty column name in the header", where=f"{path}:{line}")
        if name in seen:
            raise DataError(f"duplicate column {name!r} in the header", where=f"{path}:{line}")
        seen.add(name)


def _headerless_width(n: int, names: list[str], min_fields: int | None, path: Path, line: int,
                      separator: str) -> int:
    low = min_fields or len(names)
    if not low <= n <= len(names):
        expected = f"{low} to {len(names)}" if low < len(names) else str(len(names))
        raise DataError(
            f"expected {expected} fields ({', '.join(names)}) separated by {_show(separator)}, found {n}",
            where=f"{path}:{line}", hint="check the separator and the file format",
        )
    return n


def _show(separator: str) -> str:
    return {"\t": "tabs", ",": "commas", ";": "semicolons", "|": "pipes", " ": "spaces"}.get(
        separator, repr(separator))
