"""The experiment YAML, validated by pydantic at load time.

One file says which data sets (source, filters, split), which item representations, which models
with which search spaces, how many seeds, how to evaluate, and which audits to run. Errors name
the key path and the reason, e.g. ``models[2].search.space.lr: expected a list``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modalrec.errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(Strict):
    """Where the data comes from; ``options`` are the source's own keywords."""

    format: Literal["synthetic", "folder", "elliot", "mmrec", "movielens", "amazon2023", "dataset"]
    options: dict[str, Any] = Field(default_factory=dict)


class FilterConfig(Strict):
    k_core: int | None = None
    min_rating: float | None = None


class SplitConfig(Strict):
    protocol: Literal["random", "user-temporal", "global-temporal", "leave-one-out", "cold-item", "fixed"] = "random"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0

    @field_validator("ratios")
    @classmethod
    def _sum_to_one(cls, ratios: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-6:
            raise ValueError(f"ratios must be three non-negative numbers summing to 1, got {list(ratios)}")
        return ratios


class DatasetConfig(Strict):
    name: str
    source: SourceConfig
    filters: FilterConfig = Field(default_factory=FilterConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)


class FeatureConfig(Strict):
    """One item representation: an extractor, imported LVLM outputs, or a data set's own table.

    kind ``extract``: run a registered extractor (``extractor``, ``fields``, ``impute``).
    kind ``lvlm-import``: import ``file`` as descriptions under ``prompt``, then build the one-hot
    attributes (``attributes``) and/or re-encode the text with ``encoder``.
    kind ``stored``: a feature already in the data set's feature store (e.g. imported by mmrec).
    kind ``true-attributes``: the synthetic world's true attributes, one-hot (an upper reference).
    """

    name: str
    kind: Literal["extract", "lvlm-import", "stored", "true-attributes"] = "extract"
    extractor: str | None = None
    fields: list[str] | None = None
    impute: Literal["zero", "mean"] = "mean"
    file: str | None = None
    prompt: str | None = None
    encoder: str | None = None
    top_k: int = 50
    threshold: float = 0.45
    stored_name: str | None = None

    @model_validator(mode="after")
    def _needs(self) -> FeatureConfig:
        if self.kind == "extract" and not self.extractor:
            raise ValueError("kind 'extract' needs 'extractor'")
        if self.kind == "lvlm-import" and not (self.file and self.prompt):
            raise ValueError("kind 'lvlm-import' needs 'file' and 'prompt'")
        return self


class SearchConfig(Strict):
    """Hyperparameter search on validation: a grid of lists, or TPE over ranges and choices."""

    method: Literal["grid", "tpe"] = "grid"
    space: dict[str, Any] = Field(default_factory=dict)
    trials: int = 20

    @model_validator(mode="after")
    def _shape(self) -> SearchConfig:
        for key, value in self.space.items():
            if self.method == "grid" and not isinstance(value, list):
                raise ValueError(f"space.{key}: a grid needs a list of values, got {value!r}")
            if self.method == "tpe" and not (isinstance(value, list) or (isinstance(value, dict) and {"low", "high"} <= set(value))):
                raise ValueError(f"space.{key}: TPE needs a list of choices or {{low, high, log?}}")
        if self.trials < 1:
            raise ValueError("trials must be positive")
        return self


class ModelConfig(Strict):
    name: str
    """A label for tables; defaults to the model name."""
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    search: SearchConfig = Field(default_factory=SearchConfig)
    feature_sets: list[str] = Field(default_factory=list)
    """For models that use content: the feature sets to train with (one result row each)."""

    @model_validator(mode="before")
    @classmethod
    def _default_model(cls, data: Any) -> Any:
        if isinstance(data, dict) and "model" not in data and "name" in data:
            data = {**data, "model": data["name"]}
        return data


class EvaluationConfig(Strict):
    cutoffs: list[int] = Field(default_factory=lambda: [10, 20])
    relevance_threshold: float | None = None
    graded: bool = False
    valid_metric: str = "recall@20"
    mask_valid_on_test: bool = True


class AuditConfig(Strict):
    shuffled: bool = True
    random: bool = True
    drop_modality: bool = True
    cold_item: bool = False
    """The second audit: retrain the chosen configuration of every content model and of the
    significance reference on a cold-item split of each data set (items held out of training
    entirely, ranked among themselves), where only content can tell the new items apart."""


class SignificanceConfig(Strict):
    reference: str | None = None
    """The model label every other model is tested against (paired, per user, Holm-corrected)."""
    alpha: float = 0.05


class ReportConfig(Strict):
    explorer_items: int = 12
    """How many items the report's item explorer shows."""


class ResourcesConfig(Strict):
    """What each trial asks a Ray cluster for (``--backend ray``); the local backend ignores it.

    ``gpus`` left out means one GPU when ``device`` is a CUDA device and none otherwise; a fraction
    (``0.5``) lets trials share a GPU. ``memory_gb`` is a scheduling reservation, not a hard limit.
    """

    cpus: float = Field(default=1.0, gt=0)
    gpus: float | None = Field(default=None, ge=0)
    memory_gb: float | None = Field(default=None, gt=0)


class ExperimentConfig(Strict):
    name: str = "experiment"
    datasets: list[DatasetConfig]
    features: list[FeatureConfig] = Field(default_factory=list)
    feature_sets: dict[str, list[str]] = Field(default_factory=dict)
    models: list[ModelConfig]
    seeds: list[int] = Field(default_factory=lambda: [0])
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    audits: AuditConfig = Field(default_factory=AuditConfig)
    significance: SignificanceConfig = Field(default_factory=SignificanceConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    device: str = "cpu"
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    """Per-trial resource requests on a Ray cluster."""

    @model_validator(mode="after")
    def _references(self) -> ExperimentConfig:
        feature_names = {f.name for f in self.features}
        for set_name, members in self.feature_sets.items():
            for member in members:
                if member not in feature_names:
                    raise ValueError(f"feature_sets.{set_name}: unknown feature {member!r}")
        labels = [m.name for m in self.models]
        if len(set(labels)) != len(labels):
            raise ValueError("models: every model needs a distinct name")
        for model in self.models:
            for set_name in model.feature_sets:
                if set_name not in self.feature_sets:
                    raise ValueError(f"models.{model.name}.feature_sets: unknown feature set {set_name!r}")
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        if self.significance.reference and self.significance.reference not in labels:
            raise ValueError(f"significance.reference: unknown model {self.significance.reference!r}")
        return self


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML; relative paths in it resolve against its folder."""
    path = Path(path)
    if not path.exists():
        raise ConfigError("config file not found", where=str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"not valid YAML ({getattr(error, 'problem', error)})", where=where) from None
    return parse_config(raw, where=str(path), base=path.parent)


def parse_config(raw: Any, where: str = "config", base: Path | None = None) -> ExperimentConfig:
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping of keys", where=where)
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        extra = f" (and {error.error_count() - 1} more problems)" if error.error_count() > 1 else ""
        raise ConfigError(f"{key}: {first['msg']}{extra}", where=where) from None
    if base is not None:
        _resolve_paths(config, base)
    return config


_PATH_KEYS = {"path", "posters", "overviews", "train", "valid", "test", "inter", "interactions",
              "items", "images", "reviews", "meta", "dataset"}


def _resolve_paths(config: ExperimentConfig, base: Path) -> None:
    """Make relative file options absolute so trials run from any working directory."""
    for dataset in config.datasets:
        for key, value in list(dataset.source.options.items()):
            if key in _PATH_KEYS and isinstance(value, str):
                dataset.source.options[key] = _resolve(value, base)
    for feature in config.features:
        if feature.file:
            feature.file = _resolve(feature.file, base)


def _resolve(value: str, base: Path) -> str:
    path = Path(os.path.expandvars(value)).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def content_hash(obj: Any) -> str:
    """A stable short hash of JSON-able content: the identity of datasets, features and trials."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
