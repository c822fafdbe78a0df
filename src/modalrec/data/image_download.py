"""Concurrent, resumable downloads over HTTP: item images, and single large files.

Multimodal data sets ship image *URLs*; a study needs the images on disk, tens of thousands of them,
fetched from servers that time out, rate-limit and sometimes serve a 404 or a broken file. This
module turns a list of ``(item_id, url)`` into ``out/images/<item_id>.<ext>`` with:

- a thread pool of ``workers`` threads, each holding at most one connection (so the number of open
  connections is bounded);
- separate connect and read timeouts, and retries with exponential back-off and seeded jitter
  (transient failures only: timeouts, network errors, HTTP 408/429/5xx);
- resumability: an image already on disk that Pillow can decode is not fetched again; bytes go to a
  temporary ``.part`` name, are decoded, and only then renamed, so a half file never carries a
  final name;
- failures (HTTP 404, timeouts, bytes that are not an image, ...) recorded per item with a reason,
  written to a Parquet report and summarised in the log; the item simply has no image.

Only the standard library's ``urllib`` is used (proxies from the environment are honoured), and
only ``http``/``https`` URLs are fetched: a ``file://`` URL in a data file must never read local
files. One download per folder at a time: stale ``.part`` files are removed at start.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import logging
import os
import random
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
from tqdm.auto import tqdm

from modalrec import __version__, io
from modalrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

USER_AGENT = f"modalrec/{__version__} (research data download; Python urllib)"
IMAGE_DIR = "images"
FAILURE_REPORT = "image_failures.parquet"
#: Pillow format name -> file extension of the saved image.
FORMATS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif",
           "MPO": "jpg"}
EXTENSIONS = frozenset(FORMATS.values()) | {"jpeg", "tiff"}
#: HTTP statuses worth another try; any other 4xx is permanent.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_SAFE_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,150}$")

FAILURE_COLUMNS = ["item_id", "url", "kind", "reason", "attempts"]


# --- results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageResult:
    """What happened to one item: ``status`` is 'downloaded', 'present' (already on disk) or 'failed'.

    ``kind`` classifies a failure: 'missing' (HTTP 404/410), 'http' (another status), 'timeout',
    'network', 'corrupt' (not decodable), 'too_large' or 'bad_url'.
    """

    item_id: str
    url: str
    path: Path | None
    status: str
    kind: str | None = None
    reason: str | None = None
    attempts: int = 0


@dataclass
class DownloadReport:
    """All per-item results, in input order, plus where the failure report was written."""

    results: list[ImageResult]
    report_path: Path | None = None
    counts: Counter[str] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = Counter(r.status for r in self.results)

    @property
    def failed(self) -> list[ImageResult]:
        return [r for r in self.results if r.status == "failed"]

    def paths(self) -> dict[str, Path | None]:
        """item_id -> image file (None where the image could not be had)."""
        return {r.item_id: r.path for r in self.results}

    def failures(self) -> pd.DataFrame:
        rows = [{"item_id": r.item_id, "url": r.url, "kind": r.kind, "reason": r.reason,
                 "attempts": r.attempts} for r in self.failed]
        return pd.DataFrame(rows, columns=FAILURE_COLUMNS).astype(
            {"item_id": str, "url": str, "kind": str, "reason": str, "attempts": "int64"})

    def summary(self) -> dict[str, Any]:
        return {
            "requested": len(self.results),
            "downloaded": self.counts.get("downloaded", 0),
            "present": self.counts.get("present", 0),
            "failed": self.counts.get("failed", 0),
            "failed_by_kind": dict(sorted(Counter(r.kind for r in self.failed).items())),
            "report": None if self.report_path is None else str(self.report_path),
        }


class _Failure(Exception):
    """One attempt failed; ``retryable`` says whether another attempt may succeed."""

    def __init__(self, kind: str, reason: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.kind, self.reason, self.retryable, self.retry_after = kind, reason, retryable, retry_after


# --- helpers ----------------------------------------------------------------------------------------
def image_stem(item_id: str) -> str:
    """A file stem for ``item_id`` that is safe on every file system and unique per id.

    Ids made of letters, digits, ``_ . -`` (Amazon ASINs, numeric ids) are used as they are; any other
    id is reduced to its safe characters plus a short hash, so two ids never share a file.
    """
    if _SAFE_STEM.match(item_id) and not item_id.endswith("."):
        return item_id
    digest = hashlib.sha1(item_id.encode("utf-8")).hexdigest()[:12]
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", item_id).strip("._")[:80]
    return f"{cleaned}-{digest}" if cleaned else f"id-{digest}"


def image_format(path: Path) -> str | None:
    """Pillow's format name if ``path`` fully decodes as an image, else None (corrupt, truncated)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            fmt = image.format
            image.load()
        return fmt
    except Exception:  # Pillow raises many types (OSError, SyntaxError, DecompressionBombError, ...)
        return None


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random, jitter: float = 0.5) -> float:
    """Exponential back-off ``base * 2**attempt`` capped at ``cap``, stretched by up to ``jitter``.

    Jitter spreads the retries of many workers hitting one overloaded server; ``rng`` is seeded per
    item, so the schedule is reproducible whatever the thread interleaving.
    """
    return min(cap, base * (2.0**attempt)) * (1.0 + jitter * rng.random())


def _retry_after(headers: Any, cap: float) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if value and str(value).strip().isdigit():
        return min(cap, float(value))
    return None


class _TimedHTTPConnection(http.client.HTTPConnection):
    """Connect within ``timeout``, then wait at most ``read_timeout`` for each read."""

    def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self._read_timeout)


class _TimedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self._read_timeout)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, read_timeout: float) -> None:
        super().__init__()
        self._read_timeout = read_timeout

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_TimedHTTPConnection, read_timeout=self._read_timeout), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, read_timeout: float) -> None:
        super().__init__()
        self._read_timeout = read_timeout

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_TimedHTTPSConnection, read_timeout=self._read_timeout), req,
                            context=self._context)


def _opener(read_timeout: float) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_HTTPHandler(read_timeout), _HTTPSHandler(read_timeout))


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise _Failure("bad_url", f"not an http(s) URL: {url[:200]!r}", retryable=False)


def _classify(error: BaseException, cap: float) -> _Failure:
    """Map an exception from one attempt to a failure kind, and whether to try again."""
    if isinstance(error, _Failure):
        return error
    if isinstance(error, urllib.error.HTTPError):
        error.close()
        code = error.code
        kind = "missing" if code in (404, 410) else "http"
        return _Failure(kind, f"HTTP {code} {error.reason}", retryable=code in RETRY_STATUSES,
                        retry_after=_retry_after(error.headers, cap))
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, TimeoutError):
        return _Failure("timeout", f"timed out ({reason or 'no response'})", retryable=True)
    if isinstance(error, http.client.IncompleteRead):
        return _Failure("network", f"connection closed early ({len(error.partial)} bytes read)", retryable=True)
    if isinstance(error, (OSError, http.client.HTTPException)):
        return _Failure("network", f"{type(reason).__name__}: {reason}", retryable=True)
    if isinstance(error, ValueError):  # urllib/http.client reject the address itself
        return _Failure("bad_url", f"unusable URL: {error}", retryable=False)
    raise error


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# --- image download ---------------------------------------------------------------------------------
class _ImageFetcher:
    """Fetches one item's image with retries; shared by the worker threads (holds no per-item state)."""

    def __init__(self, folder: Path, *, connect_timeout: float, read_timeout: float, total_timeout: float,
                 retries: int, backoff: float, max_backoff: float, seed: int, max_bytes: int,
                 verify_existing: bool, existing: dict[str, list[Path]]) -> None:
        self.folder = folder
        self.opener = _opener(read_timeout)
        self.connect_timeout = connect_timeout
        self.total_timeout = total_timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.seed = seed
        self.max_bytes = max_bytes
        self.verify_existing = verify_existing
        self.existing = existing
        self.stop = threading.Event()

    def __call__(self, item_id: str, url: str) -> ImageResult:
        stem = image_stem(item_id)
        for path in self.existing.get(stem, []):
            if not self.verify_existing or image_format(path) is not None:
                return ImageResult(item_id, url, path, "present")
            log.debug("removing undecodable image %s before fetching it again", path)
            _remove_quietly(path)
        rng = random.Random(f"{self.seed}\0{item_id}")
        attempts = 0
        while True:
            attempts += 1
            try:
                _check_url(url)
                path = self._attempt(url, stem)
                return ImageResult(item_id, url, path, "downloaded", attempts=attempts)
            except Exception as error:  # noqa: BLE001 - classified below; unknown errors re-raise
                failure = _classify(error, self.max_backoff)
            if not failure.retryable or attempts > self.retries or self.stop.is_set():
                return ImageResult(item_id, url, None, "failed", failure.kind, failure.reason, attempts)
            delay = failure.retry_after or backoff_delay(attempts - 1, self.backoff, self.max_backoff, rng)
            log.debug("retrying %s in %.2f s after %s", url, delay, failure.reason)
            if self.stop.wait(delay):
                return ImageResult(item_id, url, None, "failed", failure.kind, failure.reason, attempts)

    def _attempt(self, url: str, stem: str) -> Path:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
        fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".part", dir=self.folder)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle, self.opener.open(request, timeout=self.connect_timeout) as response:
                expected = response.headers.get("Content-Length")
                expected = int(expected) if expected and expected.isdigit() else None
                if expected is not None and expected > self.max_bytes:
                    raise _Failure("too_large", f"{expected} bytes > limit {self.max_bytes}", retryable=False)
                deadline = time.monotonic() + self.total_timeout
                size = 0
                while chunk := response.read(1 << 16):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise _Failure("too_large", f"more than {self.max_bytes} bytes", retryable=False)
                    if time.monotonic() > deadline:
                        raise _Failure("timeout", f"transfer took longer than {self.total_timeout} s",
                                       retryable=True)
                    handle.write(chunk)
            if expected is not None and size != expected:
                raise _Failure("network", f"connection closed early ({size} of {expected} bytes)", retryable=True)
            fmt = image_format(tmp)
            if fmt is None:
                raise _Failure("corrupt", f"not a decodable image ({size} bytes)", retryable=False)
            target = self.folder / f"{stem}.{FORMATS.get(fmt, fmt.lower())}"
            os.replace(tmp, target)
            for other in self.existing.get(stem, []):
                if other != target:
                    _remove_quietly(other)
            return target
        finally:
            _remove_quietly(tmp)


def download_images(
    items: Iterable[tuple[str, str]],
    out: str | os.PathLike[str],
    *,
    workers: int = 16,
    connect_timeout: float = 10.0,
    read_timeout: float = 30.0,
    total_timeout: float = 120.0,
    retries: int = 3,
    backoff: float = 0.5,
    max_backoff: float = 30.0,
    seed: int = 0,
    max_bytes: int = 50 * 2**20,
    verify_existing: bool = True,
    report: str | os.PathLike[str] | None = FAILURE_REPORT,
    progress: bool = True,
) -> DownloadReport:
    """Fetch each ``(item_id, url)`` to ``out/images/<item_id>.<ext>`` (extension from the decoded format).

    ``retries`` is the number of extra attempts after the first for transient failures; the wait
    before retry ``n`` is ``backoff * 2**n`` seconds (capped at ``max_backoff``, honouring a server's
    ``Retry-After``) with jitter seeded by ``seed`` and the item id. ``report`` (relative to ``out``
    unless absolute; None for none) receives one row per failed item: item_id, url, kind, reason,
    attempts. It is rewritten on every run, so it always describes the latest one. Failed items are
    tried again on the next run; images already on disk (and decodable, unless ``verify_existing``
    is off) are not.
    """
    pairs = [(str(item_id), "" if url is None else str(url).strip()) for item_id, url in items]
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}", hint="pass --workers 16")
    if retries < 0:
        raise ConfigError(f"retries must be >= 0, got {retries}")
    seen: dict[str, str] = {}
    for item_id, _ in pairs:
        stem = image_stem(item_id)
        if stem in seen:
            raise DataError(f"item id {item_id!r} is listed twice (or shares its file name with {seen[stem]!r})",
                            hint="pass one URL per item")
        seen[stem] = item_id
    out = Path(out)
    folder = out / IMAGE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    existing = _scan(folder)
    fetcher = _ImageFetcher(folder, connect_timeout=connect_timeout, read_timeout=read_timeout,
                            total_timeout=total_timeout, retries=retries, backoff=backoff,
                            max_backoff=max_backoff, seed=seed, max_bytes=max_bytes,
                            verify_existing=verify_existing, existing=existing)
    results: list[ImageResult | None] = [None] * len(pairs)
    failed = 0
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modalrec-image")
    bar = tqdm(total=len(pairs), desc="images", unit="img", disable=not progress, leave=False)
    pending: dict[Future[ImageResult], int] = {}

    def collect(done: Iterable[Future[ImageResult]]) -> None:
        nonlocal failed
        for future in done:
            result = future.result()
            results[pending.pop(future)] = result
            failed += result.status == "failed"
            bar.update(1)
            if failed:
                bar.set_postfix(failed=failed, refresh=False)

    try:
        for index, (item_id, url) in enumerate(pairs):
            pending[pool.submit(fetcher, item_id, url)] = index
            if len(pending) >= 4 * workers:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                collect(done)
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            collect(done)
    except BaseException:
        fetcher.stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)
    report_path = None if report is None else out / report
    outcome = DownloadReport([r for r in results if r is not None], report_path)
    if report_path is not None:
        io.write_parquet(report_path, outcome.failures())
    _log_summary(outcome)
    return outcome


def _scan(folder: Path) -> dict[str, list[Path]]:
    """Images already in ``folder`` by stem (one directory listing, not one per item); drops stale parts."""
    found: dict[str, list[Path]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(".") and name.endswith(".part"):
                _remove_quietly(Path(entry.path))
                continue
            stem, dot, ext = name.rpartition(".")
            if dot and ext.lower() in EXTENSIONS and entry.is_file():
                found.setdefault(stem, []).append(Path(entry.path))
    return found


def _log_summary(outcome: DownloadReport) -> None:
    summary = outcome.summary()
    text = (f"images: {summary['downloaded']} downloaded, {summary['present']} already present, "
            f"{summary['failed']} failed")
    if summary["failed"]:
        kinds = ", ".join(f"{n} {kind}" for kind, n in summary["failed_by_kind"].items())
        log.warning("%s (%s); failures listed in %s", text, kinds, summary["report"] or "the returned report")
    else:
        log.info(text)


# --- single large file ------------------------------------------------------------------------------
def download_file(
    url: str,
    target: str | os.PathLike[str],
    *,
    connect_timeout: float = 30.0,
    read_timeout: float = 60.0,
    retries: int = 5,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    seed: int = 0,
    chunk_size: int = 1 << 20,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``target``, resumably and atomically; return ``target``.

    A complete ``target`` is never fetched again. Bytes go to ``target.part``; an interrupted
    transfer (this run's, after a retry, or an earlier run's) continues from there with an HTTP
    ``Range`` request when the server allows it, and starts over when it does not. The file is
    renamed to ``target`` only once its size matches what the server announced.
    """
    _check_scheme(url)
    target = Path(target)
    if target.exists():
        log.info("%s already present; not downloading it again", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    opener = _opener(read_timeout)
    rng = random.Random(f"{seed}\0{url}")
    attempts = 0
    while True:
        attempts += 1
        try:
            _fetch_into(opener, url, part, connect_timeout, chunk_size, progress, target.name)
            os.replace(part, target)
            log.info("downloaded %s (%d bytes)", target, target.stat().st_size)
            return target
        except Exception as error:  # noqa: BLE001 - classified below; unknown errors re-raise
            failure = _classify(error, max_backoff)
        if not failure.retryable or attempts > retries:
            hint = ("check the name and the address" if failure.kind == "missing"
                    else "check the network; run the command again to continue from the partial file")
            raise DataError(f"could not download {url}: {failure.reason} (after {attempts} attempt(s))",
                            where=str(target), hint=hint)
        delay = failure.retry_after or backoff_delay(attempts - 1, backoff, max_backoff, rng)
        log.warning("download of %s failed (%s); retrying in %.1f s", url, failure.reason, delay)
        time.sleep(delay)


def _check_scheme(url: str) -> None:
    try:
        _check_url(url)
    except _Failure as failure:
        raise ConfigError(failure.reason, hint="pass an http:// or https:// address") from None


def _fetch_into(opener: urllib.request.OpenerDirector, url: str, part: Path, connect_timeout: float,
                chunk_size: int, progress: bool, label: str) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = opener.open(request, timeout=connect_timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # our partial file does not fit what the server has: start over
            error.close()
            part.unlink()
            raise _Failure("http", "HTTP 416: partial file does not match; starting over", retryable=True) from None
        raise
    with response:
        if response.status == 206 and have:
            try:
                total = _total_size(response, have)
            except _Failure:
                part.unlink()  # the server would resume elsewhere than our partial file ends
                raise
            mode = "ab"
        else:
            if have:
                log.info("server ignored the resume request for %s; starting over", url)
            have, mode = 0, "wb"
            total = _total_size(response, 0)
        with open(part, mode) as handle, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                              unit_divisor=1024, desc=label, disable=not progress,
                                              leave=False) as bar:
            while chunk := response.read(chunk_size):
                handle.write(chunk)
                bar.update(len(chunk))
            handle.flush()
            os.fsync(handle.fileno())
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Failure("network", f"connection closed early ({size} of {total} bytes)", retryable=True)


def _total_size(response: http.client.HTTPResponse, have: int) -> int | None:
    content_range = response.headers.get("Content-Range")
    if response.status == 206 and content_range:
        match = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", content_range)
        if match:
            if int(match.group(1)) != have:
                raise _Failure("http", f"server resumed at byte {match.group(1)}, not {have}", retryable=True)
            return int(match.group(2)) if match.group(2) != "*" else None
    length = response.headers.get("Content-Length")
    return have + int(length) if length and length.isdigit() else None
