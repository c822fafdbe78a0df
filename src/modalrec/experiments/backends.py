"""Where trials run: in this process, or in a pool of local processes.

Every backend takes a list of trials and returns their records in the same order. Trials write
their own records, so a backend that dies mid-way loses only the trials still running.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Protocol

from modalrec.experiments.trial import Trial, run_trial

Progress = Callable[[Trial, dict[str, Any]], None]
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def exit_with_parent(parent: int) -> None:
    """Pool initializer: on Linux the worker gets SIGTERM when the process that started it dies,
    even by SIGKILL, so a killed run leaves no trial running on its own (results of finished
    trials are on disk already; a rerun resumes)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


class Backend(Protocol):
    def run(self, trials: Sequence[Trial], root: Path, on_done: Progress) -> list[dict[str, Any]]: ...


class LocalBackend:
    """``workers`` processes (spawned, so torch's threads are never forked); 1 runs in-process."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, int(workers))

    def run(self, trials: Sequence[Trial], root: Path, on_done: Progress) -> list[dict[str, Any]]:
        records: list[dict[str, Any] | None] = [None] * len(trials)
        if self.workers == 1 or len(trials) <= 1:
            for n, trial in enumerate(trials):
                records[n] = run_trial(trial, root)
                on_done(trial, records[n])
            return records  # type: ignore[return-value]
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(run_trial, trial, root, threads): n for n, trial in enumerate(trials)}
            for future in as_completed(futures):
                n = futures[future]
                records[n] = future.result()
                on_done(trials[n], records[n])
        return records  # type: ignore[return-value]


def make_backend(name: str, workers: int | None = 1, address: str | None = None, resources: Any = None) -> Backend:
    """``workers`` None: one process locally, as many trials as the cluster's resources allow on Ray;
    ``resources`` (the config's ``ResourcesConfig``) is what each Ray trial asks for."""
    if name == "local":
        return LocalBackend(workers or 1)
    if name == "ray":
        from modalrec.experiments.ray_backend import RayBackend

        return RayBackend(workers=workers, address=address, resources=resources)
    from modalrec.errors import ConfigError

    raise ConfigError(f"unknown backend {name!r}", hint="choose local or ray")
