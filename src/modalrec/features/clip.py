"""Vision-language embeddings: ``clip-image:<id-or-path>`` and ``clip-text:<id-or-path>``.

The image and text towers of one CLIP or SigLIP model map posters and descriptions into the same
space (``get_image_features`` / ``get_text_features``), so the two modalities are directly
comparable. Vectors are L2-normalised by default because that space is trained for cosine
similarity. SigLIP was trained on texts padded to the full length, so its texts are padded the same
way; CLIP's are padded per batch (its causal mask and EOS pooling make that equivalent).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalrec.errors import ConfigError, ModelError
from modalrec.features import offline_weights
from modalrec.features.image import ImageExtractor, load_image_processor, processor_config
from modalrec.features.registry import (
    TEXT_OPTIONS,
    EncodedBatch,
    Extractor,
    ExtractorInputs,
    ExtractorOptions,
    register,
)
from modalrec.features.text import check_max_tokens, recipe_from

log = logging.getLogger(__name__)

_FULL_PADDING = ("siglip", "siglip2")


class _ClipModel:
    """The shared part of both towers: locating, loading and checking the dual encoder."""

    def __init__(self, spec: str, device: str) -> None:
        self.spec = spec
        self.device = device
        self._folder: Path | None = None
        self.model: Any = None

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = offline_weights.resolve_model_dir(self.spec)
        return self._folder

    def load(self) -> Any:
        if self.model is None:
            from transformers import AutoModel

            log.info("loading vision-language model %s", self.folder)
            model = AutoModel.from_pretrained(str(self.folder), local_files_only=True)
            if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
                raise ModelError(f"{self.spec!r} is a {type(model).__name__}, not a dual image-text encoder",
                                 hint="use a CLIP or SigLIP model, or hf-image:/st: for one tower")
            self.model = model.eval().to(self.device)
        return self.model

    def model_type(self) -> str | None:
        import json

        config = self.folder / "config.json"
        return json.loads(config.read_text()).get("model_type") if config.is_file() else None

    def base_fingerprint(self, name: str) -> dict[str, Any]:
        return {
            "extractor": name,
            "kind": "clip",
            "model": self.spec,
            "model_type": self.model_type(),
            "weights_sha256": offline_weights.weights_sha256(self.folder),
            "config_sha256": offline_weights.config_sha256(self.folder),
            "packages": {p: offline_weights.package_version(p) for p in ("transformers", "tokenizers", "torch")},
        }


def _features(output: Any) -> Any:
    """``get_*_features`` return a tensor in transformers 4 and an output with ``pooler_output`` in 5."""
    return output if hasattr(output, "dim") else output.pooler_output


class ClipImageExtractor(ImageExtractor):
    """The image tower of a CLIP/SigLIP model, with its own (slow) image processor."""

    def __init__(self, name: str, options: ExtractorOptions) -> None:
        super().__init__(name, options)
        if options.layer is not None or options.pooling is not None:
            raise ConfigError("clip-image uses the model's projected image embedding",
                              hint="use hf-image:<path> to choose a layer and pooling")
        self.clip = _ClipModel(name.split(":", 1)[1], options.device)
        self.normalize = True if options.normalize is None else options.normalize
        self._processor: Any = None
        self._dim: int | None = None

    def fingerprint(self) -> dict[str, Any]:
        return {**self.clip.base_fingerprint(self.name), "tower": "image",
                "preprocessing": {"processor": processor_config(self.clip.folder), "normalize": self.normalize}}

    @property
    def dim(self) -> int:
        if self._dim is None:
            from PIL import Image

            self._dim = int(self.encode_images([Image.new("RGB", (64, 64), "white")]).shape[1])
        return self._dim

    def encode_images(self, images: list[Any]) -> np.ndarray:
        import torch

        model = self.clip.load()
        if self._processor is None:
            self._processor = load_image_processor(self.clip.folder)
        pixels = self._processor(images=images, return_tensors="pt")["pixel_values"].to(self.clip.device)
        with torch.inference_mode():
            vectors = _features(model.get_image_features(pixel_values=pixels))
            if self.normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=1)
        return vectors.float().cpu().numpy()


class ClipTextExtractor(Extractor):
    """The text tower of a CLIP/SigLIP model over the item text (fields/template as for ``st:``)."""

    modality = "text"
    allowed_options = TEXT_OPTIONS
    default_batch_size = 64

    def __init__(self, name: str, options: ExtractorOptions) -> None:
        super().__init__(name, options)
        self.clip = _ClipModel(name.split(":", 1)[1], options.device)
        self.recipe = recipe_from(options)
        self.max_tokens = check_max_tokens(options.max_tokens)
        self.normalize = True if options.normalize is None else options.normalize
        self._tokenizer: Any = None
        self._dim: int | None = None

    def inputs(self, items: pd.DataFrame, base_dir: Path | None = None) -> ExtractorInputs:
        texts, fields = self.recipe.texts(items)
        return ExtractorInputs(texts, {"fields": fields, "template": self.recipe.template,
                                       "joiner": self.recipe.joiner})

    def fingerprint(self) -> dict[str, Any]:
        return {**self.clip.base_fingerprint(self.name), "tower": "text",
                "preprocessing": {**self.recipe.describe(), "max_tokens": self.max_tokens,
                                  "padding": self._padding(), "normalize": self.normalize}}

    def _padding(self) -> str:
        return "max_length" if self.clip.model_type() in _FULL_PADDING else "longest"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.encode(["a"]).vectors.shape[1])
        return self._dim

    def encode(self, values: Sequence[Any]) -> EncodedBatch:
        import torch
        from transformers import AutoTokenizer

        model = self.clip.load()
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(str(self.clip.folder), local_files_only=True)
        limit = int(model.config.text_config.max_position_embeddings)
        length = min(limit, self.max_tokens) if self.max_tokens else limit
        tokens = self._tokenizer(list(values), padding=self._padding(), truncation=True, max_length=length,
                                 return_tensors="pt")
        inputs = {k: v.to(self.clip.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        if self._padding() == "max_length":
            inputs.pop("attention_mask", None)  # SigLIP attends to its padding, as in training
        with torch.inference_mode():
            vectors = _features(model.get_text_features(**inputs))
            if self.normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=1)
        return EncodedBatch(vectors.float().cpu().numpy(), np.ones(len(values), dtype=bool))


@register("clip-image:", "image tower of a CLIP/SigLIP model by local path or cached hub id")
def _clip_image(name: str, options: ExtractorOptions) -> Extractor:
    return ClipImageExtractor(name, options)


@register("clip-text:", "text tower of a CLIP/SigLIP model by local path or cached hub id")
def _clip_text(name: str, options: ExtractorOptions) -> Extractor:
    return ClipTextExtractor(name, options)
