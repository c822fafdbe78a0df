"""Extractors register by name: fixed names (``minilm``) and parameterised ones (``st:<id-or-path>``).

An extractor turns an items table into one vector per item that has content. It has a name, a
dimension and a fingerprint (model, weights sha256, preprocessing, package versions, fields and
truncation) so that stored features say exactly how they were made and a re-run with the same
inputs is recognised as a cache hit. Heavy libraries are imported only when a model is built, so
listing extractors or hitting the cache stays cheap.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalrec.errors import ConfigError

log = logging.getLogger(__name__)

_MODULES = ("modalrec.features.text", "modalrec.features.image", "modalrec.features.clip")


@dataclass(frozen=True)
class ExtractorOptions:
    """User choices for an extractor; ``None`` means the extractor's documented default.

    Text options (``fields``, ``template``, ``joiner``, ``max_tokens``) apply to text towers; image
    options (``layer``, ``pooling``) to image backbones. Asking a text option of an image extractor
    (or the reverse) is an error rather than silently ignored.
    """

    fields: tuple[str, ...] | None = None
    template: str | None = None
    joiner: str | None = None
    max_tokens: int | None = None
    layer: int | None = None
    pooling: str | None = None
    normalize: bool | None = None
    device: str = "cpu"

    def given(self) -> dict[str, Any]:
        defaults = ExtractorOptions()
        return {k: v for k, v in asdict(self).items() if v != getattr(defaults, k)}


TEXT_OPTIONS = frozenset({"fields", "template", "joiner", "max_tokens", "normalize", "device"})
IMAGE_OPTIONS = frozenset({"layer", "pooling", "normalize", "device"})


@dataclass
class EncodedBatch:
    """Vectors for one batch; rows with ``ok`` False failed (their ``errors`` entry says why)."""

    vectors: np.ndarray
    ok: np.ndarray
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        self.ok = np.asarray(self.ok, dtype=bool)
        if not self.errors:
            self.errors = [""] * len(self.ok)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.ok) or len(self.errors) != len(self.ok):
            raise ValueError("EncodedBatch: vectors, ok and errors must have one row per input")


@dataclass
class ExtractorInputs:
    """One entry per item: the extractor's input (text, image path) or None when the item has no
    content; ``info`` says how the inputs were made (resolved fields, ...) for the manifest."""

    values: list[Any]
    info: dict[str, Any] = field(default_factory=dict)


class Extractor(ABC):
    """Items in, vectors out; subclasses build their model lazily on the first ``encode``."""

    name: str = ""
    modality: str = ""
    allowed_options: frozenset[str] = frozenset({"device"})
    default_batch_size: int = 32

    def __init__(self, name: str, options: ExtractorOptions | None = None) -> None:
        self.name = name
        self.options = options or ExtractorOptions()
        bad = sorted(set(self.options.given()) - self.allowed_options)
        if bad:
            raise ConfigError(f"option(s) {', '.join(bad)} do not apply to extractor {name!r}",
                              hint=f"{name} takes: {', '.join(sorted(self.allowed_options))}")

    @abstractmethod
    def inputs(self, items: pd.DataFrame, base_dir: Path | None = None) -> ExtractorInputs:
        """The per-item inputs (None = no content) for an items table."""

    def input_key(self, value: Any, base_dir: Path | None = None) -> str:
        """What the cache fingerprint covers for one input (the text itself by default);
        ``base_dir``: the data set folder the inputs were resolved against."""
        return str(value)

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the vectors: model, weights sha256, preprocessing, versions."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Output dimension (may build the model to find out)."""

    @abstractmethod
    def encode(self, values: Sequence[Any]) -> EncodedBatch:
        """Vectors for a batch of non-None inputs."""


Factory = Callable[[str, ExtractorOptions], Extractor]
_FIXED: dict[str, tuple[Factory, str]] = {}
_PREFIXED: dict[str, tuple[Factory, str]] = {}
_loaded = False


def register(name: str, description: str) -> Callable[[Factory], Factory]:
    """Register a factory under a fixed name, or under a prefix when ``name`` ends with ':'."""

    def wrap(factory: Factory) -> Factory:
        table = _PREFIXED if name.endswith(":") else _FIXED
        if name in table and table[name][0] is not factory:
            raise ValueError(f"extractor {name!r} registered twice")
        table[name] = (factory, description)
        return factory

    return wrap


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for module in _MODULES:
            importlib.import_module(module)
        _loaded = True


def extractor_names() -> list[tuple[str, str]]:
    """(name or ``prefix:<id-or-path>``, description) of every registered extractor."""
    _load_all()
    fixed = [(name, desc) for name, (_, desc) in sorted(_FIXED.items())]
    return fixed + [(f"{prefix}<id-or-path>", desc) for prefix, (_, desc) in sorted(_PREFIXED.items())]


def get_extractor(spec: str, options: ExtractorOptions | None = None) -> Extractor:
    """Build the extractor named ``spec`` (``minilm``, ``st:/path/to/model``, ...)."""
    _load_all()
    options = options or ExtractorOptions()
    if spec in _FIXED:
        return _FIXED[spec][0](spec, options)
    prefix, sep, rest = spec.partition(":")
    if sep and f"{prefix}:" in _PREFIXED:
        if not rest.strip():
            raise ConfigError(f"extractor {spec!r} needs a model id or path after '{prefix}:'",
                              hint=f"for example {prefix}:/path/to/model")
        return _PREFIXED[f"{prefix}:"][0](spec, options)
    known = [name for name, _ in extractor_names()]
    raise ConfigError(f"unknown extractor {spec!r}", hint=f"choose one of: {', '.join(known)}")
