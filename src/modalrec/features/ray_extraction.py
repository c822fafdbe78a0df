"""Feature extraction on Ray Data: the same batches, an actor pool, the same feature store.

The extraction loop (``extraction.extract_items``) stays in charge of everything but encoding:
inputs, fingerprint, cache hits, the ``.partial/`` chunk files and the final assembly. This module
only replaces *how the missing batches are encoded*: each batch (a ``(start, end)`` range of the
items to encode, exactly the ranges the local loop would encode) becomes one row of a Ray Data
dataset, and ``map_batches`` with ``batch_size=1`` hands each row to an actor of a fixed-size pool.
Each actor builds the extractor once in ``__init__`` (one model load per actor). The driver writes
each batch's chunk file as soon as it arrives, so an interrupted run resumes from every finished
batch, and the chunks are merged in item order as locally. Same batch composition on the same
kind of device gives the same floats, so the stored matrix is byte-identical to a local run's.

Failed batches are retried. A dead actor (worker or node lost) is restarted by Ray and its batch
re-run (Ray Data's actor fault tolerance); an exception in ``encode`` (a transient CUDA or I/O
error) is retried in the actor up to ``max_retries`` times before the run stops, keeping every
finished chunk for the next run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.errors import ConfigError, FeatureError, ModalrecError
from modalrec.features.extraction import ExtractionResult, extract
from modalrec.features.registry import EncodedBatch, Extractor, get_extractor
from modalrec.ray_support import cluster_resources, connect

log = logging.getLogger(__name__)

ExtractorFactory = Callable[[], Extractor]
MAX_BLOCKS = 4096
"""Batches per Ray Data block stay 1 up to this many batches (finer retries and progress)."""


class EncodeActor:
    """An actor of the pool: builds its extractor once, then encodes one batch per call.

    Rows carry pickled inputs and results (the inputs may be any Python objects: texts, image
    paths, prompt records), so Ray Data never has to guess a column type.
    """

    def __init__(self, factory: ExtractorFactory, threads: int | None = None, retries: int = 3) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.extractor = factory()
        self.retries = retries

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads = []
        for start, blob in zip(batch["start"], batch["values"]):
            encoded = self._encode(int(start), pickle.loads(blob))
            payloads.append(pickle.dumps((encoded.vectors, encoded.ok, list(encoded.errors))))
        return {"start": batch["start"], "end": batch["end"], "payload": np.array(payloads, dtype=object)}

    def _encode(self, start: int, values: list[Any]) -> EncodedBatch:
        for attempt in range(self.retries + 1):
            try:
                return self.extractor.encode(values)
            except ModalrecError:
                raise  # bad input or missing weights: another try cannot help
            except Exception as error:
                if attempt == self.retries:
                    raise
                log.warning("batch at %d failed (%s); retry %d of %d", start, error, attempt + 1, self.retries)
        raise AssertionError("unreachable")


def registry_factory(extractor: Extractor) -> ExtractorFactory:
    """Rebuild ``extractor`` from the registry by name and options (what the actors run)."""
    try:
        rebuilt = get_extractor(extractor.name, extractor.options)
    except ConfigError:
        rebuilt = None
    if type(rebuilt) is not type(extractor):
        raise ConfigError(f"extractor {extractor.name!r} cannot be rebuilt from the registry on Ray workers",
                          hint="pass factory= (a picklable function that builds it) to RayBatchEncoder")
    return functools.partial(get_extractor, extractor.name, extractor.options)


class RayBatchEncoder:
    """A ``BatchEncoder`` that encodes batches on an actor pool of ``workers`` actors.

    ``workers`` None: as many actors as the cluster has room for (GPUs when each actor takes a
    GPU, else CPUs). Each actor asks for ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs
    (None: one when the extractor's device is CUDA). With no ``address`` and no Ray session in
    this process, a local instance with ``workers x cpus_per_worker`` CPUs is started.
    """

    def __init__(self, workers: int | None = None, address: str | None = None,
                 factory: ExtractorFactory | None = None, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float | None = None, max_retries: int = 3) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}", where="--workers")
        if cpus_per_worker <= 0 or (gpus_per_worker is not None and gpus_per_worker < 0) or max_retries < 0:
            raise ConfigError("cpus_per_worker must be positive, gpus_per_worker and max_retries non-negative")
        self.workers = workers
        self.address = address
        self.factory = factory
        self.cpus = cpus_per_worker
        self.gpus = gpus_per_worker
        self.max_retries = max_retries

    def __call__(self, extractor: Extractor, values: list[Any], ranges: list[tuple[int, int]]
                 ) -> Iterator[tuple[int, int, EncodedBatch]]:
        if not ranges:
            return
        factory = self.factory or registry_factory(extractor)
        gpus = self.gpus
        if gpus is None:
            gpus = 1.0 if str(extractor.options.device).startswith("cuda") else 0.0
        local_cpus = None if self.workers is None else max(1, round(self.workers * self.cpus))
        ray = connect(self.address, num_cpus=local_cpus)
        size = min(self.workers or self._room(gpus), len(ranges))
        log.info("encoding %d batches on %d Ray actor(s) (%s CPU, %s GPU each)", len(ranges), size, self.cpus, gpus)
        rows = [{"start": start, "end": end, "values": pickle.dumps(values[start:end])} for start, end in ranges]
        with _quiet_progress(ray):
            dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
            encoded = dataset.map_batches(
                EncodeActor, batch_size=1, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=size),
                fn_constructor_kwargs={"factory": factory, "threads": max(1, int(self.cpus)),
                                       "retries": self.max_retries},
                num_cpus=self.cpus, num_gpus=gpus,
            )
            try:
                for row in encoded.iter_rows():
                    vectors, ok, errors = pickle.loads(row["payload"])
                    yield int(row["start"]), int(row["end"]), EncodedBatch(vectors, ok, errors)
            except ray.exceptions.RayError as error:
                raise _failure(error, self.max_retries) from None

    def _room(self, gpus: float) -> int:
        resources = cluster_resources()
        if gpus > 0:
            return max(1, int(resources.get("GPU", 0) // gpus))
        return max(1, int(resources.get("CPU", 1) // self.cpus))


@contextlib.contextmanager
def _quiet_progress(ray: Any) -> Iterator[None]:
    """Leave the progress bar to the extraction loop (one bar, in items); restored after."""
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars
    context.enable_progress_bars = False
    try:
        yield
    finally:
        context.enable_progress_bars = saved


def _failure(error: BaseException, retries: int) -> ModalrecError:
    """The user's own error when it is one (e.g. missing weights on a worker), else a FeatureError."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ModalrecError):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return FeatureError(f"a batch failed on Ray after {retries} retries: {error}",
                        hint="finished batches are kept; rerun the same command to resume")


def extract_ray(dataset_dir: str | Path, extractor: Extractor, *, workers: int | None = None,
                address: str | None = None, factory: ExtractorFactory | None = None,
                max_retries: int = 3, **options: Any) -> ExtractionResult:
    """``extraction.extract`` with the batches encoded on Ray (same arguments otherwise)."""
    encoder = RayBatchEncoder(workers=workers, address=address, factory=factory, max_retries=max_retries)
    return extract(dataset_dir, extractor, encode_batches=encoder, **options)
