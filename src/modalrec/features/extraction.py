"""The extraction loop every extractor shares: batched, cached, resumable, atomic.

1. The extractor turns the items table into per-item inputs (None = no content).
2. The cache key is the extractor's fingerprint plus a sha256 of the inputs (item ids, texts, image
   paths with sizes and modification times; paths inside the data set folder relative to it, so a
   moved folder keeps its cache). Stored features with the same key are a cache hit:
   nothing is computed and the model is not even loaded. (A different ``impute`` only re-fills the
   rows without content from the stored matrix.)
3. Otherwise items with content are encoded in batches; each finished batch is written atomically
   to ``features/.partial/<key>/`` as it completes. An interrupted run (crash, Ctrl-C, a failing
   encoder) resumes from those chunks and recomputes only what is missing, whatever batch size it
   runs with next time.
4. The chunks are assembled into one float32 matrix, rows without content are imputed, and the
   feature store writes it (manifest last); then the chunks are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from modalrec import io
from modalrec.errors import ConfigError, FeatureError
from modalrec.features.features import Features
from modalrec.features.imputation import DEFAULT_IMPUTE, check_method, impute
from modalrec.features.registry import EncodedBatch, Extractor
from modalrec.features.store import FeatureStore, check_name, safe_name

log = logging.getLogger(__name__)

PARTIAL = ".partial"
N_EXAMPLES = 10
_CHUNK = re.compile(r"^chunk-(\d{9})-(\d{9})\.npz$")


@dataclass
class ExtractionResult:
    """What one extraction did: where the features are and whether anything was computed."""

    name: str
    path: Path
    features: Features
    cache_hit: bool
    computed_items: int
    resumed_items: int
    seconds: float


BatchEncoder = Callable[[Extractor, list[Any], list[tuple[int, int]]], Iterable[tuple[int, int, EncodedBatch]]]
"""Encodes ``values[start:end]`` for each range and yields ``(start, end, batch)`` in any order:
``encode_locally``, or a distributed encoder (``modalrec.features.ray_extraction``)."""


def encode_locally(extractor: Extractor, values: list[Any], ranges: list[tuple[int, int]]
                   ) -> Iterator[tuple[int, int, EncodedBatch]]:
    """The batches one after the other, in this process."""
    for start, end in ranges:
        yield start, end, extractor.encode(values[start:end])


def inputs_digest(item_ids: np.ndarray, keys: list[str | None]) -> str:
    """sha256 over (item id, input key) pairs in item order; None (no content) hashes distinctly."""
    digest = hashlib.sha256()
    for item_id, key in zip(item_ids, keys):
        digest.update(str(item_id).encode())
        digest.update(b"\x1f")
        digest.update(b"\x00" if key is None else key.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1e")
    return digest.hexdigest()


def fingerprint_id(fingerprint: dict[str, Any]) -> str:
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def extract(dataset_dir: str | Path, extractor: Extractor, *, name: str | None = None, batch_size: int | None = None,
            impute_method: str = DEFAULT_IMPUTE, force: bool = False, progress: bool = True,
            encode_batches: BatchEncoder | None = None) -> ExtractionResult:
    """Extract features for the data set folder ``dataset_dir`` into ``DIR/features/<name>``."""
    store = FeatureStore(dataset_dir)
    items_path = Path(dataset_dir) / "items.parquet"
    if not items_path.is_file():
        raise FeatureError("no items.parquet: not a modalrec data set folder", where=str(dataset_dir),
                           hint="create the data set first (`modalrec data import` or `data synth`)")
    items = pd.read_parquet(items_path)
    return extract_items(store, items, extractor, name=name, batch_size=batch_size, impute_method=impute_method,
                         force=force, progress=progress, base_dir=Path(dataset_dir), encode_batches=encode_batches)


def extract_items(store: FeatureStore, items: pd.DataFrame, extractor: Extractor, *, name: str | None = None,
                  batch_size: int | None = None, impute_method: str = DEFAULT_IMPUTE, force: bool = False,
                  progress: bool = True, base_dir: Path | None = None,
                  encode_batches: BatchEncoder | None = None) -> ExtractionResult:
    """Extract features for an items table (rows = item index) and save them in ``store``."""

    name = check_name(name or safe_name(extractor.name))
    check_method(impute_method)
    batch_size = batch_size or extractor.default_batch_size
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}", where="--batch-size")
    item_ids = items["item_id"].astype(str).to_numpy()
    started = time.perf_counter()

    inputs = extractor.inputs(items, base_dir)
    if len(inputs.values) != len(items):
        raise FeatureError(f"extractor {extractor.name!r} gave {len(inputs.values)} inputs for {len(items)} items")
    keys = [None if v is None else extractor.input_key(v, base_dir) for v in inputs.values]
    fingerprint = {**extractor.fingerprint(), "inputs_sha256": inputs_digest(item_ids, keys)}
    key = fingerprint_id(fingerprint)

    if not force and store.exists(name):
        hit = _cache_hit(store, name, key, impute_method)
        if hit is not None:
            hit.seconds = time.perf_counter() - started
            return hit

    todo = np.array([i for i, v in enumerate(inputs.values) if v is not None], dtype=np.int64)
    partial = store.root / PARTIAL / key
    if force and partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    io.write_json(partial / "fingerprint.json", {"name": name, "fingerprint": fingerprint, "n_todo": len(todo)})
    chunks = _read_chunks(partial, len(todo))
    covered = np.zeros(len(todo), dtype=bool)
    for start, end, _ in chunks:
        covered[start:end] = True
    resumed = int(covered.sum())
    if resumed:
        log.info("resuming %s: %d of %d items already encoded", name, resumed, len(todo))

    compute_started = time.perf_counter()
    with tqdm(total=len(todo), initial=resumed, desc=f"extract {name}", unit="item", disable=not progress,
              leave=False) as bar:
        todo_values = [inputs.values[i] for i in todo]
        encoder = encode_batches or encode_locally
        for start, end, batch in encoder(extractor, todo_values, _missing_ranges(covered, batch_size)):
            if batch.vectors.shape[0] != end - start:
                raise FeatureError(f"extractor {extractor.name!r} returned {batch.vectors.shape[0]} vectors "
                                   f"for {end - start} inputs")
            bad = ~np.isfinite(batch.vectors).all(axis=1) & batch.ok
            if bad.any():
                batch.ok[bad] = False
                for i in np.flatnonzero(bad):
                    batch.errors[i] = "encoder returned NaN or infinite values"
                batch.vectors[bad] = 0.0
            _write_chunk(partial, start, end, batch.vectors, batch.ok, batch.errors)
            chunks.append((start, end, {"vectors": batch.vectors, "ok": batch.ok,
                                        "errors": np.asarray(batch.errors, dtype=str)}))
            bar.update(end - start)
    compute_seconds = time.perf_counter() - compute_started

    features = _assemble(extractor, inputs.values, item_ids, todo, chunks, impute_method)
    computed = len(todo) - resumed
    features.manifest.update({
        "extractor": extractor.name,
        "modality": extractor.modality,
        "fingerprint": fingerprint,
        "fingerprint_id": key,
        "inputs": inputs.info,
        "impute": impute_method,
        "batch_size": batch_size,
        "device": extractor.options.device,
        "computed_items": computed,
        "resumed_items": resumed,
        "compute_seconds": round(compute_seconds, 3),
        "items_per_second": round(computed / compute_seconds, 2) if computed and compute_seconds > 0 else None,
    })
    path = store.save(name, features, item_ids)
    features.manifest = store.manifest(name)
    shutil.rmtree(partial, ignore_errors=True)
    _drop_stale_partials(store, name)
    _report(name, features.manifest)
    return ExtractionResult(name, path, features, False, computed, resumed, time.perf_counter() - started)


def _cache_hit(store: FeatureStore, name: str, key: str, impute_method: str) -> ExtractionResult | None:
    manifest = store.manifest(name)
    if manifest.get("fingerprint_id") != key:
        log.info("features %s exist but were made differently; re-extracting", name)
        return None
    if manifest.get("impute") == impute_method:
        log.info("features %s: cache hit (%s), nothing computed", name, key)
        return ExtractionResult(name, store.folder(name), store.load(name), True, 0, 0, 0.0)
    stored = store.load(name)
    refilled = Features(impute(stored.matrix, stored.mask, impute_method), stored.mask,
                        {**stored.manifest, "impute": impute_method})
    path = store.save(name, refilled, store.item_ids())
    refilled.manifest = store.manifest(name)
    log.info("features %s: cache hit, re-imputed rows without content with %s", name, impute_method)
    return ExtractionResult(name, path, refilled, True, 0, 0, 0.0)


def _missing_ranges(covered: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
    """Batches of at most ``batch_size`` over the runs of positions not yet encoded."""
    ranges: list[tuple[int, int]] = []
    position, n = 0, len(covered)
    while position < n:
        if covered[position]:
            position += 1
            continue
        end = position
        while end < n and not covered[end] and end - position < batch_size:
            end += 1
        ranges.append((position, end))
        position = end
    return ranges


def _write_chunk(folder: Path, start: int, end: int, vectors: np.ndarray, ok: np.ndarray, errors: list[str]) -> None:
    with io.atomic_path(folder / f"chunk-{start:09d}-{end:09d}.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, vectors=vectors.astype(np.float32), ok=ok, errors=np.asarray(errors, dtype=str))


def _read_chunks(folder: Path, n_todo: int) -> list[tuple[int, int, dict[str, np.ndarray]]]:
    """Finished, readable, non-overlapping chunks (a damaged one is dropped and recomputed)."""
    chunks: list[tuple[int, int, dict[str, np.ndarray]]] = []
    taken = np.zeros(n_todo, dtype=bool)
    for path in sorted(folder.glob("chunk-*.npz")):
        match = _CHUNK.match(path.name)
        if not match:
            continue
        start, end = int(match.group(1)), int(match.group(2))
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in ("vectors", "ok", "errors")}
        except (OSError, ValueError, KeyError) as error:
            log.warning("dropping damaged chunk %s: %s", path.name, error)
            path.unlink(missing_ok=True)
            continue
        if end > n_todo or start >= end or taken[start:end].any() or len(arrays["ok"]) != end - start:
            log.warning("dropping chunk %s: it does not fit the current inputs", path.name)
            path.unlink(missing_ok=True)
            continue
        taken[start:end] = True
        chunks.append((start, end, arrays))
    return chunks


def _assemble(extractor: Extractor, values: list[Any], item_ids: np.ndarray, todo: np.ndarray,
              chunks: list[tuple[int, int, dict[str, np.ndarray]]], impute_method: str) -> Features:
    widths = {c[2]["vectors"].shape[1] for c in chunks if c[2]["ok"].any()}
    if len(widths) > 1:
        raise FeatureError(f"extractor {extractor.name!r} produced vectors of different sizes {sorted(widths)}")
    dim = widths.pop() if widths else extractor.dim
    n = len(values)
    matrix = np.zeros((n, dim), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    errors: dict[int, str] = {}
    for start, end, arrays in chunks:
        rows = todo[start:end]
        good = arrays["ok"].astype(bool)
        matrix[rows[good]] = arrays["vectors"][good]
        ok[rows[good]] = True
        for row, message in zip(rows[~good], arrays["errors"][~good]):
            errors[int(row)] = str(message)
    has_content = np.array([v is not None for v in values], dtype=bool)
    failed = sorted(errors)
    no_content = np.flatnonzero(~has_content)
    manifest = {
        "n_items": n,
        "n_no_content": int(len(no_content)),
        "no_content_examples": item_ids[no_content[:N_EXAMPLES]].tolist(),
        "n_failed": len(failed),
        "failed_examples": [{"item_id": str(item_ids[r]), "error": errors[r]} for r in failed[:N_EXAMPLES]],
    }
    return Features(impute(matrix, ok, impute_method), ok, manifest)


def _drop_stale_partials(store: FeatureStore, name: str) -> None:
    """Chunks of an earlier, different extraction under the same name can never be used again."""
    for folder in (store.root / PARTIAL).glob("*"):
        try:
            stale = io.read_json(folder / "fingerprint.json").get("name") == name
        except (OSError, ValueError):
            continue
        if stale:
            log.info("removing unfinished chunks of an older extraction of %s (%s)", name, folder.name)
            shutil.rmtree(folder, ignore_errors=True)


def _report(name: str, manifest: dict[str, Any]) -> None:
    log.info("features %s: %d items, %d with content, %d without, %d failed", name, manifest["n_items"],
             manifest["n_items"] - manifest["n_no_content"] - manifest["n_failed"], manifest["n_no_content"],
             manifest["n_failed"])
    if manifest["n_failed"]:
        shown = ", ".join(e["item_id"] for e in manifest["failed_examples"])
        log.warning("features %s: %d item(s) failed and are marked missing (first: %s)", name,
                    manifest["n_failed"], shown)
