"""Seed summaries and the audit's paired comparison, checked against direct computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from modalrec import io
from modalrec.experiments import analysis


def row(model, variant, seed, value, trial, feature_set="f"):
    return dict(dataset="d", model=model, feature_set=feature_set, variant=variant, stage="final", seed=seed,
                split="test", metric="recall", cutoff=20, value=value, trial=trial)


def test_summary_with_one_seed_keeps_a_std_column():
    table = analysis.summary(pd.DataFrame([row("m", "real", 0, 0.5, "t")]), ["recall@20"])
    assert table["recall@20_mean"].tolist() == [0.5]
    assert np.isnan(table["recall@20_std"].iloc[0])
    assert table["seeds"].tolist() == [1]


def test_summary_mean_and_sample_std_over_seeds():
    rows = [row("m", "real", s, v, f"t{s}") for s, v in enumerate([0.1, 0.2, 0.6])]
    table = analysis.summary(pd.DataFrame(rows), ["recall@20"])
    assert np.isclose(table["recall@20_mean"].iloc[0], 0.3)
    assert np.isclose(table["recall@20_std"].iloc[0], np.std([0.1, 0.2, 0.6], ddof=1))


def test_audit_averages_seeds_per_user_then_tests_pairs(tmp_path):
    rng = np.random.default_rng(0)
    users = np.arange(50)
    values = {}
    rows = []
    for variant in ("real", "shuffled"):
        for seed in (0, 1):
            key = f"{variant}{seed}"
            v = rng.random(50) + (0.2 if variant == "real" else 0.0)
            values[key] = v
            io.write_parquet(tmp_path / "per_user" / f"{key}-test.parquet",
                             pd.DataFrame({"user": users, "recall@20": v}))
            rows.append(row("vbpr", variant, seed, float(v.mean()), key))
    audit = analysis.audit(tmp_path, pd.DataFrame(rows), "recall@20")
    real = (values["real0"] + values["real1"]) / 2
    shuffled = (values["shuffled0"] + values["shuffled1"]) / 2
    expected = stats.ttest_rel(real, shuffled)
    assert audit["against"].tolist() == ["shuffled"]
    assert np.isclose(audit["gain"].iloc[0], (real - shuffled).mean())
    assert np.isclose(audit["t_p"].iloc[0], expected.pvalue)
    assert np.isclose(audit["t_p_holm"].iloc[0], expected.pvalue)  # a family of one


def test_summary_has_one_row_per_configuration_even_across_feature_sets():
    rows = [row("bpr", "real", s, 0.1 * s, f"b{s}", feature_set="") for s in range(2)]
    rows += [row("vbpr", "real", s, 0.2, f"v{s}", feature_set="image+text") for s in range(2)]
    table = analysis.summary(pd.DataFrame(rows), ["recall@20"])
    assert list(zip(table["model"], table["feature_set"])) == [("bpr", ""), ("vbpr", "image+text")]
    assert table["seeds"].tolist() == [2, 2]
