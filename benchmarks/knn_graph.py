"""Time and peak memory of the chunked item kNN graph (``modalrec.models.graph.knn_graph``).

The reference toolboxes build a dense items x items similarity matrix: at 100,000 items that is
40 GB in float32 before the top-k. Here rows are processed in chunks bounded by ``--memory-mb``, so
the peak stays near features + one chunk + the graph.

Peak memory is the process's peak resident set size (``resource.getrusage``, which sees torch's
allocations too), reported as the increase over the resident size before the graph is built;
``tracemalloc`` gives the peak of the numpy / Python allocations alone.

    .venv/bin/python benchmarks/knn_graph.py                      # 100,000 items, d = 384, k = 10
    .venv/bin/python benchmarks/knn_graph.py --items 20000 --threads 1
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc

import numpy as np
import torch

from modalrec.models.graph import knn_graph


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--memory-mb", type=float, default=256, help="work budget per chunk")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    # clustered rows, like real embeddings: 500 centres plus noise
    centres = rng.standard_normal((500, args.dim), dtype=np.float32)
    features = centres[rng.integers(0, 500, args.items)] + 0.5 * rng.standard_normal(
        (args.items, args.dim), dtype=np.float32)
    mask = np.ones(args.items, dtype=bool)
    mask[rng.choice(args.items, args.items // 100, replace=False)] = False  # 1 % without content
    knn_graph(features[:1000], args.k)  # warm up torch kernels

    base_rss = rss_mb()
    peak_before = peak_rss_mb()
    tracemalloc.start()
    start = time.perf_counter()
    cpu = time.process_time()
    graph = knn_graph(features, args.k, mask, memory_mb=args.memory_mb)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = peak_rss_mb()

    feature_mb = features.nbytes / 2**20
    graph_mb = (graph.data.nbytes + graph.indices.nbytes + graph.indptr.nbytes) / 2**20
    dense_gb = args.items**2 * 4 / 2**30
    print(f"items {args.items:,}  dim {args.dim}  k {args.k}  torch threads {torch.get_num_threads()}  "
          f"memory budget {args.memory_mb:g} MB  load average {os.getloadavg()[0]:.1f}")
    print(f"edges {graph.nnz:,} ({graph.nnz / mask.sum():.1f} per item with content)")
    print(f"time {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU")
    print(f"features {feature_mb:.0f} MB; graph {graph_mb:.1f} MB; "
          f"a dense similarity matrix would be {dense_gb:.1f} GB")
    print(f"peak RSS {peak:.0f} MB (before: resident {base_rss:.0f} MB, peak {peak_before:.0f} MB; "
          f"increase over resident {max(0.0, peak - base_rss):.0f} MB); tracemalloc peak {traced_peak / 2**20:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
