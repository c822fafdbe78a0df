"""Amazon Reviews 2023 (McAuley Lab): import a category's review and metadata JSONL files.

The reference study uses Baby, Pets and Clothing from this release, keyed by ``parent_asin``,
keeping items that have an image and a description, then the 5- or 10-core. One category holds up
to tens of millions of review lines, so the import **streams**: the reviews file is read once, line
by line, into compact arrays (user code, item code, rating, timestamp) and two string-interning
maps; the metadata file is read twice, first for the cheap per-item facts the filters need (image
URL, has a description) and, after filtering, for the text of the few items left. Nothing holds a
whole file, or the text of items that will be dropped.

Malformed lines: by default (``strict=True``) the first line that is not a JSON object, or lacks a
field the import needs, stops the import with a ``DataError`` naming the file and line, because a
bad line in these machine-written files almost always means a damaged download. With
``strict=False`` such lines are skipped, counted, logged and recorded in the provenance.

A user's repeated reviews of one item (also of several ``asin`` variants of one ``parent_asin``)
become one interaction: the latest by timestamp (the later line on a tie).
"""

from __future__ import annotations

import difflib
import gzip
import json
import logging
import math
import os
import re
import zlib
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from modalrec.data.dataset import Dataset, sort_ids
from modalrec.data.filtering import k_core_mask
from modalrec.data.image_download import (
    FAILURE_REPORT,
    IMAGE_DIR,
    DownloadReport,
    download_file,
    download_images,
)
from modalrec.data.interactions import Interactions
from modalrec.data.output import PARTIAL_MARKER, output_state, save_dataset
from modalrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SOURCE = "amazon2023"
DEFAULT_BASE_URL = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw"
BASE_URL_ENV = "MODALREC_AMAZON2023_BASE_URL"
#: The release's 33 categories plus "Unknown" (``all_categories.txt`` of the data set).
CATEGORIES = (
    "All_Beauty", "Amazon_Fashion", "Appliances", "Arts_Crafts_and_Sewing", "Automotive", "Baby_Products",
    "Beauty_and_Personal_Care", "Books", "CDs_and_Vinyl", "Cell_Phones_and_Accessories",
    "Clothing_Shoes_and_Jewelry", "Digital_Music", "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food",
    "Handmade_Products", "Health_and_Household", "Health_and_Personal_Care", "Home_and_Kitchen",
    "Industrial_and_Scientific", "Kindle_Store", "Magazine_Subscriptions", "Movies_and_TV",
    "Musical_Instruments", "Office_Products", "Patio_Lawn_and_Garden", "Pet_Supplies", "Software",
    "Sports_and_Outdoors", "Subscription_Boxes", "Tools_and_Home_Improvement", "Toys_and_Games",
    "Video_Games", "Unknown",
)
#: Metadata fields that can become item text, in the order users usually want them.
TEXT_FIELDS = ("title", "description", "features", "categories", "store", "details", "main_category")
#: How a list field is joined into one string (other lists: "; ").
LIST_SEPARATORS = {"description": " ", "features": "; ", "categories": " > "}
_PROGRESS_EVERY = 8192


# --- small public helpers ---------------------------------------------------------------------------
def select_image_url(images: Any) -> str | None:
    """The item image: the ``MAIN`` variant's ``large`` URL, else its ``hi_res``, else the first URL
    of any image (``large``, ``hi_res``, then ``thumb``) in listed order; None when there is none.

    Accepts the raw files' list of ``{thumb, large, hi_res, variant}`` objects and the column form
    (one list per key) of the Hugging Face copy.
    """
    entries = _image_entries(images)
    for entry in entries:
        if str(entry.get("variant") or "").upper() == "MAIN":
            for key in ("large", "hi_res"):
                if url := _url(entry.get(key)):
                    return url
    for entry in entries:
        for key in ("large", "hi_res", "thumb"):
            if url := _url(entry.get(key)):
                return url
    return None


def render_text(value: Any, name: str = "") -> str | None:
    """One metadata field as text: strings stripped, lists joined (``LIST_SEPARATORS``), dicts as
    ``key: value`` pairs joined by "; ". Empty results are None, so missing text stays visible."""
    text = _render(value, LIST_SEPARATORS.get(name, "; "))
    return text or None


def resolve_category(category: str) -> str:
    """The release's spelling of a category: ``baby products``, ``Baby-Products`` -> ``Baby_Products``."""
    def key(name: str) -> str:
        return re.sub(r"[^a-z0-9]+", "", name.lower().replace("&", "and"))

    wanted = key(category)
    for name in CATEGORIES:
        if key(name) == wanted:
            return name
    close = difflib.get_close_matches(category, CATEGORIES, n=3, cutoff=0.5)
    raise ConfigError(f"unknown Amazon Reviews 2023 category {category!r}", where="--category",
                      hint=f"did you mean {' or '.join(close)}?" if close else f"choose one of {', '.join(CATEGORIES)}")


def category_urls(category: str, base_url: str | None = None) -> tuple[str, str]:
    """Public addresses of a category's review and metadata files (``base_url`` replaces the host
    part, for a mirror; the environment variable ``MODALREC_AMAZON2023_BASE_URL`` does the same)."""
    name = resolve_category(category)
    base = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    return f"{base}/review_categories/{name}.jsonl.gz", f"{base}/meta_categories/meta_{name}.jsonl.gz"


def download_amazon2023(category: str, out: Path, *, base_url: str | None = None, retries: int = 5,
                        connect_timeout: float = 30.0, read_timeout: float = 60.0,
                        progress: bool = True) -> tuple[Path, Path]:
    """Download a category's ``<Category>.jsonl.gz`` and ``meta_<Category>.jsonl.gz`` into ``out``.

    Resumable and atomic (see ``download_file``): files already complete are kept, an interrupted
    transfer continues from its ``.part`` file. Returns the reviews and metadata paths.
    """
    name = resolve_category(category)
    reviews_url, meta_url = category_urls(name, base_url)
    out = Path(out)
    options = {"retries": retries, "connect_timeout": connect_timeout, "read_timeout": read_timeout,
               "progress": progress}
    reviews = download_file(reviews_url, out / f"{name}.jsonl.gz", **options)
    meta = download_file(meta_url, out / f"meta_{name}.jsonl.gz", **options)
    return reviews, meta


# --- import -----------------------------------------------------------------------------------------
def import_amazon2023(
    reviews: Path,
    meta: Path,
    out: Path,
    *,
    k_core: int = 5,
    text_fields: Sequence[str] = ("title", "description"),
    download_images: bool = False,
    workers: int = 16,
    drop_failed_images: bool = False,
    require_image: bool = True,
    require_description: bool = True,
    min_rating: float | None = None,
    strict: bool = True,
    image_connect_timeout: float = 10.0,
    image_read_timeout: float = 30.0,
    image_retries: int = 3,
    image_backoff: float = 0.5,
    seed: int = 0,
    progress: bool = True,
) -> Dataset:
    """Build the data set of one category, filter it as the study does, optionally fetch images,
    and save it to ``out``.

    Order: dedup (latest review per user and ``parent_asin``) -> optional ``min_rating`` -> keep
    items with an image URL (``require_image``) and a non-empty description
    (``require_description``) -> iterative ``k_core`` on users and items (0 or 1: none) -> with
    ``download_images``, fetch the survivors' images to ``out/images`` -> with
    ``drop_failed_images``, drop items whose image failed and take the k-core again. The last two
    equal dropping failed items *before* the k-core (the k-core of a subgraph of the k-core is the
    k-core of the subgraph), but only the k-core's images are fetched rather than every candidate's.

    ``out`` must be new, empty, or an earlier modalrec data set (replaced in place, so a rerun
    resumes the image download); any other folder is refused before anything is read.

    The items table has ``item_id`` (= ``parent_asin``), one text column per field of
    ``text_fields`` (see ``render_text``) and, when images were fetched, ``image_path`` relative to
    ``out`` (None where the image failed). The extra table ``images`` keeps every item's URL and,
    after a download, its status and failure reason.
    """
    fields = _check_options(reviews, meta, k_core, text_fields, workers, download_images, drop_failed_images)
    reviews, meta, out = Path(reviews), Path(meta), Path(out)
    output_state(out)  # refuse a foreign, non-empty folder before reading anything
    steps: list[dict[str, Any]] = []

    data = _read_reviews(reviews, strict, progress)
    users, items = data.users, data.items
    keep = np.ones(len(users), dtype=bool)
    n_users, n_items = len(data.user_index), len(data.item_index)

    def record(name: str, new_keep: np.ndarray, **params: Any) -> np.ndarray:
        steps.append({"step": name, **params,
                      "interactions": [int(keep.sum()), int(new_keep.sum())],
                      "users": [_count(users, keep, n_users), _count(users, new_keep, n_users)],
                      "items": [_count(items, keep, n_items), _count(items, new_keep, n_items)]})
        log.info("%s: %d -> %d interactions, %d -> %d users, %d -> %d items", name,
                 *steps[-1]["interactions"], *steps[-1]["users"], *steps[-1]["items"])
        return new_keep

    if min_rating is not None:
        keep = record("min_rating", keep & (data.ratings >= min_rating), threshold=float(min_rating))

    facts = _scan_meta(meta, data.item_index, require_description, strict, progress)
    content = facts.has_meta.copy()
    if require_image:
        content &= facts.has_image
    if require_description:
        content &= facts.has_description
    keep = record("content", keep & content[items], require_image=require_image,
                  require_description=require_description)
    if k_core > 1:
        keep = record("k_core", _k_core(users, items, keep, k_core), user_k=k_core, item_k=k_core)

    kept_items = np.flatnonzero(np.bincount(items[keep], minlength=n_items))
    item_names = list(data.item_index)
    images = pd.DataFrame({"item_id": [item_names[c] for c in kept_items],
                           "image_url": [facts.urls.get(int(c)) for c in kept_items]})
    image_summary: dict[str, Any] | None = None
    if download_images:
        _mark_incomplete(out)
        wanted = images.dropna(subset=["image_url"])
        outcome = download_images_for(wanted, out, workers=workers, connect_timeout=image_connect_timeout,
                                      read_timeout=image_read_timeout, retries=image_retries,
                                      backoff=image_backoff, seed=seed, progress=progress)
        image_summary = outcome.summary()
        by_item = {r.item_id: r for r in outcome.results}
        images["image_status"] = [by_item[i].status if i in by_item else "no_url" for i in images["item_id"]]
        images["failure"] = [by_item[i].reason if i in by_item else "no image URL" for i in images["item_id"]]
        images["image_path"] = [
            (Path(IMAGE_DIR) / by_item[i].path.name).as_posix() if i in by_item and by_item[i].path else None
            for i in images["item_id"]
        ]
        if drop_failed_images:
            failed = np.zeros(n_items, dtype=bool)
            failed[kept_items[images["image_path"].isna().to_numpy()]] = True
            keep = record("drop_failed_images", keep & ~failed[items])
            if k_core > 1:
                keep = record("k_core", _k_core(users, items, keep, k_core), user_k=k_core, item_k=k_core)

    if not keep.any():
        raise DataError("no interactions left after filtering", where=str(reviews),
                        hint="check that the reviews and metadata files are of the same category, "
                             "or lower --k-core")
    dataset = _build(data, keep, images, fields, meta, strict, progress, download_images)
    dataset.provenance = {
        "source": SOURCE,
        "reviews": _file_info(reviews),
        "meta": _file_info(meta),
        "params": {"k_core": k_core, "text_fields": fields, "require_image": require_image,
                   "require_description": require_description, "min_rating": min_rating,
                   "download_images": download_images, "drop_failed_images": drop_failed_images,
                   "strict": strict, "seed": seed},
        "counts": {**data.counts(), **facts.counts()},
        "filters": steps,
        "images": image_summary,
    }
    save_dataset(dataset, out)
    log.info("saved %s: %d users, %d items, %d interactions", out, dataset.n_users, dataset.n_items,
             dataset.interactions.nnz)
    return dataset


def download_images_for(images: pd.DataFrame, out: Path, **options: Any) -> DownloadReport:
    """Fetch ``images`` (columns ``item_id``, ``image_url``) into ``out/images``; see ``download_images``."""
    pairs = list(zip(images["item_id"].astype(str), images["image_url"].astype(str)))
    return download_images(pairs, out, report=FAILURE_REPORT, **options)


# --- reading ----------------------------------------------------------------------------------------
@dataclass
class _LineErrors:
    """Malformed lines of one file: raise on the first (strict) or count them."""

    path: Path
    strict: bool
    count: int = 0
    lines: int = 0
    examples: list[int] = field(default_factory=list)

    def __call__(self, lineno: int, message: str) -> None:
        if self.strict:
            raise DataError(message, where=f"{self.path}:{lineno}",
                            hint="the file may be damaged: download it again, or import with strict=False "
                                 "to skip and count malformed lines")
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(lineno)

    def report(self, what: str) -> None:
        if self.count:
            log.warning("%s: skipped %d malformed line(s) of %s (first: %s)", self.path, self.count, what,
                        ", ".join(map(str, self.examples)))


@contextmanager
def _open_binary(path: Path) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """``(raw, lines)``: the file as is (for progress by bytes) and its decompressed lines.

    Gzip is recognised by its magic bytes, not the file name.
    """
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        if gzipped:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield raw, stream
        else:
            yield raw, raw


def _records(path: Path, errors: _LineErrors, what: str, progress: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each non-blank line of a JSONL file (plain or gzipped) as ``(line number, object)``."""
    lineno = 0
    with _open_binary(path) as (raw, stream), tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                                   unit_divisor=1024, desc=what, disable=not progress,
                                                   leave=False) as bar:
        try:
            for lineno, line in enumerate(stream, start=1):  # noqa: B007 - lineno is used after the loop
                if lineno % _PROGRESS_EVERY == 0:
                    bar.update(raw.tell() - bar.n)
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as error:  # JSONDecodeError and bad UTF-8
                    errors(lineno, f"not valid JSON ({error})")
                    continue
                if not isinstance(record, dict):
                    errors(lineno, f"expected a JSON object, found {type(record).__name__}")
                    continue
                yield lineno, record
        except (EOFError, OSError, zlib.error) as error:
            raise DataError(f"cannot read past line {lineno}: {error}", where=str(path),
                            hint="the file is truncated or damaged: download it again") from None
        errors.lines = lineno
        bar.update(bar.total - bar.n)


@dataclass
class _Reviews:
    """The reviews file as compact arrays over interned user and item codes, after dedup."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    user_index: dict[str, int]
    item_index: dict[str, int]
    lines: int
    malformed: int
    duplicates: int

    def counts(self) -> dict[str, int]:
        return {"review_lines": self.lines, "malformed_review_lines": self.malformed,
                "duplicate_reviews": self.duplicates, "reviews": len(self.users),
                "review_users": len(self.user_index), "review_items": len(self.item_index)}


def _read_reviews(path: Path, strict: bool, progress: bool) -> _Reviews:
    errors = _LineErrors(path, strict)
    users, items, ratings, stamps = array("i"), array("i"), array("f"), array("q")
    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {}
    for lineno, record in _records(path, errors, "reviews", progress):
        user = record.get("user_id")
        item = record.get("parent_asin") or record.get("asin")
        if not isinstance(user, str) or not user:
            errors(lineno, "review without a user_id")
            continue
        if not isinstance(item, str) or not item:
            errors(lineno, "review without a parent_asin")
            continue
        try:
            rating = float(record["rating"])
            stamp = int(record["timestamp"])
        except (KeyError, TypeError, ValueError) as error:
            errors(lineno, f"review without a usable rating and timestamp ({type(error).__name__}: {error})")
            continue
        if not math.isfinite(rating):
            errors(lineno, f"rating {rating} is not a number")
            continue
        users.append(user_index.setdefault(user, len(user_index)))
        items.append(item_index.setdefault(item, len(item_index)))
        ratings.append(rating)
        stamps.append(stamp)
    errors.report("reviews")
    u = np.frombuffer(users, dtype=np.int32) if len(users) else np.empty(0, dtype=np.int32)
    i = np.frombuffer(items, dtype=np.int32) if len(items) else np.empty(0, dtype=np.int32)
    r = np.frombuffer(ratings, dtype=np.float32) if len(ratings) else np.empty(0, dtype=np.float32)
    t = np.frombuffer(stamps, dtype=np.int64) if len(stamps) else np.empty(0, dtype=np.int64)
    if not len(u):
        raise DataError("no reviews in the file", where=str(path),
                        hint="pass the category's review file (<Category>.jsonl or .jsonl.gz)")
    kept = latest_per_pair(u, i, t)
    log.info("%s: %d reviews by %d users of %d items (%d repeated reviews merged)", path.name, len(kept),
             len(user_index), len(item_index), len(u) - len(kept))
    return _Reviews(u[kept], i[kept], r[kept], t[kept], user_index, item_index, errors.lines, errors.count,
                    len(u) - len(kept))


def latest_per_pair(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Positions (in input order) of the latest entry of each (user, item) pair; on a tie, the later one."""
    n = len(users)
    order = np.lexsort((np.arange(n), timestamps, items, users))
    u, i = users[order], items[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    return np.sort(order[last])


@dataclass
class _MetaFacts:
    """Per item code: has metadata, has an image URL, has a description; URLs of candidate items."""

    has_meta: np.ndarray
    has_image: np.ndarray
    has_description: np.ndarray
    urls: dict[int, str]
    lines: int
    malformed: int
    duplicates: int
    unreviewed: int

    def counts(self) -> dict[str, int]:
        return {"meta_lines": self.lines, "malformed_meta_lines": self.malformed,
                "duplicate_meta": self.duplicates, "meta_without_reviews": self.unreviewed,
                "items_with_meta": int(self.has_meta.sum()), "items_with_image": int(self.has_image.sum()),
                "items_with_description": int(self.has_description.sum())}


def _scan_meta(path: Path, item_index: dict[str, int], require_description: bool, strict: bool,
               progress: bool) -> _MetaFacts:
    """First metadata pass: only the facts the filters need, only for reviewed items."""
    n = len(item_index)
    has_meta = np.zeros(n, dtype=bool)
    has_image = np.zeros(n, dtype=bool)
    has_description = np.zeros(n, dtype=bool)
    urls: dict[int, str] = {}
    errors = _LineErrors(path, strict)
    duplicates = unreviewed = 0
    for lineno, record in _records(path, errors, "metadata", progress):
        item = record.get("parent_asin")
        if not isinstance(item, str) or not item:
            errors(lineno, "metadata without a parent_asin")
            continue
        code = item_index.get(item)
        if code is None:
            unreviewed += 1
            continue
        if has_meta[code]:
            duplicates += 1  # the first record of an item wins, here and in the text pass
            continue
        has_meta[code] = True
        described = _has_text(record.get("description"))
        has_description[code] = described
        url = select_image_url(record.get("images"))
        if url is not None:
            has_image[code] = True
            if described or not require_description:
                urls[code] = url
    errors.report("metadata")
    if duplicates:
        log.warning("%s: %d repeated parent_asin record(s); the first of each is used", path, duplicates)
    log.info("%s: metadata for %d of %d reviewed items (%d with an image, %d with a description)", path.name,
             int(has_meta.sum()), n, int(has_image.sum()), int(has_description.sum()))
    return _MetaFacts(has_meta, has_image, has_description, urls, errors.lines, errors.count, duplicates,
                      unreviewed)


def _item_texts(path: Path, wanted: dict[str, int], fields: list[str], strict: bool,
                progress: bool) -> list[dict[str, str | None]]:
    """Second metadata pass: the chosen text fields of the final items (row = ``wanted[item_id]``)."""
    texts: list[dict[str, str | None]] = [dict.fromkeys(fields) for _ in range(len(wanted))]
    done = np.zeros(len(wanted), dtype=bool)
    errors = _LineErrors(path, strict)
    for _, record in _records(path, errors, "item text", progress):
        item = record.get("parent_asin")
        row = wanted.get(item) if isinstance(item, str) else None
        if row is None or done[row]:
            continue
        done[row] = True
        texts[row] = {name: render_text(record.get(name), name) for name in fields}
    return texts


def _build(data: _Reviews, keep: np.ndarray, images: pd.DataFrame, fields: list[str], meta: Path,
           strict: bool, progress: bool, with_paths: bool) -> Dataset:
    """The final ``Dataset``: users and items in ``sort_ids`` order, items carrying their text."""
    users, items = data.users[keep], data.items[keep]
    user_codes = np.flatnonzero(np.bincount(users, minlength=len(data.user_index)))
    item_codes = np.flatnonzero(np.bincount(items, minlength=len(data.item_index)))
    user_names, item_names = list(data.user_index), list(data.item_index)
    user_strs = np.array([user_names[c] for c in user_codes], dtype=object)
    item_strs = np.array([item_names[c] for c in item_codes], dtype=object)
    user_ids, item_ids = sort_ids(user_strs), sort_ids(item_strs)
    user_map = np.full(len(user_names), -1, dtype=np.int64)
    user_map[user_codes] = pd.Index(user_ids).get_indexer(user_strs)
    item_map = np.full(len(item_names), -1, dtype=np.int64)
    item_map[item_codes] = pd.Index(item_ids).get_indexer(item_strs)
    interactions = Interactions.from_arrays(user_map[users], item_map[items], len(user_ids), len(item_ids),
                                            data.ratings[keep], data.timestamps[keep])

    row_of = {str(item_id): row for row, item_id in enumerate(item_ids)}
    texts = _item_texts(meta, row_of, fields, strict, progress)
    table = pd.DataFrame({"item_id": item_ids.astype(str)})
    for name in fields:  # pandas' own string dtype, as the table reads back from Parquet; missing = NA
        table[name] = pd.Series([t[name] for t in texts], dtype="str")
    extra = images.set_index("item_id").reindex(table["item_id"]).reset_index()
    if with_paths:
        table["image_path"] = pd.Series(extra["image_path"].to_numpy(), dtype="str")
        extra = extra.drop(columns=["image_path"])
    return Dataset(interactions, user_ids, item_ids, table, extras={"images": extra})


# --- internals --------------------------------------------------------------------------------------
def _check_options(reviews: Path, meta: Path, k_core: int, text_fields: Sequence[str], workers: int,
                   download: bool, drop_failed: bool) -> list[str]:
    """Fail before reading gigabytes: missing files, unknown fields, impossible options."""
    for path, what, flag in ((reviews, "reviews", "--reviews"), (meta, "metadata", "--meta")):
        if not Path(path).is_file():
            raise DataError(f"{what} file not found", where=str(path),
                            hint=f"pass the category's {what} file with {flag}, or fetch it with "
                                 "`modalrec data download amazon2023 --category NAME --out DIR`")
    if isinstance(text_fields, str):
        text_fields = text_fields.split(",")
    fields = list(dict.fromkeys(f.strip() for f in text_fields if f.strip()))
    unknown = [f for f in fields if f not in TEXT_FIELDS]
    if unknown:
        raise ConfigError(f"unknown text field(s): {', '.join(unknown)}", where="--text-fields",
                          hint=f"choose from {', '.join(TEXT_FIELDS)}")
    if k_core < 0:
        raise ConfigError(f"k-core must be >= 0, got {k_core}", where="--k-core")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}", where="--workers")
    if drop_failed and not download:
        raise ConfigError("dropping items whose image failed needs the images downloaded",
                          where="--drop-failed-images", hint="add --download-images")
    return fields


def _mark_incomplete(out: Path) -> None:
    """Images go into ``out`` before the tables: mark a new folder as a data set being written, so
    a crash leaves a folder that a rerun may resume into (see ``modalrec.data.output``)."""
    if output_state(out) == "new":
        out.mkdir(parents=True, exist_ok=True)
        (out / PARTIAL_MARKER).write_text("incomplete: images being downloaded by modalrec\n", encoding="utf-8")


def _k_core(users: np.ndarray, items: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    """The k-core of the kept interactions, as a mask over all of them."""
    positions = np.flatnonzero(keep)
    inner = k_core_mask(users[positions], items[positions], k, k)
    result = np.zeros_like(keep)
    result[positions[inner]] = True
    return result


def _count(codes: np.ndarray, keep: np.ndarray, n: int) -> int:
    return int(np.count_nonzero(np.bincount(codes[keep], minlength=n)))


def _file_info(path: Path) -> dict[str, Any]:
    return {"path": str(path.resolve()), "bytes": path.stat().st_size}


def _image_entries(images: Any) -> list[dict[str, Any]]:
    if isinstance(images, list):
        return [entry for entry in images if isinstance(entry, dict)]
    if isinstance(images, dict):  # column form: {"large": [...], "variant": [...], ...}
        columns = {k: v for k, v in images.items() if isinstance(v, list)}
        size = max((len(v) for v in columns.values()), default=0)
        return [{k: (v[j] if j < len(v) else None) for k, v in columns.items()} for j in range(size)]
    return []


def _url(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _has_text(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, list):
        return any(_has_text(v) for v in value)
    return False


def _render(value: Any, separator: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return separator.join(part for part in (_render(v, ", ") for v in value) if part)
    if isinstance(value, dict):
        pairs = ((str(k).strip(), _render(v, ", ")) for k, v in value.items())
        return "; ".join(f"{k}: {v}" for k, v in pairs if k and v)
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return str(value)

