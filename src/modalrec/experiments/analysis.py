"""From results to answers: means over seeds, tests against a reference, the content audit.

Per-user values are averaged over seeds before a paired test, so a user counts once and the seed
noise is folded into that user's value. Each family of comparisons (all models against the
reference on one data set; all audit gains on one data set) is Holm-corrected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from modalrec.evaluation.significance import holm, paired_t_test, wilcoxon_test
from modalrec.experiments.trial import per_user_values

GROUP = ["dataset", "model", "feature_set"]


def final_rows(results: pd.DataFrame, split: str = "test", variant: str = "real", stage: str = "final") -> pd.DataFrame:
    """Rows of one stage (``final``, or ``cold`` for the cold-item audit) and split."""
    rows = results[(results["stage"] == stage) & (results["split"] == split)]
    return rows[rows["variant"] == variant] if variant else rows


def summary(results: pd.DataFrame, metrics: list[str], split: str = "test", stage: str = "final") -> pd.DataFrame:
    """Mean and sample std over seeds of ``metrics`` (``'recall@20'`` ...) per model and feature set."""
    rows = final_rows(results, split, stage=stage)
    rows = rows.assign(name=rows["metric"] + "@" + rows["cutoff"].astype(str))
    rows = rows[rows["name"].isin(metrics)]
    table = rows.groupby(GROUP + ["name"], sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    wide = table.pivot_table(index=GROUP, columns="name", values=["mean", "std"], sort=False)
    wide.columns = [f"{name}_{stat}" for stat, name in wide.columns]
    for name in table["name"].unique():  # one seed: the std column is all NaN and pivot drops it
        if f"{name}_std" not in wide:
            wide[f"{name}_std"] = np.nan
    seeds = table.groupby(GROUP, sort=False)["count"].max().rename("seeds")
    return wide.join(seeds).reset_index()


def seed_mean_per_user(root: Path, results: pd.DataFrame, metric: str, split: str = "test") -> pd.Series:
    """Per-user values of one configuration, averaged over its seeds (index: user)."""
    frames = [per_user_values(root, key, split).set_index("user")[metric] for key in results["trial"].unique()]
    return pd.concat(frames, axis=1).mean(axis=1)


def compare(root: Path, results: pd.DataFrame, reference: str, metric: str, split: str = "test",
            stage: str = "final") -> pd.DataFrame:
    """Every configuration against ``reference`` (a model label), per data set, Holm-corrected."""
    metric_name, _, cutoff = metric.partition("@")
    rows = final_rows(results, split, stage=stage)
    rows = rows[(rows["metric"] == metric_name) & (rows["cutoff"] == int(cutoff))]
    out = []
    for dataset, in_dataset in rows.groupby("dataset", sort=False):
        ref_rows = in_dataset[in_dataset["model"] == reference]
        if ref_rows.empty:
            continue
        ref_set = ref_rows["feature_set"].iloc[0]
        ref = seed_mean_per_user(root, ref_rows[ref_rows["feature_set"] == ref_set], metric, split)
        family = []
        for (model, feature_set), group in in_dataset.groupby(["model", "feature_set"], sort=False):
            if model == reference and feature_set == ref_set:
                continue
            values = seed_mean_per_user(root, group, metric, split)
            pair = ((values.index.to_numpy(), values.to_numpy()), (ref.index.to_numpy(), ref.to_numpy()))
            t = paired_t_test(*pair)
            w = wilcoxon_test(*pair)
            family.append({"dataset": dataset, "model": model, "feature_set": feature_set,
                           "reference": reference, "metric": metric, "mean": t.mean_a, "reference_mean": t.mean_b,
                           "diff": t.mean_diff, "t_p": t.p_value, "wilcoxon_p": w.p_value,
                           "cohen_d": t.effect_size, "rank_biserial": w.effect_size, "users": t.n})
        if family:
            frame = pd.DataFrame(family)
            frame["t_p_holm"] = holm(frame["t_p"].to_numpy())
            frame["wilcoxon_p_holm"] = holm(frame["wilcoxon_p"].to_numpy())
            out.append(frame)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def audit(root: Path, results: pd.DataFrame, metric: str, split: str = "test") -> pd.DataFrame:
    """Real minus shuffled (and minus random, minus each dropped modality) per content model."""
    metric_name, _, cutoff = metric.partition("@")
    rows = final_rows(results, split, variant="")
    rows = rows[(rows["metric"] == metric_name) & (rows["cutoff"] == int(cutoff))]
    out = []
    for dataset, in_dataset in rows.groupby("dataset", sort=False):
        family = []
        for (model, feature_set), group in in_dataset.groupby(["model", "feature_set"], sort=False):
            variants = group["variant"].unique()
            if "real" not in variants or len(variants) == 1:
                continue
            real = seed_mean_per_user(root, group[group["variant"] == "real"], metric, split)
            for variant in variants:
                if variant == "real":
                    continue
                other = seed_mean_per_user(root, group[group["variant"] == variant], metric, split)
                t = paired_t_test((real.index.to_numpy(), real.to_numpy()), (other.index.to_numpy(), other.to_numpy()))
                family.append({"dataset": dataset, "model": model, "feature_set": feature_set,
                               "against": variant, "metric": metric, "real": t.mean_a, "other": t.mean_b,
                               "gain": t.mean_diff, "relative_gain": t.mean_diff / t.mean_b if t.mean_b else np.nan,
                               "t_p": t.p_value, "cohen_d": t.effect_size, "users": t.n})
        if family:
            frame = pd.DataFrame(family)
            frame["t_p_holm"] = holm(frame["t_p"].to_numpy())
            out.append(frame)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()
