"""Where data lives: one data root, a writable cache beside it, checksums, clear missing-data errors.

Resolution order for the data root: explicit ``root`` argument (``--data-root``), else the
``RBGEO_DATA`` environment variable, else ``~/.cache/robustbench_geo``. Inside the root, folders use
torchvision's and PyG's own layouts (``MNIST/raw``, ``Cora/raw``, ...) plus ``npz/`` and ``prognn/``
for the attack-literature files, so existing downloads are reused.

A read-only root (permission bits without write access, a read-only mount, or
``RBGEO_DATA_READONLY=1``) is never written to: the raw files a loader needs are checksummed and
copied into the cache (``RBGEO_CACHE``, else ``~/.cache/robustbench_geo``) and loaded from there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable

DEFAULT_ROOT = Path("~/.cache/robustbench_geo")


class DataMissingError(FileNotFoundError):
    """A dataset's files are missing and could not be downloaded; the message names them."""


class ChecksumError(ValueError):
    """A known raw file does not match its published checksum."""


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root``, else ``$RBGEO_DATA``, else ``~/.cache/robustbench_geo``."""
    if root is None:
        root = os.environ.get("RBGEO_DATA") or DEFAULT_ROOT
    return Path(root).expanduser().resolve()


def cache_root() -> Path:
    """Writable cache for processed files and for copies out of read-only roots."""
    return Path(os.environ.get("RBGEO_CACHE") or DEFAULT_ROOT).expanduser().resolve()


class CacheError(OSError):
    """The cache (``RBGEO_CACHE``) is a file or cannot be written; the message names it."""


def writable_cache(*parts: str) -> Path:
    """``cache_root() / parts``, created; raises :class:`CacheError` when that is impossible.

    Everything the package writes outside the user's output folders goes through here (copies of
    raw files out of read-only roots, sweep checkpoints), so a misconfigured ``RBGEO_CACHE`` is one
    clear message instead of a traceback from deep inside a loader.
    """
    root = cache_root()
    where = f"RBGEO_CACHE={os.environ['RBGEO_CACHE']}" if os.environ.get("RBGEO_CACHE") else f"the cache folder {root}"
    path = root.joinpath(*parts)
    if root.exists() and not root.is_dir():
        raise CacheError(f"{where} is a file, expected a folder; point RBGEO_CACHE at a writable folder")
    if not folder_writable(path):  # before mkdir: root may create folders inside a read-only one
        raise CacheError(f"{where} is not writable; point RBGEO_CACHE at a writable folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise CacheError(f"{where}: {path} cannot be a folder (a file is in the way)") from None
    except OSError as e:
        raise CacheError(f"{where} is not writable ({e.strerror}); point RBGEO_CACHE at a writable folder") from None
    if not folder_writable(path):
        raise CacheError(f"{where} is not writable; point RBGEO_CACHE at a writable folder")
    return path


def is_writable(path: Path) -> bool:
    """Whether we may write below ``path`` (``RBGEO_DATA_READONLY=1`` makes every data root read-only).

    Root passes ``os.access`` on read-only permission bits, so the bits are checked too: a folder
    marked read-only for everyone is treated as read-only even for root.
    """
    if os.environ.get("RBGEO_DATA_READONLY", "") not in ("", "0"):
        return False
    return folder_writable(path)


def folder_writable(path: Path) -> bool:
    """Whether the nearest existing folder of ``path`` is writable (permission bits, mount, access)."""
    p = Path(path)
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    try:
        st = p.stat()
        if hasattr(os, "statvfs") and os.statvfs(p).f_flag & os.ST_RDONLY:
            return False
    except OSError:
        return False
    if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return False
    return os.access(p, os.W_OK)


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, md5: str | None) -> None:
    """Raise :class:`ChecksumError` if ``path`` does not have checksum ``md5`` (``None`` skips)."""
    if md5 is None:
        return
    got = md5sum(path)
    if got != md5:
        raise ChecksumError(
            f"checksum mismatch for {path}: expected md5 {md5}, got {got}. The file is corrupt or a "
            f"different version; delete it and let it be downloaded again, or replace it with the original."
        )


def _part_file(dest: Path) -> Path:
    """A new, empty temporary file next to ``dest``, unique to this writer.

    Parallel sweep workers fetch the same raw files at once; with one shared ``dest.part`` the
    first worker's rename left the second's ``os.replace`` without a source (FileNotFoundError).
    Each writer fills its own file and renames it over ``dest`` atomically: readers see either no
    file or a whole one, and identical copies may replace each other.
    """
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    return Path(name)


def download(url: str, dest: Path, md5: str | None = None, timeout: float = 30.0) -> None:
    """Download ``url`` to ``dest`` atomically, then verify its checksum.

    A failed download leaves nothing behind: neither the partial file nor the folders made for it.
    """
    created = [p for p in [dest.parent, *dest.parent.parents] if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _part_file(dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
        verify(tmp, md5)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for folder in created:  # innermost first
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    os.replace(tmp, dest)


def prepare_files(
    dataset: str,
    root: Path,
    files: Iterable[tuple[str, str | None, str | None]],
    *,
    download_missing: bool = True,
) -> Path:
    """Make ``files`` available under a writable working root and return that root.

    Args:
        dataset: name used in error messages.
        root: the data root (may be read-only).
        files: ``(relative path, md5 or None, url or None)`` for every raw file needed.
        download_missing: try to download files that are nowhere to be found.

    Returns:
        ``root`` itself when writable, else the cache root into which the raw files were copied.
    """
    files = list(files)
    work = root if is_writable(root) else writable_cache()
    missing = []
    for rel, md5, url in files:
        src, dst = root / rel, work / rel
        if dst.exists():
            verify(dst, md5)
            continue
        if src.exists():  # read-only root: copy into the cache, checked
            verify(src, md5)
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = _part_file(dst)
            try:
                shutil.copyfile(src, tmp)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, dst)
            continue
        if download_missing and url:
            try:
                download(url, dst, md5)
                continue
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                missing.append((rel, f"download failed: {e}"))
                continue
        missing.append((rel, "not found" + ("" if download_missing else " (downloads disabled)")))
    if missing:
        lines = "\n".join(f"  {root / rel}  ({why})" for rel, why in missing)
        error = DataMissingError(
            f"dataset {dataset!r}: missing files under the data root {root}:\n{lines}\n"
            f"Put these files there (or point --data-root / RBGEO_DATA at a folder that has them), "
            f"or run once with network access so they can be downloaded."
        )
        error.root, error.missing = root, [rel for rel, _ in missing]
        raise error
    return work
