"""`modalrec models list` and `modalrec models show NAME`: what models exist and how to tune them."""

from __future__ import annotations

import argparse
import ast
import inspect
import textwrap
import types
import typing

from modalrec.cli.format import print_table
from modalrec.models.base import Recommender
from modalrec.models.registry import get_model, model_names, param_specs


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="list the registered recommenders")
    sub = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    listing = sub.add_parser("list", help="every model: features used, reference, parameters")
    listing.set_defaults(func=_list)
    show = sub.add_parser("show", help="one model's parameters with their documentation")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(func=_show)
    models.set_defaults(func=_list)


def _format_default(value: object) -> str:
    return "None" if value is None else repr(value) if isinstance(value, str) else str(value)


def type_label(hint: object) -> str:
    """A readable type: ``cosine|jaccard`` for a Literal, ``int | None``, ``tuple[float, ...]``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_label(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_label(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if args else getattr(origin, "__name__", str(origin))
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def param_rows(cls: type[Recommender]) -> list[tuple[str, str, str]]:
    """(name, type, default) for each hyperparameter, in declaration order."""
    hints = typing.get_type_hints(cls.Params)
    return [(name, type_label(hints.get(name, type_name)), _format_default(default))
            for name, type_name, default in param_specs(cls)]


def describe_params(cls: type[Recommender]) -> list[str]:
    """``name: type = default`` for each hyperparameter, in declaration order."""
    return [f"{name}: {label} = {default}" for name, label, default in param_rows(cls)]


def param_docs(cls: type[Recommender]) -> dict[str, str]:
    """The attribute docstrings (the string right after a field) of ``cls.Params`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.Params.__mro__):
        if klass is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, following in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _list(args: argparse.Namespace) -> int:
    for name in model_names():
        cls = get_model(name)
        features = "uses features" if cls.uses_features else "no features"
        print(f"{name}  ({features})  {cls.reference or ''}".rstrip())
        params = describe_params(cls)
        for line in params or ["(no parameters)"]:
            print(f"    {line}")
    print("\nset parameters with --param KEY=VALUE; `modalrec models show NAME` explains each one")
    return 0


def _show(args: argparse.Namespace) -> int:
    cls = get_model(args.name)
    doc = inspect.getdoc(cls) or ""
    print(f"{cls.name}: {cls.reference}")
    print(f"uses features: {'yes' if cls.uses_features else 'no'}")
    if doc:
        print("\n" + doc + "\n")
    docs = param_docs(cls)
    rows = [[name, label, default, docs.get(name, "")] for name, label, default in param_rows(cls)]
    print_table(["parameter", "type", "default", "meaning"], rows)
    return 0
