"""Trials as Ray tasks: the same ``Backend`` interface as local processes, on one machine or a cluster.

Each trial is one Ray task that asks for the CPUs, GPUs and memory of the config's ``resources``
(GPUs default to one per trial when the device is CUDA). Ray schedules the tasks over the nodes;
nothing here decides where a trial runs. A worker or node lost mid-trial is a system failure that
Ray retries (``max_retries``); ``retry_exceptions`` adds transient I/O errors. Retries are safe
because ``run_trial`` is idempotent: it returns the stored record when ``trials/<key>.json``
exists and writes that record last and atomically, so a retried trial never duplicates or
overwrites a finished one. Resume across runs works as locally: trials whose record exists are
answered on the driver and never sent to the cluster.

Trials read the data set and write their records under the output folder, so on a multi-node
cluster that folder (and the data sets in it) must be on a file system every node mounts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from modalrec.config import ResourcesConfig
from modalrec.errors import ConfigError, ModalrecError
from modalrec.experiments.backends import Progress
from modalrec.experiments.trial import Trial, load_record, run_trial, trial_path
from modalrec.ray_support import connect

log = logging.getLogger(__name__)

TrialFunction = Callable[[Trial, str, int | None], dict[str, Any]]
RETRY_EXCEPTIONS: list[type[BaseException]] = [OSError]
"""Application errors worth another attempt (I/O on a shared file system); bad input is not."""
RECORD_WAIT_SECONDS = 30.0


class RayBackend:
    """Run trials as Ray tasks; ``workers`` caps the trials in flight (None: the cluster decides).

    With no ``address`` and no Ray session in this process, a local Ray instance is started with
    ``workers x cpus`` CPUs (all cores when ``workers`` is None), so ``--workers 2`` means two
    trials at a time, as with the local backend. ``trial_function`` is what each task runs
    (``run_trial``; tests swap in one that crashes its worker).
    """

    def __init__(self, workers: int | None = None, address: str | None = None,
                 resources: ResourcesConfig | None = None, max_retries: int = 3,
                 trial_function: TrialFunction = run_trial) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}", where="--workers")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be at least 0, got {max_retries}")
        self.workers = workers
        self.address = address
        self.resources = resources or ResourcesConfig()
        self.max_retries = max_retries
        self.trial_function = trial_function

    def options(self, trial: Trial) -> dict[str, Any]:
        """The Ray task options for ``trial``: its resource requests and retry policy."""
        gpus = self.resources.gpus
        if gpus is None:
            gpus = 1.0 if trial.device.startswith("cuda") else 0.0
        options: dict[str, Any] = {"num_cpus": self.resources.cpus, "num_gpus": gpus,
                                   "max_retries": self.max_retries, "retry_exceptions": RETRY_EXCEPTIONS}
        if self.resources.memory_gb is not None:
            options["memory"] = int(self.resources.memory_gb * 1024**3)
        return options

    def run(self, trials: Sequence[Trial], root: Path, on_done: Progress) -> list[dict[str, Any]]:
        root = Path(root)
        records: list[dict[str, Any] | None] = [None] * len(trials)
        waiting: list[int] = []
        for n, trial in enumerate(trials):
            done = load_record(root, trial)  # resume: finished trials never leave the driver
            if done is None:
                waiting.append(n)
            else:
                records[n] = done
                on_done(trial, done)
        if not waiting:
            return records  # type: ignore[return-value]

        cpus = None if self.workers is None else max(1, round(self.workers * self.resources.cpus))
        ray = connect(self.address, num_cpus=cpus)
        remote = ray.remote(_call)
        threads = max(1, int(self.resources.cpus))
        limit = self.workers or len(waiting)
        pending: dict[Any, int] = {}
        queue = list(reversed(waiting))
        while queue or pending:
            while queue and len(pending) < limit:
                n = queue.pop()
                trial = trials[n]
                ref = remote.options(**self.options(trial)).remote(self.trial_function, trial, str(root), threads)
                pending[ref] = n
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                n = pending.pop(ref)
                records[n] = self._result(ray, ref, trials[n], root)
                on_done(trials[n], records[n])
        return records  # type: ignore[return-value]

    def _result(self, ray: Any, ref: Any, trial: Trial, root: Path) -> dict[str, Any]:
        try:
            record = ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, ModalrecError):
                raise cause from None  # bad input: one clear line, as with the local backend
            raise
        _check_visible(root, trial)
        return record


def _call(function: TrialFunction, trial: Trial, root: str, threads: int) -> dict[str, Any]:
    """The task body: any picklable trial function (``run_trial``, or a partial of one)."""
    return function(trial, root, threads)


def _check_visible(root: Path, trial: Trial) -> None:
    """A record written on another node must be visible here, or the results would be incomplete."""
    path = trial_path(root, trial.key)
    deadline = time.monotonic() + RECORD_WAIT_SECONDS
    while not path.exists():
        if time.monotonic() > deadline:
            raise ConfigError("a trial finished on a Ray worker but its record is not in the output folder",
                              where=str(path),
                              hint="on a multi-node cluster put --out on a file system every node mounts")
        time.sleep(0.5)
