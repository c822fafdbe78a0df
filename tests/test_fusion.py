"""Fusion and normalisation: each step against its definition, determinism, masks, errors, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modalrec.cli.main import main as cli_main
from modalrec.data.dataset import Dataset
from modalrec.errors import ConfigError
from modalrec.features.features import Features
from modalrec.features.fusion import (
    combine_masks,
    fuse,
    gaussian_projection,
    l2_normalize,
    pca_reduce,
    project,
    zscore,
)
from modalrec.features.imputation import impute
from modalrec.features.store import FeatureStore


def feats(n: int, d: int, seed: int, missing: tuple[int, ...] = ()) -> Features:
    rng = np.random.default_rng(seed)
    mask = np.ones(n, dtype=bool)
    mask[list(missing)] = False
    return Features(rng.standard_normal((n, d)) * (seed + 1) + seed, mask, {"fingerprint_id": f"fp{seed}"})


def test_l2_and_zscore():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0, 0], [1, 0]])
    data = np.random.default_rng(0).normal(5, 3, (50, 4))
    data[:, 3] = 7.0
    mask = np.ones(50, dtype=bool)
    mask[:5] = False
    data[:5] = 1000.0  # rows without content must not shift the statistics
    z = zscore(data, mask)
    np.testing.assert_allclose(z[mask, :3].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z[mask, :3].std(axis=0), 1, atol=1e-5)
    assert (z[mask, 3] == 0).all()


def test_gaussian_projection_is_seeded_and_keeps_norms_on_average():
    a, b = gaussian_projection(300, 200, seed=1), gaussian_projection(300, 200, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, gaussian_projection(300, 200, seed=2))
    x = np.random.default_rng(0).standard_normal((200, 300)).astype(np.float32)
    ratio = np.linalg.norm(x @ a, axis=1) / np.linalg.norm(x, axis=1)
    assert abs(ratio.mean() - 1) < 0.05 and ratio.std() < 0.1
    np.testing.assert_array_equal(project(x, 300), x)


def test_pca_matches_sklearn_up_to_sign_and_is_deterministic():
    from sklearn.decomposition import PCA

    x = np.random.default_rng(4).standard_normal((80, 10)) @ np.diag(np.arange(10, 0, -1))
    ours = pca_reduce(x, 3)
    theirs = PCA(n_components=3, svd_solver="full").fit_transform(x)
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-4)
    np.testing.assert_array_equal(ours, pca_reduce(x, 3))
    # signs are fixed: the largest loading of each component is positive
    flipped = pca_reduce(-x, 3)
    np.testing.assert_allclose(np.abs(flipped), np.abs(ours), atol=1e-4)
    with pytest.raises(ConfigError, match="cannot keep 11"):
        pca_reduce(x, 11)


def test_pca_is_fitted_on_items_with_content():
    x = np.random.default_rng(0).standard_normal((40, 5))
    mask = np.ones(40, dtype=bool)
    mask[:3] = False
    x[:3] = 500.0
    reduced = pca_reduce(x, 2, mask)
    np.testing.assert_allclose(reduced[mask].mean(axis=0), 0, atol=1e-5)


def test_concat_mean_sum_product():
    a, b = feats(10, 3, 0), feats(10, 5, 1)
    concat = fuse({"a": a, "b": b}, "concat")
    np.testing.assert_array_equal(concat.matrix, np.hstack([a.matrix, b.matrix]))
    pa, pb = project(a.matrix, 4, stream=0), project(b.matrix, 4, stream=1)
    np.testing.assert_allclose(fuse({"a": a, "b": b}, "mean", dim=4).matrix, (pa + pb) / 2, rtol=1e-6)
    np.testing.assert_allclose(fuse({"a": a, "b": b}, "sum", dim=4).matrix, pa + pb, rtol=1e-6)
    np.testing.assert_allclose(fuse({"a": a, "b": b}, "product", dim=4).matrix, pa * pb, rtol=1e-6)
    same = fuse({"a": a, "c": feats(10, 3, 2)}, "sum")
    np.testing.assert_allclose(same.matrix, a.matrix + feats(10, 3, 2).matrix, rtol=1e-6)
    fused = fuse({"a": a, "b": b}, "mean", dim=4, normalize_each="l2", pca=2)
    assert fused.dim == 2 and fused.manifest["fusion"]["normalize"] == "l2"
    assert fused.manifest["inputs_fingerprints"] == {"a": "fp0", "b": "fp1"}
    np.testing.assert_array_equal(fused.matrix, fuse({"a": a, "b": b}, "mean", dim=4, normalize_each="l2",
                                                     pca=2).matrix)
    assert not np.array_equal(fuse({"a": a, "b": b}, "mean", dim=4, seed=1).matrix,
                              fuse({"a": a, "b": b}, "mean", dim=4, seed=0).matrix)
    pca_projected = fuse({"a": a, "b": b}, "mean", dim=2, projection="pca")
    np.testing.assert_allclose(pca_projected.matrix, (pca_reduce(a.matrix, 2) + pca_reduce(b.matrix, 2)) / 2,
                               rtol=1e-5, atol=1e-6)


def test_masks_combine_with_any_or_all():
    a, b = feats(5, 2, 0, missing=(0, 1)), feats(5, 2, 1, missing=(1, 2))
    assert fuse({"a": a, "b": b}, "concat").mask.tolist() == [True, False, True, True, True]
    assert fuse({"a": a, "b": b}, "concat", mask_rule="all").mask.tolist() == [False, False, False, True, True]
    with pytest.raises(ConfigError, match="unknown mask rule"):
        combine_masks([a.mask], "most")


def test_fusion_errors_are_explained():
    a, b = feats(10, 3, 0), feats(10, 5, 1)
    with pytest.raises(ConfigError, match="needs one size") as error:
        fuse({"a": a, "b": b}, "mean")
    assert "--dim" in str(error.value)
    with pytest.raises(ConfigError, match="unknown fusion"):
        fuse({"a": a}, "max")
    with pytest.raises(ConfigError, match="different item counts"):
        fuse({"a": a, "c": feats(9, 3, 2)}, "concat")
    with pytest.raises(ConfigError, match="unknown normalisation"):
        fuse({"a": a}, "concat", normalize_each="minmax")
    with pytest.raises(ConfigError, match="nothing to fuse"):
        fuse({}, "concat")


def test_imputation_zero_and_mean():
    x = np.array([[1.0, 2.0], [3.0, 6.0], [99.0, 99.0]], dtype=np.float32)
    mask = np.array([True, True, False])
    np.testing.assert_array_equal(impute(x, mask, "zero")[2], [0, 0])
    np.testing.assert_array_equal(impute(x, mask, "mean")[2], [2, 4])
    np.testing.assert_array_equal(impute(x, mask, "mean")[:2], x[:2])
    assert (impute(x, np.zeros(3, dtype=bool), "mean") == 0).all()
    with pytest.raises(ConfigError, match="unknown imputation"):
        impute(x, mask, "median")


def test_cli_fuse_writes_a_new_feature(tmp_path, capsys):
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(8)]})
    inter = pd.DataFrame({"user_id": ["u"] * 8, "item_id": items.item_id})
    dataset = Dataset.from_frames(inter, items)
    dataset.save(tmp_path)
    store = FeatureStore(tmp_path)
    store.save("text", feats(8, 6, 0, missing=(3,)), dataset.item_ids)
    store.save("image", feats(8, 4, 1), dataset.item_ids)
    code = cli_main(["features", "fuse", str(tmp_path), "--features", "text,image", "--method", "mean", "--dim", "4",
                     "--normalize", "l2", "--mask", "all", "--name", "both"])
    assert code == 0 and "both: 8 items, dim 4, 7 with content" in capsys.readouterr().out
    loaded = store.load("both")
    expected = fuse(store.load_set(["text", "image"]), "mean", dim=4, normalize_each="l2", mask_rule="all")
    np.testing.assert_array_equal(loaded.matrix, expected.matrix)
    assert cli_main(["features", "fuse", str(tmp_path), "--features", "text,image", "--method", "sum",
                     "--name", "bad"]) == 2
    assert "needs one size" in capsys.readouterr().err
