"""One-thread time of the item-item top-k kernels and of the edge-list-to-CSR conversion.

``knn_edges`` ranks neighbours with ``gram_topk`` on one thread (each pair's product once) and
with ``factor_topk`` on several (every row block against every item, rows split over threads).
LATTICE rebuilds two such graphs for every scoring pass and then turns the mixed edge list into
CSR with ``edge_csr``. This prints both kernels' times on the same rows, and ``edge_csr`` against
scipy's COO-to-CSR conversion on an edge list of the same shape, as medians of alternating rounds
(the machine's speed drifts, so the two sides of each comparison run interleaved).

    .venv/bin/python benchmarks/item_topk_kernels.py                    # 1,682 and 7,050 items
    .venv/bin/python benchmarks/item_topk_kernels.py --items 1682 --dim 64 --k 10 --rounds 40
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from modalrec.evaluation.chunked_topk import factor_topk, gram_topk
from modalrec.models.graph import to_torch_sparse
from modalrec.models.modality import edge_csr


def alternate(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each variant, the variants run in turn every round after a warm-up."""
    for run in variants.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def unit_rows(n: int, dim: int, rng: np.random.Generator) -> torch.Tensor:
    """Clustered rows like real embeddings (200 centres plus noise), normalised."""
    centres = rng.standard_normal((200, dim), dtype=np.float32)
    x = centres[rng.integers(0, 200, n)] + 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
    return torch.from_numpy(x / np.linalg.norm(x, axis=1, keepdims=True))


def scipy_csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The conversion ``edge_csr`` replaced: scipy's COO to CSR, duplicates summed."""
    matrix = sp.csr_matrix((values.numpy(), (rows.numpy(), cols.numpy())), shape=shape)
    matrix.sum_duplicates()
    return to_torch_sparse(matrix)


def compare(n: int, dim: int, k: int, rounds: int, rng: np.random.Generator) -> str:
    """One table row: both kernels on the same ``n`` rows, both conversions on one edge list."""
    x = unit_rows(n, dim, rng)
    own = np.arange(n, dtype=np.int64)
    no_mask = np.zeros(n + 1, dtype=np.int64)
    kernels = alternate({"factor": lambda: factor_topk(x, x, own, no_mask, own.astype(np.int32), k),
                         "gram": lambda: gram_topk(x, k)}, rounds)
    _, neighbours = gram_topk(x, k)
    # LATTICE's mixed graph: two learned and two original kNN edge lists, overlapping
    rows = torch.arange(n).repeat_interleave(k).repeat(4)
    cols = torch.cat([neighbours.reshape(-1)] * 2 + [torch.from_numpy(rng.integers(0, n, n * k))] * 2)
    values = torch.rand(len(rows))
    conversions = alternate({"scipy": lambda: scipy_csr(rows, cols, values, (n, n)),
                             "edge_csr": lambda: edge_csr(rows, cols, values, (n, n))}, rounds)
    return (f"{n:>7} {kernels['factor'] * 1e3:>9.2f} ms {kernels['gram'] * 1e3:>7.2f} ms "
            f"{kernels['factor'] / kernels['gram']:>5.2f}x {len(rows):>8,} {conversions['scipy'] * 1e3:>7.2f} ms "
            f"{conversions['edge_csr'] * 1e3:>6.2f} ms {conversions['scipy'] / conversions['edge_csr']:>5.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[1682, 7050])
    parser.add_argument("--dim", type=int, default=64, help="LATTICE's projected features are 64-d")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    print(f"one torch thread; dim {args.dim}; k {args.k}; {args.rounds} alternating rounds; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'items':>7} {'factor_topk':>12} {'gram_topk':>10} {'ratio':>6} {'edges':>8} "
          f"{'scipy CSR':>10} {'edge_csr':>9} {'ratio':>6}")
    for n in args.items:
        print(compare(n, args.dim, args.k, args.rounds, rng))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
