"""Hyperparameter search spaces: full grids, or TPE (Optuna) with a trial budget.

Both only ever see validation scores. TPE is seeded, so a resumed run asks for the same
configurations in the same order and finds them already done.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

from modalrec.config import SearchConfig
from modalrec.errors import DependencyError


def grid(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, in the order the keys and values are written."""
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]


def tpe_search(
    search: SearchConfig, objective: Callable[[dict[str, Any]], float], seed: int
) -> list[tuple[dict[str, Any], float]]:
    """Run ``search.trials`` TPE proposals; ``objective`` returns the validation score."""
    try:
        import optuna
    except ImportError:
        raise DependencyError("TPE search needs optuna", hint="pip install optuna") from None
    optuna.logging.set_verbosity(logging.WARNING)
    distributions = {key: _distribution(optuna, key, value) for key, value in search.space.items()}
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    history = []
    for _ in range(search.trials):
        proposal = study.ask(distributions)
        value = objective(dict(proposal.params))
        study.tell(proposal, value)
        history.append((dict(proposal.params), value))
    return history


def _distribution(optuna: Any, key: str, value: Any) -> Any:
    if isinstance(value, list):
        return optuna.distributions.CategoricalDistribution(value)
    low, high, log = value["low"], value["high"], bool(value.get("log", False))
    if isinstance(low, int) and isinstance(high, int) and not log:
        return optuna.distributions.IntDistribution(low, high)
    return optuna.distributions.FloatDistribution(float(low), float(high), log=log)
