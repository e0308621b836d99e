"""How a learner rank's files (checkpoints, the final policy) reach the run's storage when the rank
may run on another machine than the driver.

The run's storage is a directory on the driver's disk (the default) or an fsspec URI
(`file:///shared/runs/x` on a shared filesystem, `s3://bucket/runs/x` with s3fs, ...). A rank is
told where to write, and never assumes it can see the driver's disk:

    target                 the rank                                        used when
    a local path           writes it (DeepSpeed's own files)               it runs on the driver's node
    a URI                  writes a node-local temporary directory, then   storage is a URI
                           uploads it file by file (fsspec)
    None                   writes a node-local temporary directory and     local storage, rank elsewhere
                           returns its files ({relative path: bytes}); the
                           driver writes them (they travel by Ray's object store)

Loading mirrors it: a local path is read in place; a URI is downloaded into a node-local
temporary directory; shipped files are unpacked into one. The driver decides which (driver/storage.py).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TypeVar

import fsspec

logger = logging.getLogger("learner")
T = TypeVar("T")
Files = dict[str, bytes]  # relative POSIX path -> content


def is_uri(location: str) -> bool:
    """True for `scheme://...` (file:// included), False for a plain path."""
    return "://" in location


def check_writable(location: str) -> None:
    """ValueError in one line when `location` (a path or URI) has no fsspec backend here or a file
    cannot be written and removed there (so a bad storage fails before training, not at the
    first checkpoint)."""
    try:
        fs, root = fsspec.core.url_to_fs(location)
    except (ImportError, ValueError) as err:
        raise ValueError(f"storage {location!r}: {str(err).splitlines()[0]}") from None
    probe = f"{root.rstrip('/')}/.storage-probe-{os.getpid()}"
    try:
        fs.makedirs(root, exist_ok=True)
        fs.pipe_file(probe, b"ok")
        fs.rm_file(probe)
    except Exception as err:  # any backend's error: reported in one line, never swallowed
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(
            f"storage {location!r} cannot be written ({type(err).__name__}: {first}); check the path or URI and "
            "its credentials (docs/deploy.md, Run storage)"
        ) from None


def pack(directory: Path) -> Files:
    """Every file under `directory`, keyed by its relative POSIX path."""
    return {f.relative_to(directory).as_posix(): f.read_bytes() for f in sorted(directory.rglob("*")) if f.is_file()}


def unpack(files: Files, directory: Path) -> None:
    """Write `files` under `directory`; a key leaving it (absolute, or with '..') is refused."""
    for name, data in files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"refusing to write {name!r} outside {directory}")
        path = directory.joinpath(*relative.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def upload(directory: Path, uri: str) -> int:
    """Copy every file under `directory` to the same relative path under `uri` (the backend's own
    recursive put: s3fs uploads files concurrently); returns the bytes sent."""
    fs, root = fsspec.core.url_to_fs(uri)
    files = [f for f in directory.rglob("*") if f.is_file()]
    if files:
        fs.put(str(directory) + "/", root.rstrip("/"), recursive=True)
    return sum(f.stat().st_size for f in files)


def download(uri: str, directory: Path) -> int:
    """Copy every file under `uri` to the same relative path under `directory`; returns the bytes
    read. FileNotFoundError when `uri` holds no file."""
    fs, root = fsspec.core.url_to_fs(uri)
    root = root.rstrip("/")
    if not [p for p in fs.find(root) if p != root]:
        raise FileNotFoundError(f"no files under {uri}")
    directory.mkdir(parents=True, exist_ok=True)
    fs.get(root + "/", str(directory) + "/", recursive=True)
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def save_staged(target: str | None, write: Callable[[str], None]) -> Files | None:
    """`write(directory)` where `target` says (module docstring); the files when `target` is None."""
    if target is not None and not is_uri(target):
        write(target)
        return None
    with tempfile.TemporaryDirectory(prefix="learner-save-") as staging:
        write(staging)
        if target is None:
            return pack(Path(staging))
        sent = upload(Path(staging), target)
        logger.info("uploaded %.1f MiB to %s", sent / (1 << 20), target)
        return None


def load_staged(source: str, files: Files | None, read: Callable[[str], T]) -> T:
    """`read(directory)` of `source` in place, of its download (a URI) or of the shipped `files`."""
    if files is None and not is_uri(source):
        return read(source)
    with tempfile.TemporaryDirectory(prefix="learner-load-") as staging:
        if files is not None:
            unpack(files, Path(staging))
        else:
            got = download(source, Path(staging))
            logger.info("downloaded %.1f MiB from %s", got / (1 << 20), source)
        return read(staging)
