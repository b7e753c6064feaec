"""The byte store under an object registry: a flat space of keys with conditional writes.

:class:`Store` is what :mod:`shipml.registry.objects` needs from S3 (``registry/s3.py``) or a local directory
(:class:`LocalStore`), and nothing more:

- ``get``: the bytes of a key and its version token (S3's ETag; the sha256 of the content locally), or None;
- ``create``: write a key only if it does not exist (S3's ``If-None-Match: *``): how version numbers are
  allocated and versions committed, without a lock;
- ``replace``: write a key only if its token is still the one read (S3's ``If-Match``): compare-and-set;
- ``put``/``upload``/``download``: plain writes and reads of the files of a version (its prefix is owned by the
  save that claimed its number, so no condition is needed);
- ``keys`` below a prefix (or its ``children``) and ``delete`` a key.

A refused condition is :class:`PreconditionFailed` (a :class:`~shipml.errors.ConflictError`): never retried by
the store, the caller decides (re-read and try again, or give up). Keys are checked here, once for every store:
``/``-separated segments of letters, digits, ``.``, ``_``, ``-``, none starting with ``.`` nor holding ``..``,
so a key never climbs out of its root nor names a hidden file (locks and temporary files are hidden).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shipml.errors import ConflictError, InvalidNameError, RegistryCorrupt
from shipml.registry.files import RegistryFiles
from shipml.registry.local import fsync_dir, replacing

__all__ = ["Blob", "LocalStore", "PreconditionFailed", "Store", "check_key"]

_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")


class PreconditionFailed(ConflictError):
    """A conditional write refused: the key exists already (create), or changed since it was read (replace)."""


@dataclass(frozen=True)
class Blob:
    data: bytes
    token: str  # what ``replace`` must be given to overwrite exactly this content


def check_key(key: str) -> str:
    parts = key.split("/") if isinstance(key, str) else [""]
    if not all(_SEGMENT.fullmatch(p) and ".." not in p for p in parts):
        raise InvalidNameError(f"invalid store key {str(key)[:200]!r}: '/'-separated names of letters, digits,"
                               " '.', '_' and '-', none starting with '.', without '..'")
    return key


class Store(Protocol):
    def describe(self) -> str:
        """Where the store is, for messages (``s3://bucket/prefix``, a directory)."""
        ...

    def get(self, key: str) -> Blob | None: ...

    def create(self, key: str, data: bytes) -> str:
        """Write ``key`` only if it does not exist; its token. :class:`PreconditionFailed` if it exists."""
        ...

    def replace(self, key: str, data: bytes, token: str) -> str:
        """Overwrite ``key`` only if its token is ``token``; the new token. :class:`PreconditionFailed`
        if it changed or disappeared."""
        ...

    def put(self, key: str, data: bytes) -> None: ...

    def upload(self, key: str, path: Path) -> None: ...

    def download(self, key: str, path: Path) -> bool:
        """Copy ``key`` into the new file ``path``; False when the key does not exist."""
        ...

    def keys(self, prefix: str) -> list[str]:
        """Every key below ``prefix`` (``prefix`` itself a key prefix ending with ``/``), sorted."""
        ...

    def children(self, prefix: str) -> list[str]:
        """The names one level below ``prefix`` that have keys below them (S3's common prefixes), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it is missing)."""
        ...


def _token(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalStore:
    """A :class:`Store` in a local directory, with the local registry's guarantees: no symbolic link below the
    root is followed (``O_NOFOLLOW``, every component checked), a conditional create is one ``link(2)`` (which
    fails if the name exists), a compare-and-set holds the directory's ``flock`` while it compares and renames
    the new content into place, and every write is fsync'd."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files = RegistryFiles(root)

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def get(self, key: str) -> Blob | None:
        data = self._files.read_bytes(self._path(key))
        return None if data is None else Blob(data, _token(data))

    def create(self, key: str, data: bytes) -> str:
        path = self._path(key)
        self._files.mkdirs(path.parent)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path, follow_symlinks=False)  # atomic, and refuses any existing name (a link too)
            except FileExistsError:
                raise PreconditionFailed(f"{key} exists already in {self.describe()}") from None
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)
        return _token(data)

    def replace(self, key: str, data: bytes, token: str) -> str:
        path = self._path(key)
        with self._files.lock(path.parent):
            current = self._files.read_bytes(path)
            if current is None or _token(current) != token:
                raise PreconditionFailed(f"{key} changed in {self.describe()} since it was read")
            self._files.write_atomic(path, data)
        return _token(data)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self._files.write_atomic(path, data)

    def upload(self, key: str, path: Path) -> None:
        dest = self._path(key)
        self._files.mkdirs(dest.parent)
        with open(path, "rb") as src, replacing(dest) as out:
            shutil.copyfileobj(src, out, 1 << 20)

    def download(self, key: str, path: Path) -> bool:
        src = self._path(key)
        try:
            fd = self._files._open(src, os.O_RDONLY)
        except FileNotFoundError:
            return False
        with os.fdopen(fd, "rb") as f, open(path, "xb") as out:
            shutil.copyfileobj(f, out, 1 << 20)
        return True

    def keys(self, prefix: str) -> list[str]:
        base = self.root / check_key(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if self._files.check(base) is None:
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue  # locks and temporary files
                path = Path(dirpath) / name
                if stat.S_ISREG(os.lstat(path).st_mode):
                    out.append(path.relative_to(self.root).as_posix())
        return sorted(out)

    def children(self, prefix: str) -> list[str]:
        if prefix.strip("/"):
            base = self.root / check_key(prefix.rstrip("/"))
            names = self._files.listdir(base)
        else:  # the root itself (which may be a link: the user's choice)
            base = self.root
            names = sorted(os.listdir(base)) if base.is_dir() else []
        return [n for n in names if not n.startswith(".") and self._files.is_dir(base / n)]

    def delete(self, key: str) -> None:
        path = self._path(key)
        found = self._files.check(path)
        if found is None:
            return
        if not stat.S_ISREG(found.st_mode):
            raise RegistryCorrupt(f"store entry {key} is not a regular file")
        try:
            path.unlink()
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
