"""The run's storage as the driver sees it: where each learner rank writes and reads checkpoint
files, and the copy of the run directory kept beside the checkpoints (config `storage`).

    storage unset (default)   checkpoints under OUTPUT/checkpoints on the driver's disk. A rank on
                              the driver's node writes them in place; a rank on another node
                              returns its files, which the driver writes (and, to load, is sent
                              the checkpoint's files through the object store).
    storage set               checkpoints under STORAGE/checkpoints, written and read by every rank
                              itself (a directory all nodes see, or an fsspec URI); the run
                              directory (metrics, samples, config, final policy, ...) is copied to
                              STORAGE at every checkpoint and at the end, so a driver on another
                              machine continues it with `python -m driver --resume STORAGE`.

learner/storage.py carries the files; this module only decides, per rank, which way they go.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fsspec
import ray
from upath import UPath

from driver.checkpoints import is_local
from driver.resume import SUMMARY_FILE
from learner import storage as files_io

logger = logging.getLogger("driver")
SKIPPED = ("checkpoints",)  # kept in STORAGE by the ranks themselves


def this_node() -> str:
    return ray.get_runtime_context().get_node_id()


def location_text(path: UPath) -> str:
    """What a rank is told: an absolute path on a filesystem (resolved here: a rank's working
    directory is not the driver's; file:// too: shared storage is mounted at the same path on
    every node), else the URI."""
    return str(Path(path.path).resolve()) if is_local(path) else str(path)


def save_targets(nodes: Sequence[str], directory: UPath, shared: bool) -> list[str | None]:
    """Per rank (on `nodes`): where it writes files meant for `directory` (None: return them)."""
    here = this_node()
    text = location_text(directory)
    return [text if shared or node == here else None for node in nodes]


def write_returned(returned: Sequence[files_io.Files | None], directory: UPath) -> int:
    """Write the files ranks returned into `directory` (local to the driver); returns how many."""
    count = 0
    for files in returned:
        if files:
            files_io.unpack(files, Path(directory.path))
            count += len(files)
    if count:
        logger.info("learner ranks on other nodes sent %d files for %s", count, directory)
    return count


def load_arguments(nodes: Sequence[str], checkpoint: UPath, shared: bool) -> list[tuple[str, Any]]:
    """Per rank: (source, files or None). Ranks off the driver's node get the checkpoint's files,
    packed once and put in the object store once, unless the checkpoint is in shared storage."""
    here = this_node()
    text = location_text(checkpoint)
    if shared or all(node == here for node in nodes):
        return [(text, None) for _ in nodes]
    shipped = ray.put(files_io.pack(Path(checkpoint.path)))
    logger.info("sending checkpoint %s to learner ranks on other nodes through the object store", checkpoint)
    return [(text, None if node == here else shipped) for node in nodes]


def mirror(output: Path, storage: str) -> int:
    """Copy the run directory to `storage` (every file but the lock, temporaries and local
    checkpoints; summary.json, which marks a run finished, last); returns the bytes copied."""
    fs, root = fsspec.core.url_to_fs(storage)
    root = root.rstrip("/")
    sent = 0
    for file in sorted(output.rglob("*"), key=lambda f: (f.name == SUMMARY_FILE, str(f))):
        relative = file.relative_to(output)
        if not file.is_file() or relative.parts[0] in SKIPPED or any(part.startswith(".") for part in relative.parts):
            continue
        remote = f"{root}/{relative.as_posix()}"
        fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(file), remote)
        sent += file.stat().st_size
    return sent


def fetch_records(storage: str, output: Path) -> int:
    """The run directory's copy in `storage` (all but its checkpoints) into `output`; returns the
    number of files. FileNotFoundError when `storage` holds no run (no config.yaml)."""
    fs, root = fsspec.core.url_to_fs(storage)
    root = root.rstrip("/")
    if not fs.exists(f"{root}/config.yaml"):
        raise FileNotFoundError(f"{storage} holds no run (no config.yaml there)")
    count = 0
    for remote in fs.find(root):
        relative = remote[len(root) + 1 :]
        if not relative or relative.split("/", 1)[0] in SKIPPED:
            continue
        local = output / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(local))
        count += 1
    return count
