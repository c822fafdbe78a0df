"""Models register by name; ``--param key=value`` strings are checked against their ``Params``.

Every module in ``modalrec.models`` is imported on first lookup, so a new model file registers
itself with the ``@register`` decorator and needs no list to be edited.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import types
import typing
from typing import Any

from modalrec.errors import ConfigError
from modalrec.models.base import Recommender

_MODELS: dict[str, type[Recommender]] = {}
_INFRASTRUCTURE = {"base", "registry", "graph"}
_loaded = False


def register(name: str):
    """Class decorator: make a ``Recommender`` available under ``name``."""

    def wrap(cls: type[Recommender]) -> type[Recommender]:
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        cls.name = name
        _MODELS[name] = cls
        return cls

    return wrap


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    import modalrec.models as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _INFRASTRUCTURE and not info.name.startswith("_"):
            importlib.import_module(f"modalrec.models.{info.name}")
    _loaded = True


def model_names() -> list[str]:
    _load_all()
    return sorted(_MODELS)


def get_model(name: str) -> type[Recommender]:
    _load_all()
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}", hint=f"choose one of: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def param_specs(cls: type[Recommender]) -> list[tuple[str, str, Any]]:
    """(name, type name, default) for each hyperparameter, for listings and docs."""
    hints = typing.get_type_hints(cls.Params)
    return [
        (f.name, _type_name(hints[f.name]), f.default if f.default is not dataclasses.MISSING else None)
        for f in dataclasses.fields(cls.Params)
    ]


def parse_params(cls: type[Recommender], values: dict[str, Any]) -> Any:
    """Build ``cls.Params`` from strings or values, with clear errors for unknown keys and types."""
    hints = typing.get_type_hints(cls.Params)
    known = {f.name for f in dataclasses.fields(cls.Params)}
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in known:
            raise ConfigError(
                f"model {cls.name!r} has no parameter {key!r}",
                hint=f"known parameters: {', '.join(sorted(known)) or 'none'}",
            )
        kwargs[key] = _coerce(raw, hints[key], f"{cls.name}.{key}")
    return cls.Params(**kwargs)


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """``['k=10', 'lr=0.01']`` -> ``{'k': '10', 'lr': '0.01'}``."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad parameter {pair!r}", hint="write key=value, e.g. --param lr=0.001")
        out[key.strip()] = value.strip()
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(raw: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null")):
            return None
        return _coerce(raw, args[0], where)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if raw not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, choices))}, got {raw!r}")
        return raw
    if origin in (tuple, list):
        (inner, *_) = typing.get_args(tp) or (str,)
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        return origin(_coerce(x.strip() if isinstance(x, str) else x, inner, where) for x in items)
    try:
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text in ("true", "1", "yes")
        if tp is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            if isinstance(raw, str) and not raw.strip().lstrip("-").isdigit():
                raise ValueError
            return int(raw)
        if tp is float:
            return float(raw)
        if tp is str:
            return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be {_type_name(tp)}, got {raw!r}") from None
    return raw
