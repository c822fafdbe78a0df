"""FeatureStore: round trips, atomic manifests, and refusal of features made for another item index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modalrec import io
from modalrec.data.dataset import Dataset
from modalrec.errors import FeatureError
from modalrec.features.features import Features
from modalrec.features.store import FeatureStore, check_name, safe_name


def make_dataset(folder, n_items: int = 6) -> Dataset:
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(n_items)],
                          "title": [f"title {j}" for j in range(n_items)]})
    inter = pd.DataFrame({"user_id": ["u0"] * n_items + ["u1"] * n_items, "item_id": list(items.item_id) * 2})
    dataset = Dataset.from_frames(inter, items)
    dataset.save(folder)
    return dataset


def random_features(n: int, d: int, seed: int = 0, missing: tuple[int, ...] = ()) -> Features:
    rng = np.random.default_rng(seed)
    mask = np.ones(n, dtype=bool)
    mask[list(missing)] = False
    return Features(rng.standard_normal((n, d)).astype(np.float32), mask, {"extractor": "test", "note": seed})


def test_round_trip_keeps_matrix_mask_manifest_and_ids(tmp_path):
    dataset = make_dataset(tmp_path)
    store = FeatureStore(tmp_path)
    feats = random_features(6, 5, missing=(2, 4))
    path = store.save("text", feats, dataset.item_ids)
    assert path == tmp_path / "features" / "text"
    assert sorted(p.name for p in path.iterdir()) == ["item_ids.parquet", "manifest.json", "mask.npy", "matrix.npy"]
    loaded = store.load("text")
    np.testing.assert_array_equal(loaded.matrix, feats.matrix)
    np.testing.assert_array_equal(loaded.mask, feats.mask)
    assert loaded.matrix.dtype == np.float32
    manifest = store.manifest("text")
    assert manifest["extractor"] == "test" and manifest["note"] == 0
    assert (manifest["n_items"], manifest["dim"], manifest["n_with_content"]) == (6, 5, 4)
    assert store.names() == ["text"] and store.exists("text") and not store.exists("image")


def test_save_replaces_and_load_set_keeps_order(tmp_path):
    dataset = make_dataset(tmp_path)
    store = FeatureStore(tmp_path)
    store.save("b", random_features(6, 3, seed=1), dataset.item_ids)
    store.save("a", random_features(6, 4, seed=2), dataset.item_ids)
    store.save("b", random_features(6, 2, seed=3), dataset.item_ids)
    assert store.load("b").dim == 2 and store.manifest("b")["note"] == 3
    feature_set = store.load_set(["b", "a"])
    assert list(feature_set) == ["b", "a"]
    with pytest.raises(FeatureError, match="repeated"):
        store.load_set(["a", "a"])


def test_missing_features_name_the_available_ones(tmp_path):
    dataset = make_dataset(tmp_path)
    store = FeatureStore(tmp_path)
    with pytest.raises(FeatureError, match="not found") as empty:
        store.load("text")
    assert "features extract" in str(empty.value)
    store.save("minilm", random_features(6, 3), dataset.item_ids)
    with pytest.raises(FeatureError, match="available: minilm"):
        store.load("mpnet")


def test_folder_without_manifest_is_an_interrupted_write(tmp_path):
    dataset = make_dataset(tmp_path)
    store = FeatureStore(tmp_path)
    store.save("text", random_features(6, 3), dataset.item_ids)
    (tmp_path / "features" / "text" / "manifest.json").unlink()
    assert store.names() == [] and not store.exists("text")
    with pytest.raises(FeatureError, match="incomplete"):
        store.load("text")


def test_reimported_dataset_is_refused(tmp_path):
    dataset = make_dataset(tmp_path)
    store = FeatureStore(tmp_path)
    store.save("text", random_features(6, 3), dataset.item_ids)
    items = pd.read_parquet(tmp_path / "items.parquet")
    io.write_parquet(tmp_path / "items.parquet", items.iloc[::-1].reset_index(drop=True))
    with pytest.raises(FeatureError, match="different item index: row 0 is item 'i0'") as error:
        store.load("text")
    assert "re-extract" in str(error.value)
    io.write_parquet(tmp_path / "items.parquet", items.iloc[:4])
    with pytest.raises(FeatureError, match="6 feature rows but the data set has 4 items"):
        store.load("text")


def test_save_checks_alignment_and_ids(tmp_path):
    dataset = make_dataset(tmp_path)
    store = FeatureStore(tmp_path)
    with pytest.raises(FeatureError, match="5 item ids for 6 feature rows"):
        store.save("x", random_features(6, 3), dataset.item_ids[:5])
    with pytest.raises(FeatureError, match="do not follow the data set's item index"):
        store.save("x", random_features(6, 3), dataset.item_ids[::-1])
    with pytest.raises(FeatureError, match="not unique"):
        store.save("x", random_features(6, 3), np.array(["i0"] * 6))
    assert store.names() == []


def test_damaged_files_are_detected(tmp_path):
    dataset = make_dataset(tmp_path)
    store = FeatureStore(tmp_path)
    store.save("text", random_features(6, 3), dataset.item_ids)
    io.write_npy(tmp_path / "features" / "text" / "matrix.npy", np.zeros((6, 4), dtype=np.float32))
    with pytest.raises(FeatureError, match="disagree with the manifest"):
        store.load("text")


def test_names_are_safe_folder_names():
    assert check_name("clip-image.v2_b+1") == "clip-image.v2_b+1"
    for bad in ("", ".partial", "a/b", "st:model", "../x"):
        with pytest.raises(FeatureError, match="bad feature name"):
            check_name(bad)
    assert safe_name("st:/models/all-MiniLM") == "st-models-all-MiniLM"
    assert check_name(safe_name("hf-image:microsoft/resnet-50")) == "hf-image-microsoft-resnet-50"


def test_store_without_dataset_folder_is_explained(tmp_path):
    store = FeatureStore(tmp_path / "nowhere")
    assert store.names() == []
    with pytest.raises(FeatureError, match="not a modalrec data set"):
        store.item_ids()
