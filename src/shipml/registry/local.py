"""Durable file operations shared by the registry, the token store and deploy outputs: fsync'd writes, atomic
replace, an inter-process lock. The registry's own files go through :mod:`shipml.registry.files`, which adds the
checks against symbolic links below its root."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock


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


@contextlib.contextmanager
def replacing(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A new file to write that replaces ``path`` when the block ends, fsync'd, so that a reader sees the old or
    the new content, never a mix (nothing changes if the block raises). The file has ``mode`` from its creation
    (whatever the umask), so a private file is never readable by others."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (see :func:`replacing`)."""
    with replacing(path, mode) as f:
        f.write(data)


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
