"""Experiment config validation: every error names the key and the reason."""

from __future__ import annotations

import pytest

from modalrec.config import load_config, parse_config
from modalrec.errors import ConfigError


def base() -> dict:
    return {
        "datasets": [{"name": "d", "source": {"format": "synthetic", "options": {"n_users": 10}}}],
        "features": [{"name": "img", "extractor": "efficientnet-lite0"}],
        "feature_sets": {"v": ["img"]},
        "models": [{"name": "bpr", "search": {"method": "grid", "space": {"lr": [0.01, 0.1]}}},
                   {"name": "vbpr", "feature_sets": ["v"]}],
    }


def test_valid_config_parses_with_defaults():
    config = parse_config(base())
    assert config.models[0].model == "bpr"
    assert config.evaluation.cutoffs == [10, 20]
    assert config.seeds == [0]
    assert config.datasets[0].split.ratios == (0.8, 0.1, 0.1)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.pop("models"), "models: Field required"),
        (lambda c: c.update(extra_key=1), "extra_key: Extra inputs are not permitted"),
        (lambda c: c["datasets"][0]["source"].update(format="csv"), "datasets.0.source.format"),
        (lambda c: c["datasets"][0].update(split={"ratios": [0.5, 0.1, 0.1]}), "ratios must be three non-negative numbers summing to 1"),
        (lambda c: c["models"][0]["search"].update(space={"lr": 0.1}), "space.lr: a grid needs a list"),
        (lambda c: c["models"][1].update(feature_sets=["nope"]), "unknown feature set 'nope'"),
        (lambda c: c["feature_sets"].update(v=["missing"]), "feature_sets.v: unknown feature 'missing'"),
        (lambda c: c.update(seeds=[]), "seeds: give at least one seed"),
        (lambda c: c["features"][0].pop("extractor"), "kind 'extract' needs 'extractor'"),
        (lambda c: c.update(significance={"reference": "nobody"}), "unknown model 'nobody'"),
        (lambda c: c["models"].append({"name": "bpr"}), "distinct name"),
    ],
)
def test_config_errors_name_key_and_reason(mutate, message):
    raw = base()
    mutate(raw)
    with pytest.raises(ConfigError) as error:
        parse_config(raw, where="study.yaml")
    assert message in str(error.value)
    assert str(error.value).startswith("study.yaml: ")


def test_yaml_syntax_error_points_at_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodels: [a, b\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert f"{path}:3" in str(error.value) or f"{path}:2" in str(error.value)


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    raw = base()
    raw["datasets"][0]["source"] = {"format": "movielens", "options": {"path": "ml-100k", "posters": "$HOME/p"}}
    path = tmp_path / "c.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    options = load_config(path).datasets[0].source.options
    assert options["path"] == str(tmp_path / "ml-100k")
    assert not options["posters"].startswith("$HOME")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
