"""The local cache of an object registry's versions: content-addressed, verified, shared, bounded.

A version's manifest lists every artefact with its sha256, and the registry records the manifest's sha256, so
that one digest names the whole package: an entry lives at ``<cache>/versions/<manifest sha256>/``. Entries are
written by downloading into ``<cache>/tmp/<random>/``, checking every file's size and sha256 against the commit
record and the manifest's against the digest, then renaming the directory into place in one step: a
half-written entry is never at a name a reader looks up, and of several processes filling the same entry at
once one rename wins and the others drop their copy. An entry found in place is used as it is (never
downloaded again); loading it verifies its hashes like any registry load.

The cache is bounded (``SHIPML_CACHE_MAX_BYTES``, default 20 GiB): after adding an entry, the least recently
used others are removed (each use touches its entry) until the total fits. An entry used in the last ten minutes
is never removed (another process may be loading it right now), so the cache can stay above its bound for that
long. Removal renames an entry out of place first, so no reader finds half of one. Leftovers of killed downloads
are swept once a day old.

Where: ``$SHIPML_CACHE``, else ``$XDG_CACHE_HOME/shipml``, else ``~/.cache/shipml``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from shipml.errors import IntegrityError
from shipml.package.loaded import sha256_file
from shipml.package.manifest import MANIFEST, manifest_digest
from shipml.registry.local import fsync_dir, fsync_tree

__all__ = ["CachedFile", "VersionCache", "cache_root"]

DEFAULT_MAX_BYTES = 20 << 30
STALE_AFTER_S = 24 * 3600
IN_USE_S = 600.0  # an entry used this recently may be being loaded by another process: never evicted


def cache_root() -> Path:
    given = os.environ.get("SHIPML_CACHE")
    if given:
        return Path(given).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "shipml"


def _max_bytes() -> int:
    given = os.environ.get("SHIPML_CACHE_MAX_BYTES")
    try:
        return int(given) if given else DEFAULT_MAX_BYTES
    except ValueError:
        return DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class CachedFile:
    sha256: str
    size: int


class VersionCache:
    def __init__(self, root: Path | None = None, max_bytes: int | None = None, in_use_s: float = IN_USE_S) -> None:
        self.root = root if root is not None else cache_root()
        self.max_bytes = max_bytes if max_bytes is not None else _max_bytes()
        self.in_use_s = in_use_s

    def entry(self, digest: str) -> Path:
        return self.root / "versions" / digest

    def lookup(self, digest: str) -> Path | None:
        """The entry of ``digest`` when it is in place (and mark it used), else None."""
        path = self.entry(digest)
        if not path.is_dir():
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return path

    def fill(self, digest: str, files: Mapping[str, CachedFile], download: Callable[[str, Path], bool],
             what: str) -> Path:
        """The entry of ``digest``, downloading ``files`` (relative path -> expected sha256 and size) with
        ``download(relative path, new file)`` when it is not in place. ``what`` names the version in errors."""
        found = self.lookup(digest)
        if found is not None:
            return found
        tmp_base = self.root / "tmp"
        tmp_base.mkdir(parents=True, exist_ok=True)
        self._sweep(tmp_base)
        tmp = tmp_base / f"{uuid.uuid4().hex}.{os.getpid()}"
        tmp.mkdir()
        try:
            for rel, expect in sorted(files.items()):
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not download(rel, dest):
                    raise IntegrityError(f"{what}: its file {rel} is missing from the store")
                if dest.stat().st_size != expect.size or sha256_file(dest) != expect.sha256:
                    raise IntegrityError(f"{what}: its file {rel} does not match the sha256 recorded when it was"
                                         " saved (changed in the store since); refusing to use it")
            if manifest_digest((tmp / MANIFEST).read_bytes()) != digest:
                raise IntegrityError(f"{what}: its {MANIFEST} does not match the sha256 recorded when it was"
                                     " saved (changed in the store since); refusing to use it")
            fsync_tree(tmp)
            final = self.entry(digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:  # another process put the same entry in place first: theirs is as good
                if not final.is_dir():
                    raise
            else:
                fsync_dir(final.parent)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.evict(keep=digest)
        return final

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove least recently used entries (never ``keep``) until the cache fits; the digests removed."""
        base = self.root / "versions"
        if not base.is_dir():
            return []
        entries = []
        for child in base.iterdir():
            try:
                size = sum(f.stat().st_size for f in child.rglob("*") if f.is_file())
                entries.append((child.stat().st_mtime, child.name, size))
            except OSError:  # evicted by another process meanwhile
                continue
        total = sum(size for _, _, size in entries)
        removed = []
        recent = time.time() - self.in_use_s
        for used, digest, size in sorted(entries):
            if total <= self.max_bytes:
                break
            if digest == keep or used > recent:
                continue
            trash = self.root / "tmp" / f"evicted-{uuid.uuid4().hex}"
            try:
                os.rename(base / digest, trash)
            except OSError:
                continue  # removed by another process meanwhile
            shutil.rmtree(trash, ignore_errors=True)
            total -= size
            removed.append(digest)
        return removed

    def sweep(self, older_than_s: float = STALE_AFTER_S) -> list[str]:
        """Remove leftovers of killed downloads older than ``older_than_s``; their names."""
        base = self.root / "tmp"
        return self._sweep(base, older_than_s) if base.is_dir() else []

    def _sweep(self, base: Path, older_than_s: float = STALE_AFTER_S) -> list[str]:
        cutoff = time.time() - older_than_s
        removed = []
        for child in base.iterdir():
            with contextlib.suppress(OSError):
                if child.stat().st_mtime < cutoff:
                    shutil.rmtree(child, ignore_errors=True)
                    removed.append(child.name)
        return removed
