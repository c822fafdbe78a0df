"""Downloads the user asks for (never at run time): MovieLens-100K from GroupLens.

A download streams to a temporary file beside its target, shows progress, checks the length the
server announced, the checksum and (for archives) every zip member's CRC, and only then renames
the file into place; an interrupted or corrupt download leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

from tqdm import tqdm

from modalrec import __version__
from modalrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_CHECKSUM = "md5:0e33842e24a9c977be4e0107933c0723"  # published by GroupLens (ml-100k.zip.md5)
ML100K_MEMBERS = ("ml-100k/u.data", "ml-100k/u.item")
_CHUNK = 1 << 16


def fetch(url: str, target: str | Path, *, checksum: str | None = None, zip_archive: bool = False,
          timeout: float = 60.0, progress: bool = True) -> Path:
    """Download ``url`` to ``target`` atomically.

    ``checksum`` is ``"md5:<hex>"`` or ``"sha256:<hex>"``; ``zip_archive`` also tests the archive.
    Any failure raises a DataError naming the URL and removes the partial file.
    """
    target = Path(target)
    algorithm, expected = _parse_checksum(checksum)
    created_parent = not target.parent.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        digest = hashlib.new(algorithm) if algorithm else None
        size = _stream(url, partial, digest, timeout, progress)
        if digest is not None and digest.hexdigest() != expected:
            raise DataError(f"checksum mismatch: expected {algorithm} {expected}, got {digest.hexdigest()}",
                            where=url, hint="the download is corrupt or the file changed upstream; try again")
        if zip_archive:
            _test_zip(partial, url)
        os.replace(partial, target)
        log.info("downloaded %s (%d bytes) to %s", url, size, target)
        return target
    finally:
        if partial.exists():
            partial.unlink()
        if created_parent and not target.exists():
            _remove_if_empty(target.parent)


def download_ml100k(out: str | Path, *, url: str = ML100K_URL, checksum: str | None = ML100K_CHECKSUM,
                    progress: bool = True) -> Path:
    """Fetch ``ml-100k.zip`` into ``out`` and extract it to ``out/ml-100k``; returns that folder.

    An existing complete ``out/ml-100k`` is kept as is (nothing is downloaded again).
    """
    out = Path(out)
    folder = out / "ml-100k"
    if all((out / member).is_file() for member in ML100K_MEMBERS):
        log.info("%s already holds ml-100k; not downloading again", folder)
        return folder
    if folder.exists():
        raise DataError("an incomplete ml-100k folder is in the way", where=str(folder),
                        hint="remove it (or choose another --out) and download again")
    created = not out.exists()
    archive = out / "ml-100k.zip"
    try:
        fetch(url, archive, checksum=checksum, zip_archive=True, progress=progress)
        _extract(archive, out, ML100K_MEMBERS, "ml-100k")
    except BaseException:
        if created and out.exists():
            if archive.exists():
                archive.unlink()
            _remove_if_empty(out)
        raise
    return folder


def _stream(url: str, path: Path, digest, timeout: float, progress: bool) -> int:
    request = urllib.request.Request(url, headers={"User-Agent": f"modalrec/{__version__}"})
    hint = "check the network connection, or download the file by hand"
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # the user chose the URL
    except urllib.error.HTTPError as error:
        raise DataError(f"download failed: HTTP {error.code} {error.reason}", where=url, hint=hint) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DataError(f"download failed: {reason}", where=url, hint=hint) from None
    with response:
        announced = int(response.headers.get("Content-Length") or 0) or None
        written = 0
        with open(path, "wb") as handle, tqdm(total=announced, unit="B", unit_scale=True,
                                                desc=Path(url).name or url, disable=not progress,
                                                leave=False) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (http.client.IncompleteRead, OSError) as error:
                    raise DataError(f"download interrupted after {written} bytes: {error!r}", where=url,
                                    hint=hint) from None
                if not chunk:
                    break
                handle.write(chunk)
                if digest is not None:
                    digest.update(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    if announced is not None and written != announced:
        raise DataError(f"download incomplete: got {written} of {announced} bytes", where=url, hint=hint)
    return written


def _test_zip(path: Path, url: str) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataError(f"not a valid zip archive: {error}", where=url, hint="download it again") from None
    if bad is not None:
        raise DataError(f"corrupt zip archive (bad CRC in {bad})", where=url, hint="download it again")


def _extract(archive: Path, out: Path, required: tuple[str, ...], top: str) -> None:
    """Extract the ``top`` folder of ``archive`` into ``out/top`` via a staging folder."""
    staging = out / f".{top}.extract-{uuid.uuid4().hex[:8]}"
    try:
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            missing = [m for m in required if m not in names]
            if missing:
                raise DataError(f"archive lacks {', '.join(missing)}", where=str(archive),
                                hint="this is not the MovieLens-100K archive")
            root = staging.resolve()
            for member in zf.infolist():
                destination = (staging / member.filename).resolve()
                if root not in destination.parents and destination != root:
                    raise DataError(f"unsafe path in archive: {member.filename}", where=str(archive))
            zf.extractall(staging)
        os.replace(staging / top, out / top)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _parse_checksum(checksum: str | None) -> tuple[str | None, str | None]:
    if not checksum:
        return None, None
    algorithm, _, value = checksum.partition(":")
    if algorithm not in ("md5", "sha256") or not value:
        raise ConfigError(f"checksum must look like md5:<hex> or sha256:<hex>, got {checksum!r}",
                        where="--checksum")
    return algorithm, value.lower()


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (or gone): leave it
        folder.rmdir()
