"""`modalrec train`, `evaluate` and `recommend`: one run folder at a time."""

from __future__ import annotations

import argparse

from modalrec.cli.format import print_table, split_list
from modalrec.evaluation.evaluator import Evaluator
from modalrec.experiments.single_run import RunSpec, evaluate_run, recommend_run, train_run
from modalrec.models.registry import parse_assignments


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="fit a model on a data set's split")
    train.add_argument("dataset", metavar="DIR")
    train.add_argument("--model", required=True)
    train.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                       help="hyperparameter (repeatable); see `modalrec models list`")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--features", default="", help="stored feature names, comma-separated")
    train.add_argument("--device", default="cpu")
    train.add_argument("--out", required=True, metavar="RUN")
    train.set_defaults(func=_train)

    evaluate = subparsers.add_parser("evaluate", help="full-ranking evaluation of a run")
    evaluate.add_argument("run", metavar="RUN")
    evaluate.add_argument("--cutoffs", default="10,20")
    evaluate.add_argument("--relevance-threshold", type=float, default=None, metavar="T")
    evaluate.add_argument("--graded", action="store_true", help="graded nDCG gains 2^(r-T+1)-1")
    evaluate.add_argument("--mask-train-only", action="store_true",
                          help="at test time mask only training items (MMRec's protocol)")
    evaluate.add_argument("--device", default="cpu")
    evaluate.set_defaults(func=_evaluate)

    recommend = subparsers.add_parser("recommend", help="top-k items for some users")
    recommend.add_argument("run", metavar="RUN")
    recommend.add_argument("--users", required=True, help="external user ids, comma-separated")
    recommend.add_argument("-k", type=int, default=10)
    recommend.set_defaults(func=_recommend)


def _train(args: argparse.Namespace) -> int:
    spec = RunSpec(dataset=str(args.dataset), model=args.model, params=parse_assignments(args.param),
                   seed=args.seed, features=split_list(args.features), device=args.device)
    model = train_run(spec, args.out)
    print(f"trained {model.name} -> {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    cutoffs = split_list(args.cutoffs, "--cutoffs", int)
    evaluator = Evaluator(cutoffs=cutoffs, relevance_threshold=args.relevance_threshold,
                          graded=args.graded, mask_valid_on_test=not args.mask_train_only,
                          device=args.device, progress=True)
    results = evaluate_run(args.run, evaluator)
    names = sorted(results["test"].metrics, key=lambda m: (int(m.split("@")[1]), m))
    rows = [[name, f"{results['valid'].metrics[name]:.4f}", f"{results['test'].metrics[name]:.4f}"]
            for name in names]
    print_table(["metric", "valid", "test"], rows)
    print(f"users evaluated: valid {len(results['valid'].users)}, test {len(results['test'].users)}; "
          f"skipped (no relevant item): valid {results['valid'].n_skipped}, test {results['test'].n_skipped}")
    return 0


def _recommend(args: argparse.Namespace) -> int:
    table = recommend_run(args.run, split_list(args.users), args.k)
    columns = [c for c in ("user", "rank", "item", "score", "title") if c in table]
    print_table(columns, [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row]
                          for row in table[columns].itertuples(index=False)])
    return 0
