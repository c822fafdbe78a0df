"""Feature extraction throughput on CPU: items/s of the offline default encoders by batch size.

Inputs are real MovieLens-100K TMDB overviews ("title overview") and posters from
``../shared/data/ml100k-tmdb`` when present, else synthetic sentences and random 92x138 images.
The model is loaded and warmed up on one batch first; the timed part is ``Extractor.encode`` over
``--n`` items, image decoding and preprocessing included (it is part of real extraction).
Besides wall-clock items/s it prints items per CPU-second of the process: on a shared, busy machine
that figure stays meaningful (with ``--threads 1`` it is what one idle core would do).

    .venv/bin/python benchmarks/extract_speed.py
    .venv/bin/python benchmarks/extract_speed.py --extractors minilm --batch-sizes 32 --n 512 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(os.environ.get("MODALREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def movielens_inputs(n: int) -> tuple[list[str], list[str], str] | None:
    root = SHARED / "ml100k-tmdb"
    if not (root / "items.csv").is_file():
        return None
    table = pd.read_csv(root / "items.csv").drop_duplicates("movie_id").sort_values("movie_id")
    texts = [f"{t} {o}" if isinstance(o, str) else t for t, o in zip(table["title"], table["overview"])]
    posters = [str(p) for p in (root / "posters" / f"{i}.jpg" for i in table["movie_id"]) if p.is_file()]
    return _cycle(texts, n), _cycle(posters, n), "MovieLens-100K TMDB overviews and posters"


def synthetic_inputs(n: int, folder: Path) -> tuple[list[str], list[str], str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    words = ["a", "the", "story", "of", "young", "old", "love", "war", "space", "city", "family", "secret", "journey", "finds", "must", "save", "world"]
    texts = [" ".join(rng.choice(words, rng.integers(20, 80))) for _ in range(n)]
    paths = []
    for i in range(min(n, 64)):
        path = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (138, 92, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return texts, _cycle(paths, n), "synthetic sentences and 92x138 random images"


def _cycle(values: list[str], n: int) -> list[str]:
    return [values[i % len(values)] for i in range(n)]


def measure(name: str, inputs: list[str], batch_sizes: list[int]) -> list[tuple[str, int, float, float]]:
    from modalrec.features.registry import get_extractor

    extractor = get_extractor(name)
    started = time.perf_counter()
    extractor.encode(inputs[: max(batch_sizes)])  # load the model and warm up
    load_seconds = time.perf_counter() - started
    rows = []
    for batch_size in batch_sizes:
        started, cpu_started = time.perf_counter(), time.process_time()
        for start in range(0, len(inputs), batch_size):
            batch = extractor.encode(inputs[start:start + batch_size])
            assert batch.ok.all()
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        rows.append((name, batch_size, len(inputs) / seconds, len(inputs) / cpu_seconds, load_seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extractors", default="minilm,mpnet,efficientnet-lite0")
    parser.add_argument("--batch-sizes", default="8,32,128")
    parser.add_argument("--n", type=int, default=256, help="items per measurement")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        data = movielens_inputs(args.n) or synthetic_inputs(args.n, Path(tmp))
        texts, images, source = data
        print(f"inputs: {source}; {args.n} items per measurement; torch threads {torch.get_num_threads()}; "
              f"cpu count {os.cpu_count()}")
        print(f"load average before: {os.getloadavg()[0]:.1f} (items/cpu-s divides by the process's CPU time,"
              " which a busy machine does not inflate)")
        print(f"{'extractor':<20}{'batch':>6}{'items/s':>10}{'items/cpu-s':>13}{'load+warm-up s':>16}")
        for name in args.extractors.split(","):
            inputs = images if name.startswith(("efficientnet", "hf-image", "clip-image")) else texts
            for extractor, batch_size, rate, cpu_rate, load in measure(name, inputs, batch_sizes):
                print(f"{extractor:<20}{batch_size:>6}{rate:>10.1f}{cpu_rate:>13.1f}{load:>16.1f}", flush=True)


if __name__ == "__main__":
    main()
