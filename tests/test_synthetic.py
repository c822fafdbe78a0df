"""The synthetic world: counts, determinism, modality separation, and a real, recoverable signal."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from modalrec.data.dataset import Dataset
from modalrec.data.sources import synthetic_render as render
from modalrec.data.sources import synthetic_text as text
from modalrec.data.sources.synthetic import (
    ATTRIBUTES,
    FORMAT_VERSION,
    SyntheticConfig,
    generate,
    image_spec,
    sample_world,
    simulate,
    synthesize,
    text_spec,
)
from modalrec.errors import ConfigError, DataError

IMAGE_ONLY = [a for a, (m, _) in ATTRIBUTES.items() if m == "image"]
TEXT_ONLY = [a for a, (m, _) in ATTRIBUTES.items() if m == "text"]
SHARED = [a for a, (m, _) in ATTRIBUTES.items() if m == "both"]


@pytest.fixture(scope="module")
def default_world(tmp_path_factory) -> Dataset:
    """The default world, written to disk and loaded back (what `modalrec data synth` makes)."""
    out = tmp_path_factory.mktemp("synth") / "world"
    synthesize(out, SyntheticConfig())
    return Dataset.load(out)


def world(**changes) -> SyntheticConfig:
    """A world of the default size (without pictures, these tests only need interactions)."""
    return SyntheticConfig(**changes)


# --- a simple recommender over the true attributes, and its references -----------------------------

def _holdout(dataset: Dataset, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dense train / test matrices with a random 20 % of each user's items held out."""
    inter = dataset.interactions
    test = np.random.default_rng(seed).random(inter.nnz) < 0.2
    train_m = np.zeros((dataset.n_users, dataset.n_items))
    test_m = np.zeros_like(train_m)
    train_m[inter.users[~test], inter.items[~test]] = 1
    test_m[inter.users[test], inter.items[test]] = 1
    return train_m, test_m


def _recall_at_20(scores: np.ndarray, train_m: np.ndarray, test_m: np.ndarray) -> float:
    scores = np.where(train_m > 0, -np.inf, scores)
    top = np.argpartition(-scores, 20, axis=1)[:, :20]
    hits = np.take_along_axis(test_m, top, axis=1).sum(axis=1)
    relevant = test_m.sum(axis=1)
    has = relevant > 0
    return float((hits[has] / relevant[has]).mean())


def _attribute_knn(dataset: Dataset, attributes: list[str]) -> dict[str, float]:
    """Recall@20 of: the user's mean one-hot attribute profile . item one-hot; MostPop; random."""
    table = dataset.extras["attributes"]
    onehot = np.concatenate([pd.get_dummies(table[a]).to_numpy(float) for a in attributes], axis=1)
    train_m, test_m = _holdout(dataset)
    profile = train_m @ onehot / np.maximum(train_m.sum(axis=1, keepdims=True), 1)
    popularity = np.broadcast_to(train_m.sum(axis=0), train_m.shape)
    noise = np.random.default_rng(1).random(train_m.shape)
    return {
        "content": _recall_at_20(profile @ onehot.T, train_m, test_m),
        "mostpop": _recall_at_20(popularity, train_m, test_m),
        "random": _recall_at_20(noise, train_m, test_m),
    }


# --- the default world ------------------------------------------------------------------------------

def test_default_counts_ratings_and_times(default_world: Dataset):
    inter = default_world.interactions
    assert (default_world.n_users, default_world.n_items) == (2000, 1000)
    assert 36_000 <= inter.nnz <= 44_000
    assert inter.user_counts().min() >= SyntheticConfig().min_user_interactions
    assert set(np.unique(inter.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    shares = np.bincount(inter.ratings.astype(int), minlength=6)[1:] / inter.nnz
    np.testing.assert_allclose(shares, SyntheticConfig().rating_shares, atol=0.01)
    config = SyntheticConfig()
    times = inter.timestamps
    assert times.min() >= config.start_time
    assert times.max() < config.start_time + config.period_days * 86_400
    frame = pd.DataFrame({"user": inter.users, "t": times}).sort_values(["user", "t"])
    same_user = frame["user"].to_numpy()[1:] == frame["user"].to_numpy()[:-1]
    assert (np.diff(frame["t"].to_numpy())[same_user] > 0).all(), "timestamps must strictly increase per user"


def test_default_items_images_and_truth_tables(default_world: Dataset):
    items = default_world.items
    assert list(items.columns) == ["item_id", "title", "description", "image_path"]
    assert items["description"].str.len().min() > 20
    stored = pd.read_parquet(default_world.path / "items.parquet")["image_path"]
    assert stored.tolist() == [f"images/{i}.png" for i in items["item_id"]], "stored relative to the folder"
    for path in items["image_path"]:
        assert Path(path).parent == default_world.path.resolve() / "images"
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (128, 128)
            assert image.mode == "RGB"
    attributes = default_world.extras["attributes"]
    assert list(attributes.columns) == ["item_id", *ATTRIBUTES]
    assert attributes["item_id"].tolist() == items["item_id"].tolist()
    for name, (_, values) in ATTRIBUTES.items():
        assert set(attributes[name]) == set(values), f"every {name} value should occur"
    modalities = default_world.extras["attribute_modalities"]
    assert dict(zip(modalities["attribute"], modalities["modality"])) == {a: m for a, (m, _) in ATTRIBUTES.items()}
    assert set(modalities["modality"]) == {"image", "text", "both"}
    prefs = default_world.extras["user_preferences"]
    assert len(prefs) == 2000 * sum(len(v) for _, v in ATTRIBUTES.values())
    provenance = default_world.provenance
    assert provenance["source"] == "synthetic"
    assert provenance["format_version"] == FORMAT_VERSION
    assert provenance["config"] == {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(SyntheticConfig()).items()
    }


def test_text_states_its_attributes_and_never_image_ones(default_world: Dataset):
    attributes = default_world.extras["attributes"]
    banned = re.compile(r"\b(" + "|".join(map(re.escape, text.IMAGE_VOCABULARY)) + r")\b", re.IGNORECASE)
    tables = {"category": text.CATEGORY_WORDS, "material": text.MATERIALS, "purpose": text.PURPOSES,
              "style": text.STYLES}
    for row, truth in zip(default_world.items.itertuples(), attributes.itertuples()):
        words = f"{row.title} {row.description}".lower()
        assert not banned.search(words), f"image vocabulary in text of {row.item_id}: {words}"
        for name, table in tables.items():
            value = getattr(truth, name)
            assert any(s.lower() in words for s in table[value]), f"{row.item_id} does not state its {name}"
    # the description alone names the category too (extractors may use it without the title)
    for row, truth in zip(default_world.items.itertuples(), attributes.itertuples()):
        assert any(s in row.description.lower() for s in text.CATEGORY_WORDS[truth.category])


# --- structure: which attribute reaches which modality ------------------------------------------------

def test_vocabularies_agree():
    assert tuple(text.CATEGORY_WORDS) == render.CATEGORIES
    assert set(render.SILHOUETTES) == set(render.CATEGORIES) == set(render.EMBLEM_AT)
    assert set(render.PATTERN_DRAWERS) == set(render.PATTERNS)
    brand_words = {w.lower() for b in text.BRANDS for w in re.findall(r"[A-Za-z]+", b)}
    assert not brand_words & set(text.IMAGE_VOCABULARY)
    value_words = {v for _, vals in ATTRIBUTES.values() for v in vals}
    assert not brand_words & value_words


def test_modalities_are_structurally_separate():
    image_fields = {f.name for f in dataclasses.fields(render.ImageSpec)} - {"nuisance"}
    text_fields = {f.name for f in dataclasses.fields(text.TextSpec)} - {"brand"}
    assert image_fields == set(IMAGE_ONLY + SHARED)
    assert text_fields == set(TEXT_ONLY + SHARED)
    # changing an item's text-only attributes leaves its picture spec alone, and vice versa
    config = SyntheticConfig(n_users=10, n_items=40)
    world = sample_world(config)
    before_image = [image_spec(world, config, i) for i in range(40)]
    before_text = [text_spec(world, i) for i in range(40)]
    for name in TEXT_ONLY:
        world.item_values[name] = (world.item_values[name] + 1) % len(ATTRIBUTES[name][1])
    assert [image_spec(world, config, i) for i in range(40)] == before_image
    for name in IMAGE_ONLY:
        world.item_values[name] = (world.item_values[name] + 1) % len(ATTRIBUTES[name][1])
    after_text = [text_spec(world, i) for i in range(40)]
    assert [(t.material, t.purpose, t.style, t.category) for t in after_text] != \
        [(t.material, t.purpose, t.style, t.category) for t in before_text]
    world2 = sample_world(config)
    for name in IMAGE_ONLY:
        world2.item_values[name] = (world2.item_values[name] + 1) % len(ATTRIBUTES[name][1])
    assert [text_spec(world2, i) for i in range(40)] == before_text


def test_picture_shows_colour_pattern_emblem_and_category():
    """Each image attribute changes the picture; the fill colour dominates the object."""
    base = render.ImageSpec("mug", "red", "solid", "circle")
    reference = render.render_png(base)
    for field, other in (("colour", "blue"), ("pattern", "stripes"), ("emblem", "star"), ("category", "hat")):
        assert render.render_png(dataclasses.replace(base, **{field: other})) != reference
    for colour, rgb in render.COLOURS.items():
        pixels = np.asarray(render.render(render.ImageSpec("cushion", colour, "solid", "circle")), dtype=float)
        corner = pixels[40:50, 20:30].reshape(-1, 3).mean(axis=0)  # body, away from the emblem
        np.testing.assert_allclose(corner, rgb, atol=3)
    with pytest.raises(ValueError, match="unknown colour"):
        render.ImageSpec("mug", "beige", "solid", "circle")


# --- determinism --------------------------------------------------------------------------------------

def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_config_same_bytes(tmp_path: Path):
    config = SyntheticConfig(n_users=200, n_items=120, seed=7)
    a = generate(config, tmp_path / "a")
    b = generate(config, tmp_path / "b")
    assert a.interactions == b.interactions
    pd.testing.assert_frame_equal(a.items.drop(columns="image_path"), b.items.drop(columns="image_path"))
    for name in a.extras:
        pd.testing.assert_frame_equal(a.extras[name], b.extras[name])
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert len(_files(tmp_path / "a")) == 120
    without_pictures = simulate(config)
    assert without_pictures.interactions == a.interactions
    pd.testing.assert_frame_equal(without_pictures.items, a.items.drop(columns="image_path"))
    c = generate(dataclasses.replace(config, seed=8), tmp_path / "c")
    assert c.interactions != a.interactions
    assert _files(tmp_path / "c") != _files(tmp_path / "a")
    # items do not depend on the number of users
    d = generate(dataclasses.replace(config, n_users=50), tmp_path / "d")
    pd.testing.assert_frame_equal(d.extras["attributes"], a.extras["attributes"])
    assert _files(tmp_path / "d") == _files(tmp_path / "a")


def test_synthesize_round_trip_and_refuses_to_overwrite(tmp_path: Path):
    config = SyntheticConfig(n_users=60, n_items=30, image_size=24)
    made = synthesize(tmp_path / "w", config)
    assert [p.name for p in tmp_path.iterdir()] == ["w"], "no staging folder is left behind"
    direct = generate(config, tmp_path / "direct")
    assert made.interactions == direct.interactions
    pd.testing.assert_frame_equal(made.items.drop(columns="image_path"), direct.items.drop(columns="image_path"))
    assert _files(tmp_path / "w" / "images") == _files(tmp_path / "direct")
    loaded = Dataset.load(tmp_path / "w")
    assert loaded.interactions == made.interactions
    pd.testing.assert_frame_equal(loaded.items, made.items)
    assert loaded.provenance == made.provenance
    before = _files(tmp_path / "w" / "images")
    with pytest.raises(DataError, match="refusing to overwrite"):
        synthesize(tmp_path / "w", dataclasses.replace(config, seed=1))
    assert _files(tmp_path / "w" / "images") == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="refusing to overwrite"):
        synthesize(tmp_path / "other", config)
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert synthesize(tmp_path / "empty", config).interactions == made.interactions


@pytest.mark.parametrize(("key", "value"), [
    ("content_weight", 1.5), ("visual_share", -0.1), ("n_users", 0), ("n_items", 1), ("image_size", 4),
    ("popularity_skew", -1.0), ("interactions_per_user", 0), ("content_weight", float("nan")), ("n_items", True), ("rating_shares", (0.5, 0.5)), ("seed", -3),
])
def test_bad_config_names_the_knob(tmp_path: Path, key: str, value):
    config = dataclasses.replace(SyntheticConfig(), **{key: value})
    with pytest.raises(ConfigError) as info:
        synthesize(tmp_path / "out", config)
    assert key in str(info.value)
    assert info.value.hint
    assert not any(tmp_path.iterdir()), "nothing is written for a bad config"


# --- the signal -----------------------------------------------------------------------------------------

def test_content_predicts_at_high_content_weight():
    dataset = simulate(world(content_weight=0.8))
    scores = _attribute_knn(dataset, list(ATTRIBUTES))
    assert scores["content"] > 2 * scores["mostpop"], scores
    assert scores["content"] > 5 * scores["random"], scores


def test_content_is_uninformative_at_zero_content_weight():
    dataset = simulate(world(content_weight=0.0))
    scores = _attribute_knn(dataset, list(ATTRIBUTES))
    assert scores["content"] < 1.3 * scores["random"] + 0.005, scores
    assert scores["mostpop"] > 2 * scores["random"], "popularity still structures the data"


def test_visual_share_moves_the_signal_between_modalities():
    visual = simulate(world(content_weight=1.0, visual_share=1.0, shared_share=0.0))
    textual = simulate(world(content_weight=1.0, visual_share=0.0, shared_share=0.0))
    v_img, v_txt = (_attribute_knn(visual, a)["content"] for a in (IMAGE_ONLY, TEXT_ONLY))
    t_img, t_txt = (_attribute_knn(textual, a)["content"] for a in (IMAGE_ONLY, TEXT_ONLY))
    random_level = _attribute_knn(visual, IMAGE_ONLY)["random"]
    assert v_img > 5 * random_level and t_txt > 5 * random_level
    assert v_txt < 1.3 * random_level + 0.005
    assert t_img < 1.3 * random_level + 0.005


def test_ratings_grow_with_content_affinity():
    dataset = simulate(world(content_weight=1.0, rating_noise=0.3))
    prefs = dataset.extras["user_preferences"].set_index(["user_id", "attribute", "value"])["weight"]
    attributes = dataset.extras["attributes"].set_index("item_id")
    inter = dataset.interactions
    users = dataset.user_ids[inter.users].astype(str)
    items = dataset.item_ids[inter.items].astype(str)
    taste = np.zeros(inter.nnz)
    for name in ATTRIBUTES:
        keys = pd.MultiIndex.from_arrays([users, np.full(inter.nnz, name), attributes.loc[items, name].to_numpy()])
        taste += prefs.reindex(keys).to_numpy()
    assert np.corrcoef(taste, inter.ratings)[0, 1] > 0.3


def test_popularity_skew_and_density_knobs():
    def top_share(dataset: Dataset) -> float:
        counts = np.sort(dataset.interactions.item_counts())[::-1]
        return counts[: len(counts) // 10].sum() / counts.sum()

    flat = simulate(world(popularity_skew=0.0, interactions_per_user=10.0))
    skewed = simulate(world(popularity_skew=2.0, interactions_per_user=10.0))
    assert top_share(skewed) > top_share(flat) + 0.15
    assert 9.0 < flat.interactions.nnz / flat.n_users < 12.0
