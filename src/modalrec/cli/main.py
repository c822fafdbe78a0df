"""Command-line entry point: parse, call the library, print.

Each command group lives in its own module with a ``register(subparsers)`` function that adds its
parsers and sets ``func``. Bad input (a ``ModalrecError``) becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from modalrec import __version__
from modalrec.errors import ModalrecError

GROUPS = ["data", "train", "models", "experiments", "features", "describe"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modalrec", description="Does multimodal item content really help a recommender?"
    )
    parser.add_argument("--version", action="version", version=f"modalrec {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        importlib.import_module(f"modalrec.cli.{group}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ModalrecError as error:
        print(f"modalrec: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("modalrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
