"""Every file operation the local registry makes below its root, none of which follows a symbolic link.

The root itself may be a link (``~/.shipml -> /data/shipml`` is a user's choice). Below it, every path the
registry creates, opens, renames or deletes - ``models/``, a model's directory, ``versions/``, a version's
directory, ``.staging/`` and its entries, aliases.json, the history, the evaluations, the ledger, lock files -
is checked component by component with ``lstat``, and files are opened with ``O_NOFOLLOW``: a link found there
is refused with :class:`~shipml.errors.RegistryCorrupt` naming the entry relative to the root. A link would
otherwise let whoever can write one entry make the registry write, append to or delete something outside it.
Inside a version's directory the package layer is in charge (artefact paths are checked to stay inside it, and
their hashes are verified).

Writes are durable: files are fsync'd, replaced atomically, and a directory is moved into place in one rename.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from shipml.errors import ConflictError, RegistryCorrupt
from shipml.registry.local import fsync_dir, fsync_tree, write_atomic

STAGING = ".staging"
LOCK = ".lock"
STALE_AFTER_S = 24 * 3600
LOCK_TIMEOUT_S = 60.0

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO planted here never hangs an open
_held = threading.local()  # locks this thread holds: (path) -> [fd, depth]


class RegistryFiles:
    """The file operations of the registry rooted at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # -- naming and checking -------------------------------------------------------------------------------
    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def link_error(self, path: Path) -> RegistryCorrupt:
        return RegistryCorrupt(f"registry entry {self.rel(path)} is a symbolic link; refusing to follow it")

    def check(self, path: Path) -> os.stat_result | None:
        """``lstat`` of ``path``, after checking that no component of it below the root is a symbolic link (nor
        a file where a directory must be); None when it (or a parent) does not exist."""
        current = self.root
        found: os.stat_result | None = None
        for part in path.relative_to(self.root).parts:
            if found is not None and not stat.S_ISDIR(found.st_mode):
                raise RegistryCorrupt(f"registry entry {self.rel(current)} is not a directory")
            current = current / part
            try:
                found = os.lstat(current)
            except FileNotFoundError:
                return None
            except NotADirectoryError:  # only the root can be a file here: every other parent was checked
                raise RegistryCorrupt(f"the registry root {self.root.name!r} is not a directory") from None
            if stat.S_ISLNK(found.st_mode):
                raise self.link_error(current)
        return found

    def is_dir(self, path: Path) -> bool:
        found = self.check(path)
        return found is not None and stat.S_ISDIR(found.st_mode)

    def is_file(self, path: Path) -> bool:
        found = self.check(path)
        return found is not None and stat.S_ISREG(found.st_mode)

    def listdir(self, path: Path) -> list[str]:
        """The names in directory ``path`` (empty when it does not exist)."""
        if not self.is_dir(path):
            return []
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []

    def mkdirs(self, path: Path) -> None:
        """Create ``path`` and its missing parents below the root, refusing a link or a file on the way."""
        current = self.root
        current.mkdir(parents=True, exist_ok=True)
        for part in path.relative_to(self.root).parts:
            current = current / part
            try:
                os.mkdir(current, 0o755)
                continue
            except FileExistsError:
                pass
            found = os.lstat(current)
            if stat.S_ISLNK(found.st_mode):
                raise self.link_error(current)
            if not stat.S_ISDIR(found.st_mode):
                raise RegistryCorrupt(f"registry entry {self.rel(current)} is not a directory")

    # -- files ---------------------------------------------------------------------------------------------
    def _open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        """Open a regular file below the root without following a link at any component."""
        self.check(path.parent)
        try:
            fd = os.open(path, flags | _NOFOLLOW, mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self.link_error(path) from None
            if exc.errno in (errno.EISDIR, errno.ENXIO):
                raise RegistryCorrupt(f"registry entry {self.rel(path)} is not a regular file") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RegistryCorrupt(f"registry entry {self.rel(path)} is not a regular file")
        os.set_blocking(fd, True)
        return fd

    def read_bytes(self, path: Path) -> bytes | None:
        """The content of the file ``path``, or None when it does not exist."""
        try:
            fd = self._open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def append_line(self, path: Path, line: bytes) -> None:
        """Append one line and fsync. A last line without its newline is what a crash mid-append leaves: it
        was never acknowledged, so it is cut off before the new line goes in (the caller holds the lock)."""
        self.mkdirs(path.parent)
        existed = self.check(path) is not None
        fd = self._open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.ftruncate(fd, os.pread(fd, size, 0).rfind(b"\n") + 1)
            os.write(fd, line.rstrip(b"\n") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if not existed:
            fsync_dir(path.parent)

    def write_atomic(self, path: Path, data: bytes) -> None:
        """Replace the file ``path`` with ``data``: a reader sees the old content or the new, never a mix."""
        self.mkdirs(path.parent)
        found = self.check(path)
        if found is not None and not stat.S_ISREG(found.st_mode):
            raise RegistryCorrupt(f"registry entry {self.rel(path)} is not a regular file")
        write_atomic(path, data)  # its temp file is made with O_EXCL, which never follows a link

    # -- locking -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, directory: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """An inter-process lock on ``directory`` (created if needed), re-entrant within a thread. Other
        processes and other threads wait; the lock file is ``.lock`` (the same file earlier shipml versions
        locked with flock)."""
        self.mkdirs(directory)
        path = directory / LOCK
        held: dict[Path, list[int]] = _held.__dict__.setdefault("locks", {})
        if path in held:
            held[path][1] += 1
            try:
                yield
            finally:
                held[path][1] -= 1
            return
        fd = self._open(path, os.O_RDWR | os.O_CREAT)
        try:
            _flock(fd, timeout, self.rel(path))
            held[path] = [fd, 1]
            try:
                yield
            finally:
                del held[path]
        finally:
            os.close(fd)  # closing releases the flock

    # -- directories ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh directory on the registry's filesystem (so a rename into place is atomic), removed afterwards
        unless it was moved away. Leftovers of killed processes are swept once they are a day old."""
        base = self.root / STAGING
        self.mkdirs(base)
        self._sweep(base)
        path = base / f"{uuid.uuid4().hex}.{os.getpid()}"
        os.mkdir(path, 0o755)
        try:
            yield path
        finally:
            self._rmtree(path)

    def _sweep(self, base: Path, older_than_s: float = STALE_AFTER_S) -> list[str]:
        """Remove the entries of ``base`` older than ``older_than_s``; their names."""
        cutoff = time.time() - older_than_s
        removed = []
        for name in self.listdir(base):
            child = base / name
            found = self.check(child)
            if found is not None and found.st_mtime < cutoff:
                self._rmtree(child)
                removed.append(name)
        return removed

    def sweep_staging(self, older_than_s: float) -> list[str]:
        """Remove what killed saves and deletions left in staging, once older than ``older_than_s``."""
        return self._sweep(self.root / STAGING, older_than_s)

    def _rmtree(self, path: Path) -> None:
        """Delete the registry-owned tree ``path`` (never through a link at its top; rmtree itself does not
        follow links inside)."""
        found = self.check(path)
        if found is None:
            return
        if stat.S_ISDIR(found.st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def move_into_place(self, src: Path, dest: Path) -> None:
        """Atomically move the finished directory ``src`` (in staging) to ``dest``, which must not exist."""
        fsync_tree(src)
        self.mkdirs(dest.parent)
        if self.check(dest) is not None:  # rename(2) would silently replace an empty directory
            raise FileExistsError(dest)
        os.rename(src, dest)
        fsync_dir(dest.parent)

    def remove(self, path: Path) -> None:
        """Make the directory ``path`` disappear in one step (a rename into staging), then delete it."""
        found = self.check(path)
        if found is None:
            raise FileNotFoundError(path)
        if not stat.S_ISDIR(found.st_mode):
            raise RegistryCorrupt(f"registry entry {self.rel(path)} is not a directory")
        base = self.root / STAGING
        self.mkdirs(base)
        trash = base / f"deleted-{uuid.uuid4().hex}"
        os.rename(path, trash)
        fsync_dir(path.parent)
        shutil.rmtree(trash, ignore_errors=True)


def _flock(fd: int, timeout: float, name: str) -> None:
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise ConflictError(f"registry entry {name} stayed locked by another process for {timeout:g}s;"
                                    " try again") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
