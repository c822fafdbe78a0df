"""`modalrec run`, `report` and `quickstart`: whole studies from one YAML file."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from modalrec.cli.format import print_table
from modalrec.config import load_config
from modalrec.experiments.backends import make_backend
from modalrec.experiments.study import run_study


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser("run", help="run an experiment config: data, features, models, audits, report")
    run.add_argument("config", metavar="CONFIG")
    run.add_argument("--out", required=True, metavar="DIR")
    _backend_options(run)
    run.set_defaults(func=_run)

    report = subparsers.add_parser("report", help="rebuild report.md and report.html from results")
    report.add_argument("out", metavar="DIR")
    report.set_defaults(func=_report)

    quick = subparsers.add_parser("quickstart", help="the whole study on the synthetic world (the main job)")
    quick.add_argument("--out", default="runs/quickstart", metavar="DIR")
    _backend_options(quick)
    quick.set_defaults(func=_quickstart)


def _backend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=None,
                        help="trials run in parallel (default: 1 locally; on Ray as many as the cluster fits)")
    parser.add_argument("--backend", choices=["local", "ray"], default="local")
    parser.add_argument("--address", default=None, help="Ray cluster address (with --backend ray)")


def quickstart_config() -> Path:
    return Path(str(resources.files("modalrec.resources").joinpath("quickstart.yaml")))


def _run(args: argparse.Namespace, config_path: Path | None = None) -> int:
    config = load_config(config_path or args.config)
    backend = make_backend(args.backend, args.workers, args.address, resources=config.resources)
    outcome = run_study(config, args.out, backend)
    print_table(outcome.summary_header, outcome.summary_rows)
    if outcome.audit_rows:
        print()
        print_table(outcome.audit_header, outcome.audit_rows)
    if outcome.cold_rows:
        print("\ncold-item audit (held-out items never seen in training, ranked among themselves):")
        print_table(outcome.summary_header, outcome.cold_rows)
    print(f"\nresults: {outcome.results_path}\nreport:  {outcome.html_path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from modalrec.report.build import build_report

    md, html = build_report(args.out)
    print(f"report: {md}\n        {html}")
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    return _run(args, quickstart_config())
