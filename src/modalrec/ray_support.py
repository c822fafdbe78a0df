"""Ray is optional: import it on demand and connect to a cluster (or start a local one) once.

Everything distributed in modalrec (trials, feature extraction) goes through ``connect`` so that
a missing Ray says how to install it, a wrong address says how to start a cluster, and a process
that is already connected (a test fixture, a notebook, a Ray job) is reused as it is.
"""

from __future__ import annotations

import logging
from types import ModuleType

from modalrec.errors import ConfigError, DependencyError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'modalrec[ray]' (or pip install 'ray[data,tune]')"


def require_ray() -> ModuleType:
    """The ``ray`` module, or a DependencyError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise DependencyError("the Ray backend needs Ray, which is not installed", hint=INSTALL_HINT) from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> ModuleType:
    """Ray, connected: the running session if this process already has one, else the cluster at
    ``address`` (``auto``: the one started on this machine with ``ray start``), else a new local
    instance with ``num_cpus`` CPUs (all cores when None)."""
    ray = require_ray()
    if ray.is_initialized():
        if address is not None:
            log.info("Ray is already initialised in this process; ignoring address %s", address)
        return ray
    options = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address is None:
        options.update(num_cpus=num_cpus, num_gpus=num_gpus)
        log.info("starting a local Ray instance (%s CPUs)", num_cpus or "all")
    else:
        log.info("connecting to the Ray cluster at %s", address)
    try:
        ray.init(address=address, **options)
    except ConnectionError as error:
        raise ConfigError(f"cannot reach a Ray cluster at {address!r}: {error}", where="--address",
                          hint="start one with `ray start --head` (and `ray start --address=HEAD:6379` on "
                               "each worker), or leave --address out for a local instance") from None
    return ray


def cluster_resources() -> dict[str, float]:
    """What the connected cluster has in all (``CPU``, ``GPU``, ``memory`` in bytes, ...)."""
    return dict(require_ray().cluster_resources())
