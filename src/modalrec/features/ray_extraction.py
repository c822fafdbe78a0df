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
from collections.abc import Callable, Iterator, Sequence
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
RESUME_HINT = "finished batches are kept; rerun the same command to resume (Ray's worker logs have the traceback)"
"""Batches per Ray Data block stay 1 up to this many batches (finer retries and progress)."""


class BatchActor:
    """An actor of the pool: builds its model once (``factory()``), then runs one batch per call.

    Rows carry a pickled payload and come back with a pickled result (payloads may be any Python
    objects: texts, image paths, prompt records), so Ray Data never has to guess a column type.
    An exception other than a ``ModalrecError`` (bad input, missing weights) is retried here up to
    ``retries`` times; a dead actor is restarted and its batch re-run by Ray Data. A batch that
    still fails comes back as an error result, so the driver can report it in one clear line.
    """

    def __init__(self, factory: Callable[[], Any], call: Callable[[Any, Any], Any], threads: int | None = None,
                 retries: int = 3) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.model = factory()
        self.call = call
        self.retries = retries

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        for index, blob in zip(batch["index"], batch["payload"]):
            try:
                outcome: tuple[str, Any] = ("ok", self._run(int(index), pickle.loads(blob)))
            except Exception as error:
                log.exception("batch %d failed", int(index))
                modalrec = isinstance(error, ModalrecError)
                outcome = ("error", (type(error) if modalrec else None,
                                     error.message if modalrec else f"{type(error).__name__}: {error}",
                                     getattr(error, "where", None), getattr(error, "hint", None)))
            results.append(pickle.dumps(outcome))
        return {"index": batch["index"], "result": np.array(results, dtype=object)}

    def _run(self, index: int, payload: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return self.call(self.model, payload)
            except ModalrecError:
                raise  # bad input or missing weights: another try cannot help
            except Exception as error:
                if attempt == self.retries:
                    raise
                log.warning("batch %d failed (%s); retry %d of %d", index, error, attempt + 1, self.retries)
        raise AssertionError("unreachable")


def map_on_actors(factory: Callable[[], Any], call: Callable[[Any, Any], Any], payloads: Sequence[Any], *,
                  workers: int | None = None, address: str | None = None, cpus_per_worker: float = 1.0,
                  gpus_per_worker: float = 0.0, max_retries: int = 3) -> Iterator[tuple[int, Any]]:
    """``(index, call(model, payloads[index]))`` for every payload, in completion order, computed by
    a pool of ``workers`` actors that each build ``model = factory()`` once (Ray Data
    ``map_batches`` with an ``ActorPoolStrategy``; one payload per batch, so batch composition is
    exactly the caller's). ``workers`` None: as many actors as the cluster has room for. Both
    ``factory`` and ``call`` must be picklable (module-level functions or ``functools.partial``).
    """
    if not payloads:
        return
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}", where="--workers")
    if cpus_per_worker <= 0 or gpus_per_worker < 0 or max_retries < 0:
        raise ConfigError("cpus_per_worker must be positive, gpus_per_worker and max_retries non-negative")
    local_cpus = None if workers is None else max(1, round(workers * cpus_per_worker))
    ray = connect(address, num_cpus=local_cpus)
    size = min(workers or _room(cpus_per_worker, gpus_per_worker), len(payloads))
    log.info("running %d batches on %d Ray actor(s) (%s CPU, %s GPU each)", len(payloads), size,
             cpus_per_worker, gpus_per_worker)
    rows = [{"index": n, "payload": pickle.dumps(payload)} for n, payload in enumerate(payloads)]
    with _quiet_progress(ray):
        dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
        results = dataset.map_batches(
            BatchActor, batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=size),
            fn_constructor_kwargs={"factory": factory, "call": call, "threads": max(1, int(cpus_per_worker)),
                                   "retries": max_retries},
            num_cpus=cpus_per_worker, num_gpus=gpus_per_worker,
        )
        failed = f"a batch failed on Ray after {max_retries} retries"
        try:
            for row in results.iter_rows():
                status, value = pickle.loads(row["result"])
                if status == "error":
                    cls, message, where, hint = value
                    if cls is not None:
                        raise cls(message, where=where, hint=hint)
                    raise FeatureError(f"{failed}: {message}", hint=RESUME_HINT)
                yield int(row["index"]), value
        except ray.exceptions.RayError as error:
            raise _failure(error, failed) from None


def _room(cpus: float, gpus: float) -> int:
    resources = cluster_resources()
    if gpus > 0:
        return max(1, int(resources.get("GPU", 0) // gpus))
    return max(1, int(resources.get("CPU", 1) // cpus))


def encode_batch(extractor: Extractor, values: list[Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """What an actor does with one extraction batch (plain arrays travel back to the driver)."""
    encoded = extractor.encode(values)
    return encoded.vectors, encoded.ok, list(encoded.errors)


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
    """A ``BatchEncoder`` (see ``extraction.extract``) that encodes on an actor pool of ``workers``.

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
        results = map_on_actors(factory, encode_batch, [values[start:end] for start, end in ranges],
                                workers=self.workers, address=self.address, cpus_per_worker=self.cpus,
                                gpus_per_worker=gpus, max_retries=self.max_retries)
        for index, (vectors, ok, errors) in results:
            start, end = ranges[index]
            yield start, end, EncodedBatch(vectors, ok, errors)


def run_generator_batch(generator: Any, items: list[Any], poolings: tuple[str, ...], layer: int) -> Any:
    """What an actor does with one ``describe run`` batch: generate and pool (a ``BatchResult``)."""
    return generator.run(items, poolings, layer)


def generator_info(loader: Callable[[], Any]) -> dict[str, Any]:
    """The loaded generator's ``describe()`` (run as a Ray task, where the GPUs are)."""
    return loader().describe()


class RayGenerator:
    """Stands in for a loaded ``GenerativeEmbedder`` in ``descriptions.run_descriptions``: the model
    is loaded only by the actors of a pool (``loader()`` once per actor, ``gpus_per_worker`` GPUs
    each), never on the driver. ``run_batches`` runs the same batches as a local run would;
    ``describe()`` loads the model once in a Ray task for the manifest.

    ``loader`` is a picklable ``functools.partial`` of ``load_lvlm`` or ``load_text_llm``;
    ``route``, ``model_id`` and ``dtype`` are what ``run_descriptions`` reads before the run.
    """

    def __init__(self, loader: Callable[[], Any], *, route: str, model_id: str, dtype: str,
                 workers: int | None = None, address: str | None = None, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float = 0.0, max_retries: int = 3) -> None:
        self.loader = loader
        self.route = route
        self.model_id = model_id
        self.dtype = dtype
        self.options = {"workers": workers, "address": address, "cpus_per_worker": cpus_per_worker,
                        "gpus_per_worker": gpus_per_worker, "max_retries": max_retries}
        self._info: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        if self._info is None:
            local_cpus = None if self.options["workers"] is None else max(
                1, round(self.options["workers"] * self.options["cpus_per_worker"]))
            ray = connect(self.options["address"], num_cpus=local_cpus)
            task = ray.remote(generator_info).options(num_cpus=self.options["cpus_per_worker"],
                                                      num_gpus=self.options["gpus_per_worker"])
            try:
                self._info = ray.get(task.remote(self.loader))
            except ray.exceptions.RayError as error:
                raise _failure(error, "loading the model on Ray failed") from None
        return self._info

    def run_batches(self, batches: list[list[Any]], poolings: Sequence[str], layer: int
                    ) -> Iterator[tuple[int, Any]]:
        """``(index, BatchResult)`` for every batch, in completion order."""
        call = functools.partial(run_generator_batch, poolings=tuple(poolings), layer=layer)
        return map_on_actors(self.loader, call, batches, **self.options)


@contextlib.contextmanager
def _quiet_progress(ray: Any) -> Iterator[None]:
    """Leave the progress bar to the caller's loop (one bar, in items); restored after."""
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars
    context.enable_progress_bars = False
    try:
        yield
    finally:
        context.enable_progress_bars = saved


def _failure(error: BaseException, what: str) -> ModalrecError:
    """The user's own error when it is one (e.g. missing weights on a worker), else a one-line
    FeatureError naming the innermost cause (Ray's own message carries the whole traceback)."""
    seen: BaseException | None = error
    innermost = error
    while seen is not None:
        if isinstance(seen, ModalrecError):
            return seen
        innermost = seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    lines = str(innermost).strip().splitlines() or [""]
    return FeatureError(f"{what}: {type(innermost).__name__}: {lines[-1]}", hint=RESUME_HINT)


def extract_ray(dataset_dir: str | Path, extractor: Extractor, *, workers: int | None = None,
                address: str | None = None, factory: ExtractorFactory | None = None,
                max_retries: int = 3, **options: Any) -> ExtractionResult:
    """``extraction.extract`` with the batches encoded on Ray (same arguments otherwise)."""
    encoder = RayBatchEncoder(workers=workers, address=address, factory=factory, max_retries=max_retries)
    return extract(dataset_dir, extractor, encode_batches=encoder, **options)
