"""Every shipped config loads, and every model parameter in it (each grid point too) is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from modalrec.config import load_config
from modalrec.experiments.search import grid
from modalrec.features.prompts import load_prompt
from modalrec.models.registry import get_model, parse_params

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_is_valid(path):
    config = load_config(path)
    for model in config.models:
        cls = get_model(model.model or model.name)
        points = grid(model.search.space) if model.search.method == "grid" else [{}]
        for point in points or [{}]:
            parse_params(cls, {**model.params, **point})
        if model.search.method == "tpe":
            parse_params(cls, {**model.params, **{k: v[0] for k, v in model.search.space.items() if isinstance(v, list)}})
    for feature in config.features:
        if feature.prompt:
            load_prompt(feature.prompt)


def test_quickstart_is_shipped_inside_the_package():
    from modalrec.cli.experiments import quickstart_config

    assert load_config(quickstart_config()).name == "quickstart"
