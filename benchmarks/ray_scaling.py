"""Ray against local processes: wall time of a 16-trial BPR grid and of extracting 2,000 items.

Both jobs run with the local backend (in-process for 1 worker, spawned processes for 2) and on a
local Ray instance (started once, with 2 CPUs; its start-up is reported on its own) with 1 and 2
workers; every run writes to a fresh folder so nothing is cached. The figures printed are wall
seconds and the Ray/local ratio at the same worker count (the overhead of Ray: task and actor
start-up, object transfer). Results are checked to agree: the same trial metrics, and
byte-identical feature matrices.

On a 2-core machine shared with other work the absolute times mostly measure contention; the
ratios are the figures to read.

    .venv/bin/python benchmarks/ray_scaling.py                    # 16 trials + 2,000 items
    .venv/bin/python benchmarks/ray_scaling.py --items 500 --epochs 3
    .venv/bin/python benchmarks/ray_scaling.py --skip-extraction
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from modalrec.data.dataset import Dataset
from modalrec.data.splitting import make_split
from modalrec.experiments.backends import LocalBackend
from modalrec.experiments.ray_backend import RayBackend
from modalrec.experiments.trial import Trial
from modalrec.features.extraction import extract
from modalrec.features.ray_extraction import RayBatchEncoder
from modalrec.features.registry import get_extractor
from modalrec.ray_support import connect

WORDS = ("red", "blue", "green", "black", "white", "small", "large", "soft", "hard", "cotton", "wool",
         "leather", "wooden", "metal", "plastic", "shirt", "dress", "shoe", "boot", "bag", "lamp", "chair",
         "table", "mug", "bottle", "toy", "puzzle", "book", "poster", "watch", "ring", "classic", "modern",
         "vintage", "sporty", "elegant", "cosy", "bright", "dark", "light", "warm", "cool", "striped",
         "plain", "printed")


def grid_dataset(folder: Path, n_users: int, n_items: int, per_user: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    users = np.repeat(np.arange(n_users), per_user)
    items = rng.choice(n_items, size=len(users), p=popularity / popularity.sum())
    frame = pd.DataFrame({"user_id": users, "item_id": items}).drop_duplicates()
    dataset = Dataset.from_frames(frame, pd.DataFrame({"item_id": np.arange(n_items)}))
    dataset = dataset.with_split(make_split(dataset.interactions, "random", (0.8, 0.1, 0.1), seed))
    dataset.save(folder)
    return folder


def text_dataset(folder: Path, n_items: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    titles = [" ".join(rng.choice(WORDS, size=rng.integers(6, 30))) for _ in range(n_items)]
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(n_items)], "title": titles})
    Dataset.from_frames(pd.DataFrame({"user_id": ["u"] * n_items, "item_id": items["item_id"]}), items).save(folder)
    return folder


def grid_trials(dataset_dir: Path, epochs: int) -> list[Trial]:
    space = itertools.product([0.001, 0.005, 0.01, 0.05], [16, 32, 64, 128])
    return [Trial(dataset="bench", dataset_dir=str(dataset_dir), label="bpr", model="bpr",
                  params={"epochs": epochs, "eval_every": epochs, "lr": lr, "embedding_size": size},
                  evaluation={"cutoffs": [20], "valid_metric": "recall@20"}) for lr, size in space]


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--items-grid", type=int, default=500, help="items of the grid's data set")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--items", type=int, default=2000, help="items to extract")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument("--skip-extraction", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (data sets, records, features)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; torch threads "
          f"{torch.get_num_threads()}; scratch {root}")

    seconds, _ = timed(lambda: connect(None, num_cpus=2))
    print(f"ray start-up (local instance, 2 CPUs): {seconds:.1f}s\n")
    rows = []

    if not args.skip_grid:
        data = grid_dataset(root / "grid-data", args.users, args.items_grid, per_user=20)
        trials = grid_trials(data, args.epochs)
        results = {}
        for label, backend in (("local", LocalBackend(1)), ("local", LocalBackend(2)),
                               ("ray", RayBackend(workers=1)), ("ray", RayBackend(workers=2))):
            workers = backend.workers
            out = root / f"grid-{label}-{workers}"
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # in-process trials get 1 thread, as each process and Ray task does
            try:
                seconds, records = timed(lambda: backend.run(trials, out, lambda t, r: None))  # noqa: B023
            finally:
                torch.set_num_threads(threads)
            results[(label, workers)] = (seconds, [r["metrics"] for r in records])
            print(f"grid of {len(trials)} BPR trials, {label:5s} x{workers}: {seconds:7.1f}s", flush=True)
        same = all(m == results[("local", 1)][1] for _, m in results.values())
        for workers in (1, 2):
            rows.append([f"{len(trials)}-trial BPR grid", workers, results[("local", workers)][0],
                         results[("ray", workers)][0]])
        print(f"same metrics on every backend: {'yes' if same else 'NO'}\n")

    if not args.skip_extraction:
        matrices = {}
        times = {}
        runs = [("local", 1, None), ("local", 2, None),
                ("ray", 1, RayBatchEncoder(workers=1)), ("ray", 2, RayBatchEncoder(workers=2))]
        for label, workers, encoder in runs:
            folder = text_dataset(root / f"text-{label}-{workers}", args.items)
            threads = torch.get_num_threads()
            torch.set_num_threads(workers)  # local: one process with 1 or 2 threads
            try:
                seconds, result = timed(lambda: extract(folder, get_extractor("minilm"),  # noqa: B023
                                                        batch_size=args.batch_size, progress=False,
                                                        encode_batches=encoder))  # noqa: B023
            finally:
                torch.set_num_threads(threads)
            times[(label, workers)] = seconds
            matrices[(label, workers)] = (result.path / "matrix.npy").read_bytes()
            note = "threads" if label == "local" else "actors"
            print(f"extract {args.items} items (minilm), {label:5s} x{workers} {note}: {seconds:7.1f}s "
                  f"({args.items / seconds:.1f} items/s)", flush=True)
        same = len(set(matrices.values())) == 1
        for workers in (1, 2):
            rows.append([f"extract {args.items} items", workers, times[("local", workers)], times[("ray", workers)]])
        print(f"byte-identical matrices on every backend: {'yes' if same else 'NO'}\n")

    print(f"{'job':28s} {'workers':>7s} {'local s':>9s} {'ray s':>9s} {'ray/local':>9s}")
    for job, workers, local, distributed in rows:
        print(f"{job:28s} {workers:7d} {local:9.1f} {distributed:9.1f} {distributed / local:9.2f}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    print("(grid: local x1 runs in this process with 1 torch thread, local x2 in 2 spawned processes with 1 "
          "thread each, as Ray's tasks; extraction: local xN is one process with N torch threads, Ray xN is N "
          "actors with 1 thread each)")


if __name__ == "__main__":
    sys.exit(main())
