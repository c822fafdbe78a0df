"""Parity with the reference toolbox (MMRec) on identical inputs, side by side with its results.

Inputs: ``../shared/data/ml100k-mmrec-ref`` (the reference split and feature files) and
``../shared/data/amazon2014-baby``; the reference rows are those of the former's README.

Sections (``--section``, default all; each appends one JSON line per finished run to
``runs/parity/SECTION.jsonl``, so an interrupted benchmark resumes with the runs still missing):

- ``quality``: BPR-MF, LightGCN, VBPR (MMRec's variant with both modalities and image only; the
  paper's variant), FREEDOM (also text only), LATTICE and BM3 with the README's hyperparameters,
  under the reference protocol: validation after every epoch, patience 20, at most 1000 epochs,
  test at the best validation epoch with only training items masked, seed 999. The features are
  the reference files exactly as MMRec reads them: the 19 posterless items keep their mean-filled
  image rows and count as having content (``variant='meanfill'``).
- ``tune``: a small grid per model around the reference point, selected on validation recall@20
  only (seed 999); the test recall@20 of the selected point (the reference point is one of the
  grid's), then, as the experiment runner does, the selected point with seeds 1000 and 1001 too
  and the mean over the three.
- ``baby``: BPR-MF and LightGCN on Baby's fixed split, seeds 999, 1000 and 1001; users without a
  training interaction dropped from validation and test, as the reference does.
- ``timing``: seconds per training epoch and per full validation pass (embeddings included), with
  one torch thread (the reference's setting) and with all cores, on ML-100K and Baby
  (``train_speed.time_row``; run it on an otherwise idle machine), three runs per row by default
  (``--timing-repeats``), reported as the median.

``--device cuda`` trains and evaluates every section's models on a GPU (the timing section then
runs the host side on one thread only); the sampler and the initialisation still draw on the CPU.

    .venv/bin/python benchmarks/parity.py                      # everything (about 110 CPU-minutes, and 2 of timing)
    .venv/bin/python benchmarks/parity.py --section quality --jobs 2
    .venv/bin/python benchmarks/parity.py --section timing
    .venv/bin/python benchmarks/parity.py --report             # print the tables from the results
    .venv/bin/python benchmarks/parity.py --section quality --device cuda --out runs/parity_cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import statistics
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data  # noqa: E402
import train_speed  # noqa: E402
from modalrec.data.split import Split  # noqa: E402
from multimodal_quality import ML100K_PARAMS, PROTOCOL, Run, run_one  # noqa: E402

log = logging.getLogger("parity")
SECTIONS = ("quality", "tune", "baby", "timing")
BOTH = ("image", "text")

# The README's table: (test recall@20, ndcg@20, epochs, best epoch, s/epoch, s/eval); None: not given.
REFERENCE = {
    "bpr": (0.3396, 0.2713, 109, 87, 0.39, 0.17),
    "lightgcn": (0.3388, 0.2757, 134, 112, 0.90, 0.14),
    "vbpr-mmrec": (0.3221, 0.2506, 105, 83, 0.80, 0.17),
    "vbpr-mmrec:image": (0.3195, 0.2490, 105, 83, 0.88, None),
    "freedom": (0.3424, 0.2816, 196, 174, 2.48, 0.17),
    "freedom:text": (0.3545, 0.2879, 240, 218, None, None),
    "lattice": (0.3457, 0.2812, 224, 202, 2.94, 0.42),
    "bm3": (0.2196, 0.1779, 42, 20, 2.13, 0.15),
}
BABY_REFERENCE = {"bpr": (0.0534, 0.0261, 37, 15, 0.88, 3.78), "lightgcn": (0.0699, 0.0356, 38, 16, 2.12, 3.61)}
BABY_PARAMS = {"bpr": {"reg_weight": 0.1}, "lightgcn": {"n_layers": 1, "reg_weight": 1e-2}}
BABY_SEEDS = (999, 1000, 1001)


def quality_runs() -> list[Run]:
    def run(key: str, model: str, modalities: tuple[str, ...] = (), params: dict | None = None) -> Run:
        return Run(key, model, modalities, ML100K_PARAMS[model] | (params or {}),
                   "meanfill" if modalities else "", REFERENCE.get(key, (None,))[0])

    return [run("bpr", "bpr"), run("lightgcn", "lightgcn"), run("vbpr-mmrec", "vbpr-mmrec", BOTH),
            run("vbpr-mmrec:image", "vbpr-mmrec", ("image",)), run("vbpr", "vbpr", ("image",)),
            run("vbpr:image+text", "vbpr", BOTH), run("freedom", "freedom", BOTH),
            run("freedom:text", "freedom", ("text",)), run("lattice", "lattice", BOTH), run("bm3", "bm3", BOTH)]


# Grids around the reference point (which each includes); chosen on validation recall@20 only.
TUNE_GRID: dict[str, list[dict]] = {
    "bpr": [{"reg_weight": r} for r in (1e-4, 1e-3, 1e-2, 1e-1, 0.3, 0.5, 0.7, 1.0, 2.0)]
    + [{"lr": 5e-3, "reg_weight": 1e-2}, {"lr": 2e-3, "reg_weight": 0.5}, {"lr": 2e-3, "reg_weight": 1.0}]
    + [{"lr": lr, "reg_weight": r} for lr, r in ((2e-3, 0.7), (2e-3, 2.0), (5e-3, 0.5), (5e-3, 1.0))],
    "lightgcn": [{"n_layers": n, "reg_weight": r} for n, r in ((1, 1e-2), (2, 1e-2), (2, 1e-3))],
    "vbpr-mmrec": [{"reg_weight": r} for r in (2.0, 0.1)],
    "freedom": [{"dropout": d, "reg_weight": r} for d in (0.8, 0.9) for r in (0.0, 1e-5, 1e-4, 1e-3)]
    + [{"dropout": 0.9, "reg_weight": 0.0} | point  # the graphs around the authors' grid's best point
       for point in ({"n_ui_layers": 1}, {"n_ui_layers": 3}, {"knn_k": 5}, {"knn_k": 20})],
    "lattice": [{"knn_k": k, "lambda_coeff": c} for k, c in ((10, 0.9), (10, 0.7), (20, 0.9))] + [{"lr": 5e-4}]
    + [{"n_ui_layers": 1} | point
       for point in ({}, {"knn_k": 20}, {"lambda_coeff": 0.5}, {"lambda_coeff": 0.7}, {"lambda_coeff": 0.8})]
    + [{"n_ui_layers": 1, "lambda_coeff": 0.7} | point  # the authors' reg_weight and learning-rate values
       for point in ({"reg_weight": 1e-5}, {"reg_weight": 1e-4}, {"lr": 5e-3}, {"lr": 2e-3}, {"knn_k": 5})],
    "bm3": [{"n_layers": n, "dropout": d, "reg_weight": r}
            for n, d, r in ((1, 0.3, 0.1), (2, 0.3, 0.1), (1, 0.5, 0.1))],
}


def tune_runs() -> list[Run]:
    runs = []
    for model, grid in TUNE_GRID.items():
        mods = BOTH if model not in ("bpr", "lightgcn") else ()
        for point in grid:
            key = f"{model}|" + ",".join(f"{k}={v}" for k, v in sorted(point.items()))
            runs.append(Run(key, model, mods, ML100K_PARAMS[model] | point, "meanfill" if mods else ""))
    return runs


def chosen_points(results: dict[str, dict]) -> dict[str, dict]:
    """Per model, the grid point with the best validation recall@20 (seed 999)."""
    chosen = {}
    for model in TUNE_GRID:
        if rows := [r for r in _of_model(results, model) if "seed=" not in r["key"]]:
            chosen[model] = max(rows, key=lambda r: r["valid_best"])
    return chosen


def seed_runs(results: dict[str, dict]) -> list[Run]:
    """The chosen point of every model again with the other seeds, as the experiment runner
    does once selection is over."""
    by_key = {run.key: run for run in tune_runs()}
    return [dataclasses.replace(by_key[best["key"]], key=f"{best['key']}|seed={seed}", seed=seed)
            for best in chosen_points(results).values() for seed in BABY_SEEDS[1:]]


def reuse_reference_points(out: Path) -> None:
    """Copy the quality runs of the reference points into the tune results (same run, no retraining)."""
    quality = {r["key"]: r for r in _load(out / "quality.jsonl")}
    tuned = {r["key"] for r in _load(out / "tune.jsonl")}
    for run in tune_runs():
        model = run.key.split("|")[0]
        if run.key not in tuned and model in quality and run.params == ML100K_PARAMS[model]:
            with (out / "tune.jsonl").open("a") as f:
                f.write(json.dumps(quality[model] | {"key": run.key}) + "\n")


def baby_runs() -> list[Run]:
    return [Run(f"{m}|seed={s}", m, (), BABY_PARAMS[m], seed=s) for m in BABY_PARAMS for s in BABY_SEEDS]


def baby_split() -> Split:
    split = bench_data.baby_split()
    keep = lambda part: bench_data.with_train_users(part, split.train)  # noqa: E731
    return Split(split.train, keep(split.valid), keep(split.test), protocol="fixed", params=split.params)


def _worker(args: tuple[str, Run, str]) -> dict:
    section, run, device = args
    if section == "baby":
        return run_one(run, baby_split(), {}, device)
    data = bench_data.load("ml100k")
    return run_one(run, data.split, data.features, device)


def run_section(section: str, runs: list[Run], out: Path, jobs: int, device: str = "cpu") -> dict[str, dict]:
    done = {json.loads(line)["key"]: json.loads(line) for line in out.read_text().splitlines()} if out.exists() else {}
    todo = [r for r in runs if r.key not in done]
    log.info("%s: %d runs, %d already done; %d jobs; load average %.1f", section, len(runs),
             len(runs) - len(todo), jobs, os.getloadavg()[0])
    with mp.get_context("spawn").Pool(max(1, jobs), maxtasksperchild=1) as pool:
        for result in pool.imap_unordered(_worker, [(section, r, device) for r in todo]):
            done[result["key"]] = result
            with out.open("a") as f:
                f.write(json.dumps(result) + "\n")
            log.info("%s recall@20 %.4f (%d epochs, %.0f s)", result["key"], result["recall@20"],
                     result["epochs"], result["fit_seconds"])
    return done


def timing(out: Path, repeats: int, device: str = "cpu") -> None:
    """Per-epoch and per-evaluation seconds, one thread and all cores, appended to ``out`` until
    every row has ``repeats`` records; rounds go over all rows in turn, so a slow spell of the
    machine spreads over rows instead of sinking one (the tables take the median per row)."""
    rows = {r.model: r for r in train_speed.ROWS if r.label != "LightGCN (3 layers)"}
    rows["lightgcn"] = train_speed.Row("LightGCN", "lightgcn", train_speed.COMMON | {"n_layers": 1, "reg_weight": 1e-2})
    counts = Counter((t["data"], t["model"], t["threads"]) for t in _load(out))
    thread_counts = (1, os.cpu_count() or 1) if device == "cpu" else (1,)
    for round_ in range(repeats):
        for data_name, models in (("ml100k", list(rows)), ("baby", ["bpr", "lightgcn"])):
            data = bench_data.load(data_name, with_features=data_name == "ml100k")
            for threads in thread_counts:
                torch.set_num_threads(threads)
                for model in models:
                    if counts[data_name, model, threads] > round_:
                        continue
                    row = rows[model]
                    params = row.params | (ML100K_PARAMS.get(model, {}) if data_name == "ml100k" else BABY_PARAMS[model])
                    result = train_speed.time_row(train_speed.Row(row.label, model, params, row.needs_features),
                                                  data, epochs=4, seed=0, device=device)
                    record = {"data": data_name, "model": model, "threads": threads, "device": device,
                              "load": os.getloadavg()[0], **result}
                    with out.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    log.info("timing %s %s threads %d: %.3f s/epoch, %.4f s/eval", data_name, model, threads,
                             result["epoch"], result["eval"])


def median_timings(timings: list[dict]) -> list[dict]:
    """One record per (data, model, threads): the median of every figure over its runs."""
    groups: dict[tuple, list[dict]] = {}
    for t in timings:
        groups.setdefault((t["data"], t["model"], t["threads"]), []).append(t)
    return [{"data": d, "model": m, "threads": n, "runs": len(group),
             **{k: statistics.median(t[k] for t in group) for k in group[0] if isinstance(group[0][k], float)}}
            for (d, m, n), group in groups.items()]


# --- tables ------------------------------------------------------------------------------------------

def _load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def quality_table(results: dict[str, dict], timings: list[dict]) -> str:
    """Side by side with the reference. Times are one thread's CPU seconds (process time), which a
    busy machine inflates far less than wall-clock; the timing table has both."""
    one = {t["model"]: t for t in timings if t["data"] == "ml100k" and t["threads"] == 1}
    lines = ["| model | recall@20 (ref) | ratio | ndcg@20 (ref) | epochs, best (ref) | s/epoch (ref) | "
             "speed-up | s/eval (ref) | speed-up |", "|---|---|---|---|---|---|---|---|---|"]
    for run in quality_runs():
        r = results.get(run.key)
        if r is None:
            continue
        ref = REFERENCE.get(run.key, (None,) * 6)
        t = one.get(run.key)
        epoch, evaluation = (t["cpu_epoch"], t["cpu_eval"]) if t else (None, None)
        lines.append(
            f"| {run.key} | {r['recall@20']:.4f} ({_fmt(ref[0], '.4f')}) | "
            f"{_fmt(ref[0] and r['recall@20'] / ref[0], '.3f')} | {r['ndcg@20']:.4f} ({_fmt(ref[1], '.4f')}) | "
            f"{r['epochs']}, {r['best_epoch']} ({_fmt(ref[2], 'd')}, {_fmt(ref[3], 'd')}) | "
            f"{_fmt(epoch, '.3f')} ({_fmt(ref[4], '.2f')}) | {_fmt(ref[4] and epoch and ref[4] / epoch, '.1f')} | "
            f"{_fmt(evaluation, '.4f')} ({_fmt(ref[5], '.2f')}) | "
            f"{_fmt(ref[5] and evaluation and ref[5] / evaluation, '.1f')} |")
    return "\n".join(lines)


def timing_table(timings: list[dict]) -> str:
    lines = ["| data | model | threads | s/epoch | CPU s/epoch | s/eval | CPU s/eval | load | runs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in timings:
        lines.append(f"| {t['data']} | {t['model']} | {t['threads']} | {t['epoch']:.3f} | {t['cpu_epoch']:.3f} | "
                     f"{t['eval']:.4f} | {t['cpu_eval']:.4f} | {t['load']:.1f} | {t['runs']} |")
    return "\n".join(lines)


def _of_model(results: dict[str, dict], model: str) -> list[dict]:
    """The runs of one model among results keyed ``MODEL|settings``."""
    return [r for key, r in results.items() if key.split("|")[0] == model]


def tune_table(results: dict[str, dict]) -> str:
    lines = ["| model | chosen on validation | valid recall@20 | test recall@20 | ratio | three seeds: test "
             "recall@20 mean ± std | ratio | reference |", "|---|---|---|---|---|---|---|---|"]
    for model, best in chosen_points(results).items():
        ref = REFERENCE[model][0]
        points = len([r for r in _of_model(results, model) if "seed=" not in r["key"]])
        seeds = [best] + [results[k] for k in results if k.startswith(best["key"] + "|seed=")]
        recalls = np.array([r["recall@20"] for r in seeds])
        spread = f"{recalls.mean():.4f} ± {recalls.std():.4f} ({len(seeds)})" if len(seeds) > 1 else ""
        lines.append(f"| {model} | {best['key'].split('|')[1]} ({points} of {len(TUNE_GRID[model])} points) | "
                     f"{best['valid_best']:.4f} | {best['recall@20']:.4f} | {best['recall@20'] / ref:.3f} | {spread} | "
                     f"{f'{recalls.mean() / ref:.3f}' if spread else ''} | {ref:.4f} |")
    return "\n".join(lines)


def baby_table(results: dict[str, dict]) -> str:
    lines = ["| model | seeds | test recall@20 mean (per seed) | ndcg@20 mean | reference recall@20 | ratio |",
             "|---|---|---|---|---|---|"]
    for model, ref in BABY_REFERENCE.items():
        if not (rows := _of_model(results, model)):
            continue
        recall = sum(r["recall@20"] for r in rows) / len(rows)
        ndcg = sum(r["ndcg@20"] for r in rows) / len(rows)
        per_seed = ", ".join(f"{r['recall@20']:.4f}" for r in rows)
        lines.append(f"| {model} | {len(rows)} | {recall:.4f} ({per_seed}) | {ndcg:.4f} | {ref[0]:.4f} | "
                     f"{recall / ref[0]:.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", default="all", choices=("all", *SECTIONS))
    parser.add_argument("--jobs", type=int, default=1, help="training runs in parallel, one torch thread each")
    parser.add_argument("--only", default="", help="comma-separated run keys or model names")
    parser.add_argument("--out", default="runs/parity", help="folder of the JSON-lines results")
    parser.add_argument("--report", action="store_true", help="only print the tables of the results so far")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda: where models train and evaluate (the reference's timing is one CPU thread)")
    parser.add_argument("--timing-repeats", type=int, default=3, help="timing runs per row (the tables take the median)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    pick = lambda runs: [r for r in runs if not wanted or r.key in wanted or r.model in wanted]  # noqa: E731
    sections = SECTIONS if args.section == "all" else (args.section,)
    makers = {"quality": quality_runs, "tune": tune_runs, "baby": baby_runs}
    if not args.report:
        for section in sections:
            if section == "timing":
                timing(out / "timing.jsonl", args.timing_repeats, args.device)
            else:
                if section == "tune":
                    reuse_reference_points(out)
                done = run_section(section, pick(makers[section]()), out / f"{section}.jsonl", args.jobs, args.device)
                if section == "tune":  # the chosen points with the other seeds
                    run_section(section, pick(seed_runs(done)), out / "tune.jsonl", args.jobs, args.device)
    timings = median_timings(_load(out / "timing.jsonl"))
    by_key = {name: {r["key"]: r for r in _load(out / f"{name}.jsonl")} for name in makers}
    print(f"protocol: {PROTOCOL}, seed 999, only training items masked at test\n")
    print("MovieLens-100K, reference hyperparameters\n\n" + quality_table(by_key["quality"], timings))
    print("\nTuned on validation only\n\n" + tune_table(by_key["tune"]))
    print("\nAmazon 2014 Baby\n\n" + baby_table(by_key["baby"]))
    print("\nTimings\n\n" + timing_table(timings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
