"""Descriptions: what a model wrote for each item, parsed into slots, kept as side content.

``DIR/descriptions/<name>.parquet`` has one row per item of the data set: ``item_id``,
``has_output``, the generated ``text``, ``prompt`` (name), ``prompt_hash``, ``model``,
``n_generated``, ``stopped`` and, for slot prompts, ``value:<Slot>`` and ``status:<Slot>``
(strict / recovered / missing). ``<name>.json`` beside it says how the table was made; it is
written last, so a table without it is incomplete.

Generation is resumable item by item: every finished batch is committed to
``descriptions/.<name>.parts/`` (the embeddings of each pooling as ``.npy``, then the texts as a
Parquet part that marks the batch complete, each written atomically). A rerun after a crash skips
the committed items, so nothing is lost or done twice, and the final table and embeddings equal
those of an uninterrupted run. The embeddings are stored as features ``lvlm-<name>-<pooling>``
(vision-language route) or ``llm-<name>-<pooling>`` (text-only route).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from modalrec import io
from modalrec.errors import ConfigError, FeatureError
from modalrec.features.features import Features
from modalrec.features.hidden_pooling import check_poolings
from modalrec.features.lvlm import BatchResult, GenerativeEmbedder, ItemInput
from modalrec.features.prompts import PromptSpec, Source
from modalrec.features.slot_parser import compliance, parse_frame
from modalrec.features.store import FeatureStore, check_name, safe_name

log = logging.getLogger(__name__)

FORMAT = "modalrec-descriptions"
FOLDER = "descriptions"
BASE_COLUMNS = ["item_id", "has_output", "text", "prompt", "prompt_hash", "model", "n_generated", "stopped"]
_PART = re.compile(r"^part-(\d{6})\.parquet$")


# --- the table -------------------------------------------------------------------------------------
def table_path(dataset_dir: str | Path, name: str) -> Path:
    return Path(dataset_dir) / FOLDER / f"{check_name(name)}.parquet"


def manifest_path(dataset_dir: str | Path, name: str) -> Path:
    return Path(dataset_dir) / FOLDER / f"{check_name(name)}.json"


def description_names(dataset_dir: str | Path) -> list[str]:
    """Complete description tables (with their manifest), sorted."""
    folder = Path(dataset_dir) / FOLDER
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if (folder / f"{p.stem}.parquet").is_file())


def build_table(item_ids: Sequence[str], texts: Sequence[str | None], prompt: PromptSpec, prompt_hash: str,
                model: str, n_generated: Sequence[int] | None = None,
                stopped: Sequence[bool] | None = None) -> pd.DataFrame:
    """The descriptions table for items in order; ``None`` text = no output for that item."""
    n = len(item_ids)
    has_output = np.array([t is not None for t in texts], dtype=bool)
    table = pd.DataFrame({
        "item_id": pd.Series(item_ids, dtype=object).astype(str).to_numpy(dtype=object),
        "has_output": has_output,
        "text": pd.Series(list(texts), dtype=object),
        "prompt": prompt.name,
        "prompt_hash": prompt_hash,
        "model": model,
        "n_generated": np.asarray(n_generated if n_generated is not None else [-1] * n, dtype=np.int32),
        "stopped": np.asarray(stopped if stopped is not None else [False] * n, dtype=bool),
    })
    if prompt.kind == "slots":
        parsed = parse_frame([t if t is not None else "" for t in texts], prompt.slots)
        table = pd.concat([table, parsed], axis=1)
    return table


def save_descriptions(dataset_dir: str | Path, name: str, table: pd.DataFrame, manifest: dict[str, Any]) -> Path:
    """Write the table, then its manifest (last: it marks the table complete)."""
    path = table_path(dataset_dir, name)
    manifest_path(dataset_dir, name).unlink(missing_ok=True)
    io.write_parquet(path, table)
    io.write_json(manifest_path(dataset_dir, name), {"format": FORMAT, "name": name, **manifest})
    return path


def load_descriptions(dataset_dir: str | Path, name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A complete descriptions table and its manifest."""
    path, mpath = table_path(dataset_dir, name), manifest_path(dataset_dir, name)
    if not (path.is_file() and mpath.is_file()):
        available = description_names(dataset_dir)
        raise FeatureError(f"no descriptions called {name!r}", where=str(Path(dataset_dir) / FOLDER),
                           hint=("available: " + ", ".join(available)) if available else
                           "make some with `modalrec describe run` or `modalrec describe import`")
    manifest = io.read_json(mpath)
    if manifest.get("format") != FORMAT:
        raise FeatureError("not a modalrec descriptions manifest", where=str(mpath))
    return pd.read_parquet(path), manifest


def slot_summary(table: pd.DataFrame, prompt: PromptSpec) -> dict[str, Any]:
    """Counts and per-slot compliance for a manifest or a report."""
    out: dict[str, Any] = {"n_items": len(table), "n_with_output": int(table["has_output"].sum())}
    if prompt.kind == "slots":
        comp = compliance(table, prompt.slots, table["has_output"])
        out["compliance"] = {k: {s: round(float(v), 6) for s, v in row.items()} for k, row in comp.iterrows()}
        status = table.loc[table["has_output"], [f"status:{s}" for s in prompt.slots]]
        out["n_all_slots"] = int((status != "missing").all(axis=1).sum())
    return out


# --- resumable parts -------------------------------------------------------------------------------
class PartStore:
    """Committed batches of one generation run, in ``descriptions/.<name>.parts/``."""

    def __init__(self, folder: Path, identity: dict[str, Any], poolings: Sequence[str], overwrite: bool = False
                 ) -> None:
        self.folder = folder
        self.poolings = tuple(poolings)
        if overwrite and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / "identity.json"
        if id_file.is_file():
            stored = io.read_json(id_file)
            if _jsonable(stored) != _jsonable(identity):
                diff = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
                raise ConfigError(
                    f"an interrupted run with other settings ({', '.join(diff)}) exists", where=str(folder),
                    hint="rerun with the same settings to resume it, pass --overwrite to discard it, "
                         "or choose another --name")
        else:
            io.write_json(id_file, identity)
        # embeddings written before a crash whose batch never got its Parquet part: not committed
        for npy in folder.glob("part-*.npy"):
            if not (folder / f"{npy.name.split('.', 1)[0]}.parquet").is_file():
                npy.unlink()

    def _parts(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if _PART.match(p.name))

    def done_ids(self) -> set[str]:
        done: set[str] = set()
        for part in self._parts():
            done.update(pd.read_parquet(part, columns=["item_id"])["item_id"].astype(str))
        return done

    def append(self, item_ids: Sequence[str], result: BatchResult) -> None:
        """Commit one batch: embeddings first, the Parquet part (the commit mark) last."""
        parts = self._parts()
        seq = int(_PART.match(parts[-1].name).group(1)) + 1 if parts else 0
        stem = f"part-{seq:06d}"
        for pooling in self.poolings:
            io.write_npy(self.folder / f"{stem}.{pooling}.npy", result.pooled[pooling])
        io.write_parquet(self.folder / f"{stem}.parquet", pd.DataFrame({
            "item_id": [str(i) for i in item_ids], "text": result.texts,
            "n_generated": np.asarray(result.n_generated, dtype=np.int32),
            "stopped": np.asarray(result.stopped, dtype=bool),
        }))

    def read_all(self) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
        frames, arrays = [], {p: [] for p in self.poolings}
        for part in self._parts():
            frames.append(pd.read_parquet(part))
            stem = part.name.split(".", 1)[0]
            for pooling in self.poolings:
                npy = self.folder / f"{stem}.{pooling}.npy"
                if not npy.is_file():
                    raise FeatureError(f"batch {stem} has no {pooling} embeddings", where=str(self.folder),
                                       hint="the folder was edited by hand; rerun with --overwrite")
                arrays[pooling].append(io.read_npy(npy))
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            {"item_id": [], "text": [], "n_generated": [], "stopped": []})
        stacked = {p: np.concatenate(a, axis=0) if a else np.zeros((0, 0), np.float32) for p, a in arrays.items()}
        return frame, stacked

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


# --- generation ------------------------------------------------------------------------------------
@dataclass
class DescribeResult:
    """A finished generation run: the table, the embedding features and what was computed now."""

    name: str
    table: pd.DataFrame
    features: dict[str, Features] = field(default_factory=dict)
    computed_items: int = 0
    resumed_items: int = 0
    seconds: float = 0.0
    manifest: dict[str, Any] = field(default_factory=dict)
    up_to_date: bool = False


def feature_name(route: str, name: str, pooling: str) -> str:
    """``lvlm-<name>-<pooling>`` (vision-language) or ``llm-<name>-<pooling>`` (text only)."""
    return check_name(f"{'lvlm' if route == 'lvlm' else 'llm'}-{name}-{pooling}")


def default_name(model_id: str, prompt: PromptSpec) -> str:
    stem = Path(str(model_id).rstrip("/")).name or str(model_id)
    return safe_name(f"{stem}-{prompt.name}".lower())


def item_inputs(items: pd.DataFrame, prompt: PromptSpec, source: Source, base_dir: Path | None,
                hint_field: str | None = None) -> tuple[list[ItemInput | None], list[str]]:
    """One input per item (None when the item cannot be described) and why items were skipped."""
    if hint_field is not None and hint_field not in items:
        raise ConfigError(f"no item field {hint_field!r} for visual hints", where="--hint-field",
                          hint=f"item fields: {', '.join(c for c in items.columns if c != 'item_id')}")
    missing = [f for f in prompt.include_fields if f not in items]
    if missing:
        raise ConfigError(f"unknown item field(s) {missing}", where="--include-fields",
                          hint=f"item fields: {', '.join(c for c in items.columns if c not in ('item_id', 'image_path'))}")
    text_columns = [c for c in items.columns if c not in ("item_id", "image_path", hint_field)]
    inputs: list[ItemInput | None] = []
    skipped: list[str] = []
    for row in items.to_dict("records"):
        item_id = str(row["item_id"])
        fields = {k: row.get(k) for k in text_columns}
        hint = row.get(hint_field) if hint_field else None
        hint = None if hint is None or (isinstance(hint, float) and hint != hint) else str(hint)
        image = None
        if source == "image":
            raw = row.get("image_path")
            if raw is None or (isinstance(raw, float) and raw != raw) or not str(raw).strip():
                inputs.append(None)
                skipped.append("no image")
                continue
            image = Path(str(raw)).expanduser()
            if not image.is_absolute() and base_dir is not None:
                image = base_dir / image
            if not image.is_file():
                inputs.append(None)
                skipped.append("image file missing")
                continue
        elif not any(_present(v) for v in fields.values()) and hint is None:
            inputs.append(None)
            skipped.append("no text")
            continue
        text = prompt.render(fields, source, hints=hint if hint_field else None)
        inputs.append(ItemInput(item_id, text, image))
    return inputs, skipped


def run_descriptions(dataset_dir: str | Path, generator: GenerativeEmbedder, prompt: PromptSpec, *,
                     name: str | None = None, poolings: Sequence[str] = ("eos",), layer: int = -1,
                     batch_size: int = 8, hint_field: str | None = None, overwrite: bool = False,
                     progress: bool = True, after_batch: Callable[[int], None] | None = None,
                     save_features: bool = True) -> DescribeResult:
    """Describe every item of the data set folder with ``generator``; resumable (see module doc).

    ``after_batch(n_done)`` is called after each committed batch (progress hooks, tests).
    """
    started = time.perf_counter()
    dataset_dir = Path(dataset_dir)
    items_file = dataset_dir / "items.parquet"
    if not items_file.is_file():
        raise FeatureError("no items.parquet: not a modalrec data set folder", where=str(dataset_dir),
                           hint="create the data set first (`modalrec data import` or `data synth`)")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}", where="--batch-size")
    poolings = check_poolings(list(poolings))
    name = check_name(name or default_name(generator.model_id, prompt))
    source: Source = "image" if generator.route == "lvlm" else "text"
    prompt_hash = prompt.prompt_hash(source, hints=hint_field is not None)
    info = generator.describe()
    identity = {
        "route": generator.route, "model": generator.model_id, "prompt": prompt.name, "prompt_hash": prompt_hash,
        "layer": int(layer), "poolings": list(poolings), "dtype": generator.dtype,
        "generation": info["generation"], "hint_field": hint_field,
    }

    if not overwrite and manifest_path(dataset_dir, name).is_file():
        table, manifest = load_descriptions(dataset_dir, name)
        if _jsonable(manifest.get("identity")) == _jsonable(identity):
            log.info("descriptions %s are up to date", name)
            store = FeatureStore(dataset_dir)
            feats = {feature_name(generator.route, name, p): store.load(feature_name(generator.route, name, p))
                     for p in poolings} if save_features else {}
            return DescribeResult(name, table, feats, 0, 0, time.perf_counter() - started, manifest, True)
        raise ConfigError(f"descriptions {name!r} exist and were made with other settings",
                          where=str(manifest_path(dataset_dir, name)),
                          hint="pass --overwrite to replace them, or choose another --name")

    items = pd.read_parquet(items_file)
    item_ids = items["item_id"].astype(str).to_numpy()
    inputs, skipped = item_inputs(items, prompt, source, dataset_dir, hint_field)
    if len(skipped) == len(items):
        reasons = ", ".join(sorted(set(skipped))) or "no items"
        raise FeatureError(f"no item can be described ({reasons})", where=str(dataset_dir),
                           hint="add image_path to the items, or use --text-only with text fields"
                           if source == "image" else "the items need text fields (or a --hint-field)")
    if skipped:
        reasons = pd.Series(skipped).value_counts().to_dict()
        log.warning("%d of %d items cannot be described (%s)", len(skipped), len(items), reasons)
    parts = PartStore(dataset_dir / FOLDER / f".{name}.parts", identity, poolings, overwrite)
    done = parts.done_ids()
    todo = [x for x in inputs if x is not None and x.item_id not in done]
    resumed = sum(1 for x in inputs if x is not None and x.item_id in done)
    if resumed:
        log.info("resuming %s: %d items already described, %d to go", name, resumed, len(todo))

    compute_started = time.perf_counter()
    with tqdm(total=resumed + len(todo), initial=resumed, desc=f"describe {name}", unit="item",
              disable=not progress, leave=False) as bar:
        n_done = resumed
        batches = [todo[start: start + batch_size] for start in range(0, len(todo), batch_size)]
        run_batches = getattr(generator, "run_batches", None)  # a Ray actor pool (ray_extraction.RayGenerator)
        results = (run_batches(batches, poolings, layer) if run_batches is not None
                   else ((n, generator.run(batch, poolings, layer)) for n, batch in enumerate(batches)))
        for n, result in results:
            batch = batches[n]
            parts.append([x.item_id for x in batch], result)
            n_done += len(batch)
            bar.update(len(batch))
            if after_batch is not None:
                after_batch(n_done)
    compute_seconds = time.perf_counter() - compute_started

    frame, arrays = parts.read_all()
    position = pd.Index(item_ids).get_indexer(frame["item_id"].astype(str))
    if (position < 0).any() or len(np.unique(position)) != len(position):
        raise FeatureError("stored batches do not match the data set's items", where=str(parts.folder),
                           hint="the data set changed since the run started; rerun with --overwrite")
    n = len(item_ids)
    texts: list[str | None] = [None] * n
    n_generated = np.full(n, -1, dtype=np.int32)
    stopped = np.zeros(n, dtype=bool)
    for pos, row in zip(position, frame.itertuples(index=False)):
        texts[pos] = str(row.text)
        n_generated[pos] = int(row.n_generated)
        stopped[pos] = bool(row.stopped)
    table = build_table(item_ids, texts, prompt, prompt_hash, generator.model_id, n_generated, stopped)
    has_output = table["has_output"].to_numpy()

    feature_manifest = {
        "extractor": f"{generator.route}:{generator.model_id}",
        "modality": "lvlm" if generator.route == "lvlm" else "llm",
        **{k: v for k, v in info.items() if k != "device"},
        "prompt": prompt.name, "prompt_hash": prompt_hash, "prompt_spec": prompt.model_dump(mode="json"),
        "layer": int(layer), "descriptions": name, "hint_field": hint_field,
    }
    features: dict[str, Features] = {}
    if save_features and len(frame):
        store = FeatureStore(dataset_dir)
        for pooling in poolings:
            rows = arrays[pooling]
            matrix = np.zeros((n, rows.shape[1]), dtype=np.float32)
            matrix[position] = rows
            feats = Features(matrix, has_output, {**feature_manifest, "pooling": pooling})
            fname = feature_name(generator.route, name, pooling)
            store.save(fname, feats, item_ids)
            features[fname] = feats

    manifest = {
        "source": "generated", "identity": identity, "prompt_spec": prompt.model_dump(mode="json"),
        "prompt": prompt.name, "prompt_hash": prompt_hash, "model": generator.model_id,
        "model_info": info, "features": sorted(features), "skipped": pd.Series(skipped).value_counts().to_dict(),
        "computed_items": len(todo), "resumed_items": resumed, "compute_seconds": round(compute_seconds, 3),
        "items_per_second": round(len(todo) / compute_seconds, 3) if todo and compute_seconds > 0 else None,
        **slot_summary(table, prompt),
    }
    table = pd.read_parquet(save_descriptions(dataset_dir, name, table, manifest))  # as stored
    parts.remove()
    return DescribeResult(name, table, features, len(todo), resumed, time.perf_counter() - started, manifest)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and value != value) and bool(str(value).strip())


def _jsonable(obj: Any) -> Any:
    """Compare settings as they read back from JSON (tuples become lists, ...)."""
    import json

    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def encode_descriptions(dataset_dir: str | Path, name: str, extractor: str, feature_name: str,
                        device: str = "cpu", batch_size: int | None = None) -> Any:
    """Encode stored description texts ``name`` with a text extractor into ``feature_name``
    (items without an output are missing content); returns the ``ExtractionResult``."""
    from modalrec.features.extraction import extract_items
    from modalrec.features.registry import ExtractorOptions, get_extractor
    from modalrec.features.store import FeatureStore

    table, _ = load_descriptions(dataset_dir, name)
    items = pd.DataFrame({"item_id": table["item_id"].astype(str),
                          "description": table["text"].where(table["has_output"], None)})
    encoder = get_extractor(extractor, ExtractorOptions(fields=("description",), device=device))
    return extract_items(FeatureStore(dataset_dir), items, encoder, name=feature_name, batch_size=batch_size,
                         base_dir=Path(dataset_dir))
