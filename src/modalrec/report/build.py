"""Write ``report.md`` and a self-contained ``report.html`` from an experiment folder.

Everything comes from files the runner wrote (``config.json``, ``results.parquet``,
``selection.json``, per-user tables, the prepared data sets), so ``modalrec report DIR`` rebuilds
the report without training anything.
"""

from __future__ import annotations

import base64
import html
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from modalrec import io
from modalrec.config import ExperimentConfig
from modalrec.data.dataset import Dataset
from modalrec.errors import ConfigError
from modalrec.experiments import analysis
from modalrec.report import plots
from modalrec.report.diagnostics_section import diagnostics_tables
from modalrec.report.explorer import ExplorerItem, explore, pick_items

log = logging.getLogger(__name__)


@dataclass
class Section:
    title: str
    markdown: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)

    def table(self, frame: pd.DataFrame) -> None:
        self.markdown.append(markdown_table(frame))
        self.html.append(html_table(frame))

    def text(self, line: str) -> None:
        self.markdown.append(line)
        self.html.append(f"<p>{html.escape(line)}</p>")

    def figure(self, png: bytes, name: str, out: Path, caption: str) -> None:
        path = out / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with io.atomic_path(path) as tmp:
            tmp.write_bytes(png)
        self.markdown.append(f"![{caption}](figures/{name}.png)")
        encoded = base64.b64encode(png).decode()
        self.html.append(f'<figure><img class="plot" alt="{html.escape(caption)}" '
                         f'src="data:image/png;base64,{encoded}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(nothing to show)_"
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p><em>(nothing to show)</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f'<table class="results"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def fmt(mean: float, std: float) -> str:
    return f"{mean:.4f}" if not np.isfinite(std) else f"{mean:.4f} ± {std:.4f}"


def build_report(out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    if not (out / "results.parquet").exists():
        raise ConfigError("no results.parquet here", where=str(out), hint="run `modalrec run CONFIG --out DIR` first")
    config = ExperimentConfig.model_validate(io.read_json(out / "config.json"))
    results = pd.read_parquet(out / "results.parquet")
    selection = io.read_json(out / "selection.json") if (out / "selection.json").exists() else []
    ev = config.evaluation
    k = max(ev.cutoffs)
    headline = [f"recall@{k}", f"ndcg@{k}"]
    sections = [
        results_section(config, results, out, headline),
        audit_section(config, results, out, headline[0]),
        *([cold_section(config, results, out, headline)] if (results["stage"] == "cold").any() else []),
        selection_section(selection, ev.valid_metric),
    ]
    datasets = _datasets(out, results)
    sections.append(data_section(datasets))
    sections.append(diagnostics_section(datasets, out))
    explorer = {name: explore(ds, pick_items(ds, config.report.explorer_items)) for name, ds in datasets.items()}
    title = f"{config.name}: does item content really help?"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    intro = (f"Full-ranking evaluation on the test split, mean ± std over {len(config.seeds)} seed(s) "
             f"{config.seeds}; hyperparameters chosen on validation ({ev.valid_metric}) with the first seed.")
    md = [f"# {title}", "", f"_Generated {stamp}._ {intro}", ""]
    for section in sections:
        md += [f"## {section.title}", "", *sum(([block, ""] for block in section.markdown), [])]
    md += ["## Item explorer", "", "See report.html for images, descriptions and neighbours.", ""]
    md_path = out / "report.md"
    with io.atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(md), encoding="utf-8")
    html_path = out / "report.html"
    with io.atomic_path(html_path) as tmp:
        tmp.write_text(render_html(title, stamp, intro, sections, explorer), encoding="utf-8")
    return md_path, html_path


def results_section(config: ExperimentConfig, results: pd.DataFrame, out: Path, headline: list[str]) -> Section:
    section = Section("Results")
    _result_tables(section, config, results, out, headline, "final")
    return section


def cold_section(config: ExperimentConfig, results: pd.DataFrame, out: Path, headline: list[str]) -> Section:
    section = Section("Cold-item audit")
    section.text("The chosen configurations retrained on a cold-item split of the same interactions: the test "
                 "items never occur in training and are ranked among themselves. Only content can tell "
                 "them apart, so a collaborative model ranks them about at random.")
    _result_tables(section, config, results, out, headline, "cold")
    return section


def _result_tables(section: Section, config: ExperimentConfig, results: pd.DataFrame, out: Path,
                   headline: list[str], stage: str) -> None:
    """Per data set: mean ± std over seeds, significance marks against the reference, a bar plot."""
    table = analysis.summary(results, headline, stage=stage)
    reference = config.significance.reference
    comparisons = analysis.compare(out, results, reference, headline[0], stage=stage) if reference else pd.DataFrame()
    alpha = config.significance.alpha
    prefix, label = ("results", "test") if stage == "final" else (stage, "cold-item test")
    for dataset, part in table.groupby("dataset", sort=False):
        shown = pd.DataFrame({"model": part["model"], "features": part["feature_set"].replace("", "-")})
        for metric in headline:
            shown[metric] = [fmt(m, s) for m, s in zip(part[f"{metric}_mean"], part[f"{metric}_std"])]
        if not comparisons.empty:
            marks = comparisons[comparisons["dataset"] == dataset].set_index(["model", "feature_set"])
            shown[f"vs {reference}"] = [_mark(marks, m, f, alpha) for m, f in zip(part["model"], part["feature_set"])]
        shown["seeds"] = part["seeds"].astype(int).to_numpy()
        section.text(f"Data set {dataset}:")
        section.table(shown.reset_index(drop=True))
        section.figure(plots.metric_bars(part, headline[0], f"{dataset}: {headline[0]} ({label})"),
                       f"{prefix}-{dataset}", out, f"{dataset}: {label} {headline[0]}, mean ± std over seeds")
    if reference:
        section.text(f"Marks: ▲/▼ significantly better/worse than {reference} (paired t-test on per-user "
                     f"{headline[0]} averaged over seeds, Holm-corrected, alpha {alpha}); = no significant difference.")


def _mark(marks: pd.DataFrame, model: str, feature_set: str, alpha: float) -> str:
    if (model, feature_set) not in marks.index:
        return "reference"
    row = marks.loc[(model, feature_set)]
    if row["t_p_holm"] > alpha:
        return f"= (p={row['t_p_holm']:.2g})"
    return f"{'▲' if row['diff'] > 0 else '▼'} {row['diff']:+.4f} (p={row['t_p_holm']:.2g}, d={row['cohen_d']:.2f})"


def audit_section(config: ExperimentConfig, results: pd.DataFrame, out: Path, metric: str) -> Section:
    section = Section("Content-leverage audit")
    section.text("Each content model is retrained with its features shuffled across items, replaced by "
                 "random features of the same shape, and with each modality dropped. A model that really "
                 "uses content loses accuracy when the content no longer belongs to the item.")
    audit = analysis.audit(out, results, metric)
    if audit.empty:
        section.text("No audit variants were run.")
        return section
    alpha = config.significance.alpha
    for dataset, part in audit.groupby("dataset", sort=False):
        shown = pd.DataFrame({
            "model": part["model"], "features": part["feature_set"], "real minus": part["against"],
            metric: [f"{r:.4f} vs {o:.4f}" for r, o in zip(part["real"], part["other"])],
            "gain": [f"{g:+.4f}" for g in part["gain"]],
            "p (Holm)": [f"{p:.2g}" for p in part["t_p_holm"]],
            "verdict": ["content helps" if g > 0 and p <= alpha else ("content hurts" if g < 0 and p <= alpha else "no evidence")
                        for g, p in zip(part["gain"], part["t_p_holm"])],
        })
        section.text(f"Data set {dataset}:")
        section.table(shown.reset_index(drop=True))
        section.figure(plots.audit_gains(part, f"{dataset}: gain of real content ({metric})"),
                       f"audit-{dataset}", out, f"{dataset}: real minus audit variant, test {metric}")
    return section


def selection_section(selection: list[dict], metric: str) -> Section:
    section = Section("Selected hyperparameters")
    rows = [{"data set": s["dataset"], "model": s["model"], "features": s["feature_set"] or "-",
             f"valid {metric}": "-" if s["valid"] is None else f"{s['valid']:.4f}",
             "parameters": ", ".join(f"{k}={v}" for k, v in sorted(s["params"].items())) or "defaults"}
            for s in selection]
    section.table(pd.DataFrame(rows))
    return section


def _datasets(out: Path, results: pd.DataFrame) -> dict[str, Dataset]:
    datasets = {}
    for folder in sorted((out / "datasets").glob("*")):
        if (folder / "manifest.json").exists() and not folder.name.endswith(".partial"):
            name = folder.name.rsplit("-", 1)[0]
            if name in set(results["dataset"]):
                datasets[name] = Dataset.load(folder)
    return datasets


def data_section(datasets: dict[str, Dataset]) -> Section:
    section = Section("Data")
    rows = []
    for name, ds in datasets.items():
        info = ds.info()
        split = info.get("split", {})
        rows.append({"data set": name, "users": info["users"], "items": info["items"],
                     "interactions": info["interactions"], "density": f"{info['density']:.4%}",
                     "split": split.get("protocol", "-"), "train/valid/test":
                     f"{split.get('train', 0)}/{split.get('valid', 0)}/{split.get('test', 0)}"})
    section.table(pd.DataFrame(rows))
    return section


def diagnostics_section(datasets: dict[str, Dataset], out: Path) -> Section:
    section = Section("Representation diagnostics")
    for name, ds in datasets.items():
        cka, overlap = diagnostics_tables(ds)
        if cka is None:
            continue
        section.text(f"Data set {name}: linear CKA between representations (1 = same geometry), and how "
                     f"much each representation's item neighbourhood overlaps the co-consumption neighbourhood.")
        section.figure(plots.heatmap(cka, f"{name}: linear CKA"), f"cka-{name}", out, f"{name}: linear CKA")
        section.table(overlap)
    return section


CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table.results{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
table.results th,table.results td{border:1px solid #ccc;padding:4px 8px;text-align:left}
table.results th{background:#f0f0f0} figure{margin:1em 0} img.plot{max-width:100%}
.explorer .item{border:1px solid #ddd;border-radius:6px;padding:0.8em;margin:0.8em 0;display:flex;gap:1em}
.explorer img{width:96px;height:auto;image-rendering:auto} .explorer .meta{flex:1}
.explorer .nn{font-size:0.85em;color:#444} .slots{font-size:0.85em}
"""


def render_html(title: str, stamp: str, intro: str, sections: list[Section],
                explorer: dict[str, list[ExplorerItem]]) -> str:
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p><em>Generated {html.escape(stamp)}.</em> {html.escape(intro)}</p>"]
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.title)}</h2>{''.join(section.html)}</section>")
    parts.append('<section class="explorer" id="explorer"><h2>Item explorer</h2>')
    for name, items in explorer.items():
        parts.append(f"<h3>{html.escape(name)}</h3>")
        parts += [_explorer_item(item) for item in items]
    parts.append("</section></body></html>")
    return "".join(parts)


def _explorer_item(item: ExplorerItem) -> str:
    image = (f'<img alt="image of {html.escape(item.item_id)}" src="data:image/png;base64,{item.image_png}">'
             if item.image_png else "<div><em>no image</em></div>")
    desc = "".join(f"<p><strong>{html.escape(n)}</strong>: {html.escape(t)}</p>" for n, t in item.descriptions.items())
    slots = "".join(
        f'<p class="slots"><strong>{html.escape(n)} slots</strong>: '
        + ", ".join(f"{html.escape(s)} = {html.escape(v)}" for s, v in values.items()) + "</p>"
        for n, values in item.slots.items() if values)
    nn = "".join(
        f'<p class="nn"><strong>{html.escape(rep)}</strong>: '
        + "; ".join(f"{html.escape(t)} ({s:.2f})" for _, t, s in neighbours) + "</p>"
        for rep, neighbours in item.neighbours.items())
    return (f'<div class="item">{image}<div class="meta"><h4>{html.escape(item.title)} '
            f'<small>({html.escape(item.item_id)})</small></h4><p>{html.escape(item.text)}</p>{desc}{slots}'
            f'<details><summary>nearest neighbours</summary>{nn or "<p>no stored representations</p>"}</details></div></div>')
