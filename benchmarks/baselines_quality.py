"""Quality of the collaborative baselines on real data, against the MMRec reference figures.

For each data set (``ml100k``, ``baby``; see ``bench_data``) and model, a small grid is fitted and
the configuration with the best **validation** recall@20 is chosen; its test figures are reported.
Protocol of the reference (``../shared/data/ml100k-mmrec-ref/README.md``): Adam, batch 2048, one
uniform negative, embedding 64, lr 1e-3, validation every epoch, patience 20, at most 1000 epochs,
users without training interactions dropped from validation and test, and only training items
masked at test time. The last test column masks validation items too (modalrec's default).

Each finished configuration is stored in ``--out`` (JSON, written atomically), so an interrupted
run picks up where it stopped.

    .venv/bin/python benchmarks/baselines_quality.py                       # both data sets, all models
    .venv/bin/python benchmarks/baselines_quality.py --data ml100k --models bpr,lightgcn
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402

import bench_data  # noqa: E402
from modalrec import io  # noqa: E402
from modalrec.evaluation.evaluator import Evaluator  # noqa: E402
from modalrec.models.registry import get_model  # noqa: E402

TRAIN = {"epochs": 1000, "patience": 20, "eval_every": 1, "lr": 1e-3, "batch_size": 2048, "embedding_size": 64}
GRIDS: dict[str, list[dict[str, Any]]] = {
    "mostpop": [{}],
    "knn": [{"k": k, "shrink": s} for k in (10, 20, 50, 100, 200, 500) for s in (0.0, 10.0, 100.0, 1000.0)],
    "bpr": [TRAIN | {"reg_weight": r} for r in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)],
    "lightgcn": [TRAIN | {"n_layers": n, "reg_weight": r} for n in (1, 2, 3) for r in (1e-3, 1e-2, 1e-1)],
    "ease": [{"reg_weight": r} for r in (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)],
}
REFERENCE = {  # MMRec on the same inputs: (test recall@20, ndcg@20)
    ("ml100k", "bpr"): (0.3396, 0.2713), ("ml100k", "lightgcn"): (0.3388, 0.2757),
    ("baby", "bpr"): (0.0534, 0.0261), ("baby", "lightgcn"): (0.0699, 0.0356),
}
LABELS = {"mostpop": "MostPop", "knn": "ItemKNN", "bpr": "BPR-MF", "lightgcn": "LightGCN", "ease": "EASE"}
log = logging.getLogger("baselines")


def run_config(data: bench_data.BenchData, model_name: str, params: dict[str, Any], seed: int,
               device: str) -> dict[str, Any]:
    split = data.split
    valid = bench_data.with_train_users(split.valid, split.train)
    test = bench_data.with_train_users(split.test, split.train)
    cls = get_model(model_name)
    model = cls(cls.Params(**params), seed=seed, device=device)
    start = time.perf_counter()
    model.fit(split.train, None, valid)
    fit_seconds = time.perf_counter() - start
    evaluator = Evaluator(cutoffs=[10, 20], device=device)
    metrics = lambda result: {k: v for k, v in result.metrics.items() if k.split("@")[0] in ("recall", "ndcg")}  # noqa: E731
    return {
        "params": params,
        "valid": metrics(evaluator.run_model(model, valid, [split.train])),
        "test": metrics(evaluator.run_model(model, test, [split.train])),
        "test_mask_valid": metrics(evaluator.run_model(model, test, [split.train, split.valid])),
        "epochs": len(getattr(model, "history", []) or []),
        "best_epoch": getattr(model, "best_epoch", None),
        "fit_seconds": fit_seconds,
        "device": device,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="ml100k,baby")
    parser.add_argument("--models", default=",".join(GRIDS))
    parser.add_argument("--seed", type=int, default=999, help="model seed (the reference used 999)")
    parser.add_argument("--out", default="runs/benchmarks/baselines_quality.json")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (where the gradient models train)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("modalrec",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = Path(args.out)
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    datasets = [d.strip() for d in args.data.split(",") if d.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in datasets:
        data = bench_data.load(name, with_features=False)
        for model_name in models:
            for params in GRIDS[model_name]:
                key = f"{name}|{model_name}|{args.seed}|{json.dumps(params, sort_keys=True)}"
                if key in results:
                    continue
                result = run_config(data, model_name, params, args.seed, args.device)
                log.info("%s %s %s valid recall@20 %.4f test recall@20 %.4f (%d epochs, %.0f s)", name,
                         model_name, params, result["valid"]["recall@20"], result["test"]["recall@20"],
                         result["epochs"], result["fit_seconds"])
                results[key] = result
                io.write_json(out, results)
    print_tables(results, datasets, models, args.seed)
    return 0


def print_tables(results: dict[str, Any], datasets: list[str], models: list[str], seed: int) -> None:
    for name in datasets:
        print(f"\n{name} (model seed {seed}; best of the grid on validation recall@20)\n")
        print("| model | chosen (grid size) | valid R@20 | test R@20 | test N@20 | test R@10 | test N@10 "
              "| test R@20, valid masked | MMRec R@20 / N@20 | epochs (best) | fit s | device |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for model_name in models:
            runs = [r for k, r in results.items() if k.startswith(f"{name}|{model_name}|{seed}|")]
            if not runs:
                continue
            best = max(runs, key=lambda r: r["valid"]["recall@20"])
            shown = {k: v for k, v in best["params"].items() if k not in {k2 for k2 in ("epochs", "patience",
                     "eval_every", "lr", "batch_size", "embedding_size")}}
            ref = REFERENCE.get((name, model_name))
            t, v = best["test"], best["valid"]
            epochs = f"{best['epochs']} ({best['best_epoch']})" if best["epochs"] else "-"
            print(f"| {LABELS.get(model_name, model_name)} | {json.dumps(shown)} ({len(runs)}) | "
                  f"{v['recall@20']:.4f} | {t['recall@20']:.4f} | {t['ndcg@20']:.4f} | {t['recall@10']:.4f} | "
                  f"{t['ndcg@10']:.4f} | {best['test_mask_valid']['recall@20']:.4f} | "
                  f"{f'{ref[0]:.4f} / {ref[1]:.4f}' if ref else '-'} | {epochs} | {best['fit_seconds']:.0f} | "
                  f"{best.get('device', 'cpu')} |")


if __name__ == "__main__":
    raise SystemExit(main())
