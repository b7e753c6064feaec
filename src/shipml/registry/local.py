"""Durable file operations for the local registry: fsync'd writes, atomic replace, atomic directory moves."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

STAGING = ".staging"
STALE_AFTER_S = 24 * 3600


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory below ``root`` (and ``root`` itself)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(Path(dirpath) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old or the new content, never a mix. The file
    has ``mode`` from its creation (whatever the umask), so a private file is never readable by others."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def append_line(path: Path, line: bytes) -> None:
    with path.open("ab") as f:
        f.write(line.rstrip(b"\n") + b"\n")
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def locked(directory: Path, timeout: float = 60.0) -> Iterator[None]:
    """An inter-process lock on ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / ".lock"), timeout=timeout):
        yield


@contextlib.contextmanager
def staging_dir(root: Path) -> Iterator[Path]:
    """A fresh directory on the registry's filesystem (so a rename into place is atomic), removed afterwards
    unless it was moved away. Leftovers of killed processes are swept once they are a day old."""
    base = root / STAGING
    base.mkdir(parents=True, exist_ok=True)
    sweep_stale(base)
    path = base / f"{uuid.uuid4().hex}.{os.getpid()}"
    path.mkdir()
    try:
        yield path
    finally:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


def sweep_stale(base: Path) -> None:
    cutoff = time.time() - STALE_AFTER_S
    for child in base.iterdir():
        with contextlib.suppress(OSError):
            if child.stat().st_mtime < cutoff:
                shutil.rmtree(child, ignore_errors=True)


def move_into_place(src: Path, dest: Path) -> None:
    """Atomically move the finished directory ``src`` to ``dest``, which must not exist."""
    fsync_tree(src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():  # rename(2) would silently replace an empty directory
        raise FileExistsError(dest)
    os.rename(src, dest)
    fsync_dir(dest.parent)


def remove_atomically(path: Path, root: Path) -> None:
    """Make ``path`` disappear in one step (rename into staging), then delete it."""
    trash = root / STAGING / f"deleted-{uuid.uuid4().hex}"
    trash.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, trash)
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)
