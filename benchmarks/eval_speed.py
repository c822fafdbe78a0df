"""Full-ranking evaluation throughput: users/s and GFLOP/s at bounded memory.

Scores are ``U[users] @ V.T`` for random factor matrices (d = 64 by default), so the scoring cost
is ``2 * d * n_items`` flops per user. Each user has about ``--train`` masked training items and
about ``--test`` held-out items. The evaluator's batch size comes from ``memory_mb``; the figures
printed are the total time, the time inside the scorer and the rest (masking, top-k, metrics),
users/s, achieved GFLOP/s and the peak resident memory of the evaluation, plus the CPU time
(user + sys) and users per CPU-second: on a shared, loaded machine wall time mostly measures the
neighbours, and ``--threads 1`` with users per CPU-second is the steadier comparison.

    .venv/bin/python benchmarks/eval_speed.py                          # 100,000 users x 50,000 items
    .venv/bin/python benchmarks/eval_speed.py --users 20000 --items 10000   # quick run
    .venv/bin/python benchmarks/eval_speed.py --factors        # factorised models' fused CPU path
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch

from modalrec import io
from modalrec.data.interactions import Interactions
from modalrec.evaluation.evaluator import Evaluator


def make_data(n_users: int, n_items: int, n_train: int, n_test: int, seed: int) -> tuple[Interactions, Interactions]:
    """About ``n_train`` training and ``n_test`` held-out distinct items per user."""
    rng = np.random.default_rng(seed)
    per_user = n_train + n_test
    users = np.repeat(np.arange(n_users, dtype=np.int64), per_user)
    keys = np.unique(users * n_items + rng.integers(0, n_items, len(users)))
    del users
    held_out = rng.random(len(keys)) < n_test / per_user
    train = Interactions.from_arrays(keys[~held_out] // n_items, keys[~held_out] % n_items, n_users, n_items)
    test = Interactions.from_arrays(keys[held_out] // n_items, keys[held_out] % n_items, n_users, n_items)
    return train, test


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0) so the peak covers the evaluation only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size in MiB: VmHWM (resettable) where available, else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--train", type=int, default=50, help="masked training items per user (about)")
    parser.add_argument("--test", type=int, default=10, help="held-out items per user (about)")
    parser.add_argument("--cutoffs", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--memory-mb", type=int, default=None, help="evaluator memory budget (default: its own)")
    parser.add_argument("--batch-size", type=int, default=None, help="override the batch size from memory_mb")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--factors", action="store_true",
                        help="hand the evaluator the factors (its fused CPU path: no score matrix, no scorer calls)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    train, test = make_data(args.users, args.items, args.train, args.test, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    device = torch.device(args.device)
    user_factors = torch.randn(args.users, args.dim, generator=gen).to(device)
    item_factors_t = torch.randn(args.items, args.dim, generator=gen).t().contiguous().to(device)
    setup_s = time.perf_counter() - t0

    scoring_s = 0.0

    def score(users: np.ndarray) -> torch.Tensor:
        nonlocal scoring_s
        start = time.perf_counter()
        out = user_factors[torch.as_tensor(users, device=device)] @ item_factors_t
        if device.type == "cuda":
            torch.cuda.synchronize()
        scoring_s += time.perf_counter() - start
        return out

    kwargs = {"memory_mb": args.memory_mb} if args.memory_mb else {}
    evaluator = Evaluator(cutoffs=args.cutoffs, batch_size=args.batch_size, device=args.device, **kwargs)
    rss_before = current_rss_mb()
    reset = reset_peak_rss()
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    factors = (user_factors, item_factors_t.t()) if args.factors else None
    result = evaluator.run(score, test, [train], popularity=train, factors=factors)
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    if device.type == "cuda":
        torch.cuda.synchronize()
    peak = peak_rss_mb()

    n_eval = len(result.users)
    user_s = usage_after.ru_utime - usage_before.ru_utime
    sys_s = usage_after.ru_stime - usage_before.ru_stime
    gflop = 2.0 * args.dim * args.items * n_eval / 1e9
    figures = {
        "users": args.users,
        "items": args.items,
        "dim": args.dim,
        "evaluated_users": n_eval,
        "train_nnz": train.nnz,
        "test_nnz": test.nnz,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "batch_size": evaluator.batch_users(args.items) if hasattr(evaluator, "batch_users") else args.batch_size,
        "memory_mb": evaluator.memory_mb,
        "setup_s": round(setup_s, 2),
        "total_s": round(result.seconds, 2),
        "scoring_s": round(scoring_s, 2),
        "topk_metrics_s": round(result.seconds - scoring_s, 2),
        "cpu_user_s": round(user_s, 2),
        "cpu_sys_s": round(sys_s, 2),
        "users_per_s": round(n_eval / result.seconds, 1),
        "users_per_cpu_s": round(n_eval / (user_s + sys_s), 1),
        "gflops_overall": round(gflop / result.seconds, 2),
        "gflops_scoring": round(gflop / scoring_s, 2) if scoring_s else None,
        "rss_before_mb": round(rss_before, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_rss_scope": "evaluation" if reset else "process",
        "recall@20": round(result.metrics.get("recall@20", float("nan")), 6),
        "ndcg@20": round(result.metrics.get("ndcg@20", float("nan")), 6),
    }
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        io.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
