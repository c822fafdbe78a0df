"""Data sets and features for an experiment, built once and cached by content hash.

A data set is built in a ``.partial`` folder and renamed into place when complete, so a killed run
never leaves a half data set that a rerun would trust.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modalrec.config import DatasetConfig, FeatureConfig, content_hash
from modalrec.data.dataset import Dataset
from modalrec.data.filtering import apply_filters
from modalrec.data.splitting import make_split
from modalrec.errors import ConfigError
from modalrec.features.features import Features

log = logging.getLogger(__name__)


def prepare_dataset(config: DatasetConfig, root: Path) -> Path:
    """The folder of the data set ``config`` describes, with its split; built if missing."""
    folder = root / f"{config.name}-{content_hash(config.model_dump(mode='json'))}"
    if (folder / "manifest.json").exists():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    dataset, features = _import(config, partial)
    if config.filters.k_core or config.filters.min_rating is not None:
        if config.split.protocol == "fixed":
            raise ConfigError("filters cannot be applied to a fixed (imported) split",
                              where=f"datasets.{config.name}.filters")
        dataset = apply_filters(dataset, min_rating_threshold=config.filters.min_rating,
                                user_k=config.filters.k_core, item_k=config.filters.k_core)
    if config.split.protocol == "fixed":
        dataset.require_split()
    else:
        dataset = dataset.with_split(make_split(dataset.interactions, config.split.protocol,
                                                config.split.ratios, config.split.seed))
    dataset.save(partial)
    if features:
        from modalrec.features.store import FeatureStore

        store = FeatureStore(partial)
        for name, feats in features.items():
            store.save(name, feats, dataset.item_ids)
    partial.rename(folder)
    log.info("prepared data set %s: %s", config.name, Dataset.load(folder).info())
    return folder


def prepare_cold_dataset(dataset_dir: Path, ratios: tuple[float, float, float], seed: int) -> Path:
    """A copy of a prepared data set (features included) re-split by the cold-item protocol, built
    beside it if missing. Files are hard-linked where the file system allows: nothing is re-extracted."""
    from modalrec.data.splitting import cold_item_split

    folder = dataset_dir.with_name(f"{dataset_dir.name}-cold-{content_hash([list(ratios), seed])}")
    if (folder / "manifest.json").exists():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    shutil.copytree(dataset_dir, partial, copy_function=_link_or_copy)
    (partial / "manifest.json").unlink()  # replaced (not edited through a link) by the save below
    dataset = Dataset.load(dataset_dir)
    dataset.with_split(cold_item_split(dataset.interactions, ratios, seed)).save(partial)
    partial.rename(folder)
    log.info("prepared the cold-item copy of %s", dataset_dir.name)
    return folder


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _import(config: DatasetConfig, folder: Path) -> tuple[Dataset, dict[str, Features]]:
    fmt, options = config.source.format, dict(config.source.options)
    where = f"datasets.{config.name}.source.options"
    try:
        if fmt == "synthetic":
            from modalrec.data.sources.synthetic import SyntheticConfig, synthesize

            return synthesize(folder, SyntheticConfig(**options)), {}
        if fmt == "movielens":
            from modalrec.data.sources.movielens import import_movielens

            return import_movielens(**options), {}
        if fmt == "elliot":
            from modalrec.data.sources.elliot import import_elliot

            return import_elliot(**options), {}
        if fmt == "mmrec":
            from modalrec.data.sources.mmrec import import_mmrec

            return import_mmrec(**options)
        if fmt == "folder":
            from modalrec.data.sources.folder import import_folder

            return import_folder(**options), {}
        if fmt == "amazon2023":
            from modalrec.data.sources.amazon2023 import import_amazon2023

            return import_amazon2023(out=folder, **options), {}
        return _existing(Path(options["path"]))
    except TypeError as error:
        raise ConfigError(f"bad options for source {fmt!r}: {error}", where=where) from None
    except KeyError as error:
        raise ConfigError(f"source {fmt!r} needs option {error}", where=where) from None


def _existing(folder: Path) -> tuple[Dataset, dict[str, Features]]:
    """A modalrec data set folder, copied with its stored features (the original stays untouched)."""
    from modalrec.features.store import FeatureStore

    store = FeatureStore(folder)
    return Dataset.load(folder), {name: store.load(name) for name in store.names()}


def prepare_features(dataset_dir: Path, configs: list[FeatureConfig], device: str = "cpu") -> None:
    """Make every configured feature exist in the data set's feature store (cache hits are free)."""
    from modalrec.features.store import FeatureStore

    store = FeatureStore(dataset_dir)
    dataset = Dataset.load(dataset_dir)
    for config in configs:
        if config.kind == "stored":
            store.load(config.stored_name or config.name)  # fails clearly when absent
        elif config.kind == "true-attributes":
            if not store.exists(config.name):
                store.save(config.name, true_attribute_features(dataset), dataset.item_ids)
        elif config.kind == "extract":
            _extract(dataset_dir, config, device)
        else:
            _lvlm_import(dataset_dir, config, device)


def true_attribute_features(dataset: Dataset) -> Features:
    """One-hot of the synthetic world's true attributes: the content upper reference."""
    table = dataset.extras.get("attributes")
    if table is None:
        raise ConfigError("this data set has no true attributes (only the synthetic world has them)",
                          hint="use kind: true-attributes only with the synthetic source")
    table = table.set_index("item_id").loc[dataset.item_ids.astype(str)]
    onehot = pd.get_dummies(table.astype(str), prefix_sep="=").to_numpy(dtype=np.float32)
    manifest: dict[str, Any] = {"extractor": "true-attributes", "columns": list(table.columns)}
    return Features(onehot, np.ones(len(onehot), dtype=bool), manifest)


def _extract(dataset_dir: Path, config: FeatureConfig, device: str) -> None:
    from modalrec.features.extraction import extract
    from modalrec.features.registry import ExtractorOptions, get_extractor

    assert config.extractor is not None
    options = ExtractorOptions(fields=tuple(config.fields) if config.fields else None, device=device)
    extract(dataset_dir, get_extractor(config.extractor, options), name=config.name,
            impute_method=config.impute)


def _lvlm_import(dataset_dir: Path, config: FeatureConfig, device: str) -> None:
    """Imported LVLM outputs as a feature: one-hot slot attributes, or the text re-encoded."""
    from modalrec.features.attributes import make_attributes
    from modalrec.features.descriptions import description_names, encode_descriptions
    from modalrec.features.lvlm_import import import_outputs
    from modalrec.features.prompts import load_prompt
    from modalrec.features.store import FeatureStore

    store = FeatureStore(dataset_dir)
    if store.exists(config.name):
        return
    assert config.file is not None and config.prompt is not None
    descriptions = f"imported-{content_hash([config.file, config.prompt])}"
    if descriptions not in description_names(dataset_dir):
        import_outputs(dataset_dir, config.file, load_prompt(config.prompt), descriptions)
    if config.encoder:
        encode_descriptions(dataset_dir, descriptions, config.encoder, config.name, device)
    else:
        made, _, _ = make_attributes(dataset_dir, descriptions, top_k=config.top_k, threshold=config.threshold)
        item_ids = Dataset.load(dataset_dir).item_ids
        store.save(config.name, store.load(made), item_ids)

