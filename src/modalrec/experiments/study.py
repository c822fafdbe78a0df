"""A whole study: run the config, then summarise and write the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modalrec.config import ExperimentConfig
from modalrec.experiments import analysis
from modalrec.experiments.backends import Backend
from modalrec.experiments.runner import Runner


@dataclass
class StudyOutcome:
    results_path: Path
    md_path: Path
    html_path: Path
    summary_header: list[str]
    summary_rows: list[list[str]]
    audit_header: list[str] = field(default_factory=list)
    audit_rows: list[list[str]] = field(default_factory=list)
    cold_rows: list[list[str]] = field(default_factory=list)
    """The cold-item audit, in the summary's columns (empty when it was not run)."""


def run_study(config: ExperimentConfig, out: str | Path, backend: Backend | None = None,
              progress: bool = True) -> StudyOutcome:
    from modalrec.report.build import build_report

    out = Path(out)
    results = Runner(config, out, backend, progress).run()
    md_path, html_path = build_report(out)
    k = max(config.evaluation.cutoffs)
    metrics = [f"recall@{k}", f"ndcg@{k}"]
    header = ["data set", "model", "features", *metrics]

    def rows_of(stage: str) -> list[list[str]]:
        table = analysis.summary(results, metrics, stage=stage)
        return [[r["dataset"], r["model"], r["feature_set"] or "-",
                 *(f"{r[f'{m}_mean']:.4f} ± {r[f'{m}_std']:.4f}" if r["seeds"] > 1 else f"{r[f'{m}_mean']:.4f}"
                   for m in metrics)]
                for _, r in table.iterrows()]

    audit = analysis.audit(out, results, metrics[0])
    audit_header = ["data set", "model", "features", "real minus", "gain", "p (Holm)"]
    audit_rows = [[r["dataset"], r["model"], r["feature_set"], r["against"], f"{r['gain']:+.4f}", f"{r['t_p_holm']:.2g}"]
                  for _, r in audit.iterrows()] if not audit.empty else []
    cold = rows_of("cold") if (results["stage"] == "cold").any() else []
    return StudyOutcome(out / "results.parquet", md_path, html_path, header, rows_of("final"), audit_header,
                        audit_rows, cold)
