"""Training and validation speed of the gradient models: seconds per epoch and per full validation.

Each row of ``ROWS`` is one model configuration (label, registry name, parameters, whether it needs
features). A row is fitted for ``--epochs`` epochs with no validation inside the loop, so the
per-epoch figure is training only (the median over epochs after the first, which pays one-off
costs), as wall-clock and as process CPU seconds (which other load on a shared machine inflates
much less; with ``--threads 1`` it is the single-core cost); then one full-ranking validation pass (every validation user, all items, training items
masked) is timed on its own, including the model's embedding computation.

Reference timings (MMRec on the same Baby split, one thread, from
``../shared/data/ml100k-mmrec-ref/README.md``) are printed beside ours as ratios (> 1: we are faster).

    .venv/bin/python benchmarks/train_speed.py                          # Baby, every row
    .venv/bin/python benchmarks/train_speed.py --threads 1 --models bpr,lightgcn
    .venv/bin/python benchmarks/train_speed.py --data ml100k --models vbpr   # rows with real features
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data  # noqa: E402
from modalrec.evaluation.evaluator import Evaluator  # noqa: E402
from modalrec.models.registry import get_model  # noqa: E402


@dataclass
class Row:
    label: str
    model: str
    params: dict = field(default_factory=dict)
    needs_features: bool = False
    reference: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Data set -> (MMRec s/epoch, MMRec s/eval), one thread."""


COMMON = {"embedding_size": 64, "batch_size": 2048}
ROWS = [
    Row("BPR-MF", "bpr", COMMON, reference={"baby": (0.88, 3.78), "ml100k": (0.39, 0.17)}),
    Row("LightGCN (1 layer)", "lightgcn", COMMON | {"n_layers": 1},
        reference={"baby": (2.12, 3.61), "ml100k": (0.90, 0.14)}),
    Row("LightGCN (3 layers)", "lightgcn", COMMON | {"n_layers": 3}),
    # Multimodal rows go here, e.g.
    # Row("VBPR", "vbpr", COMMON, needs_features=True, reference={"ml100k": (0.80, 0.17)}),
    # Multimodal models with the reference hyperparameters (the MMRec reference VBPR is its variant).
    Row("VBPR (paper)", "vbpr", COMMON, needs_features=True),
    Row("VBPR (MMRec variant)", "vbpr-mmrec", COMMON | {"reg_weight": 2.0}, needs_features=True,
        reference={"ml100k": (0.80, 0.17)}),
    Row("FREEDOM", "freedom", COMMON | {"dropout": 0.8, "reg_weight": 0.0}, needs_features=True,
        reference={"ml100k": (2.48, 0.17)}),
    Row("LATTICE", "lattice", COMMON | {"reg_weight": 0.0}, needs_features=True,
        reference={"ml100k": (2.94, 0.42)}),
    Row("BM3", "bm3", COMMON | {"reg_weight": 0.1, "dropout": 0.3}, needs_features=True,
        reference={"ml100k": (2.13, 0.15)}),
]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_row(row: Row, data: bench_data.BenchData, epochs: int, seed: int, device: str) -> dict[str, float]:
    cls = get_model(row.model)
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    params = cls.Params(**({k: v for k, v in row.params.items() if k in fields} | {"epochs": epochs}))
    model = cls(params, seed=seed, device=device)
    features = data.features if (row.needs_features or cls.uses_features) else None
    split = data.split
    cpu_marks = [time.process_time()]
    if hasattr(model, "callbacks"):  # CPU seconds per epoch: robust to other load on the machine
        model.callbacks.append(lambda record: cpu_marks.append(time.process_time()))
    start = time.perf_counter()
    model.fit(split.train, features, None)
    sync(device)
    fit_seconds = time.perf_counter() - start
    per_epoch = [r["train_seconds"] for r in model.history] or [fit_seconds]
    cpu_epoch = list(np.diff(cpu_marks)) or [float("nan")]
    evaluator = Evaluator(cutoffs=[20], device=device)
    valid = bench_data.with_train_users(split.valid, split.train)
    evals, cpu_evals = [], []
    for _ in range(3):
        if hasattr(model, "invalidate"):
            model.invalidate()
        cpu = time.process_time()
        evals.append(evaluator.run_model(model, valid, [split.train]).seconds)
        cpu_evals.append(time.process_time() - cpu)
    return {"epoch": statistics.median(per_epoch[1:] or per_epoch), "first_epoch": per_epoch[0],
            "cpu_epoch": statistics.median(cpu_epoch[1:] or cpu_epoch), "eval": min(evals),
            "cpu_eval": min(cpu_evals), "fit": fit_seconds, "users": len(np.unique(valid.users))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="baby", choices=bench_data.DATASETS)
    parser.add_argument("--models", default="", help="comma-separated registry names or row labels (default: all)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (the reference used 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    wanted = {w.strip() for w in args.models.split(",") if w.strip()}
    rows = [r for r in ROWS if not wanted or r.model in wanted or r.label in wanted]
    if not rows:
        raise SystemExit(f"no row matches {args.models!r}; rows: {', '.join(r.label for r in ROWS)}")
    data = bench_data.load(args.data, with_features=any(r.needs_features for r in rows))
    s = data.split
    print(f"data {args.data}: {s.train.n_users} users, {s.train.n_items} items, train {s.train.nnz}; "
          f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}; "
          f"{args.epochs} epochs per row" + ("" if data.features_are_real or not data.features
                                            else "; random features (timing only)"))
    print(f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    header = f"{'model':22} {'s/epoch':>8} {'cpu s/ep':>8} {'1st ep':>7} {'s/eval':>7} {'cpu s/ev':>8} " \
             f"{'eval users':>10} {'ref s/ep':>9} {'ratio':>6} {'ref s/ev':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for row in rows:
        result = time_row(row, data, args.epochs, args.seed, args.device)
        ref = row.reference.get(args.data)
        cells = [f"{row.label:22}", f"{result['epoch']:8.3f}", f"{result['cpu_epoch']:8.3f}",
                 f"{result['first_epoch']:7.3f}", f"{result['eval']:7.3f}", f"{result['cpu_eval']:8.3f}",
                 f"{result['users']:10d}"]
        if ref:
            cells += [f"{ref[0]:9.2f}", f"{ref[0] / result['epoch']:6.1f}", f"{ref[1]:9.2f}",
                      f"{ref[1] / result['eval']:6.1f}"]
        print(" ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
