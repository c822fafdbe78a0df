"""Report figures as PNG bytes (matplotlib, headless), embedded in the HTML and saved beside it."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def metric_bars(table: pd.DataFrame, metric: str, title: str) -> bytes:
    """Mean over seeds with std error bars, one bar per model and feature set."""
    labels = [f"{m} [{f}]" if f else m for m, f in zip(table["model"], table["feature_set"])]
    means = table[f"{metric}_mean"].to_numpy()
    stds = np.nan_to_num(table.get(f"{metric}_std", pd.Series(np.zeros(len(table)))).to_numpy())
    fig, ax = plt.subplots(figsize=(max(5, 0.55 * len(labels) + 2), 3.6))
    ax.bar(range(len(labels)), means, yerr=stds, capsize=3, color="#4c72b0")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def audit_gains(audit: pd.DataFrame, title: str) -> bytes:
    """Gain of real features over each audit variant, per content model."""
    variants = list(dict.fromkeys(audit["against"]))
    groups = list(dict.fromkeys(zip(audit["model"], audit["feature_set"])))
    width = 0.8 / max(1, len(variants))
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(groups) + 2), 3.6))
    for n, variant in enumerate(variants):
        part = audit[audit["against"] == variant].set_index(["model", "feature_set"])
        values = [part["gain"].get(group, np.nan) for group in groups]
        ax.bar(np.arange(len(groups)) + n * width, values, width, label=f"real - {variant}")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(groups)) + width * (len(variants) - 1) / 2,
                  [f"{m} [{f}]" for m, f in groups], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"gain in {audit['metric'].iloc[0]}")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def heatmap(matrix: pd.DataFrame, title: str) -> bytes:
    """A labelled square heatmap, e.g. linear CKA between representations."""
    fig, ax = plt.subplots(figsize=(1.1 * len(matrix) + 2.5, 1.0 * len(matrix) + 1.8))
    image = ax.imshow(matrix.to_numpy(), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix.index)), matrix.index, fontsize=8)
    for (i, j), value in np.ndenumerate(matrix.to_numpy()):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=10)
    return _png(fig)
