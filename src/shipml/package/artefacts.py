"""What a package directory really holds, checked against its manifest before anything opens a file of it.

A package is the manifest plus regular files and directories, nothing else: every file is covered by exactly one
artefact entry (path, size, sha256), every entry names a file that is there, and a symbolic link anywhere in it
refuses the whole package. Artefact paths are plain relative POSIX paths inside the package.

Files are opened one path component at a time relative to the package directory, each with ``O_NOFOLLOW``, so a
link swapped in after the check is refused rather than followed; a runtime receives a file's bytes only after
they were hashed, in memory, and matched the entry (see :class:`ModelView`).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from shipml.errors import IntegrityError, ManifestError
from shipml.package.manifest import GOLDEN, MANIFEST, MODEL_DIR, PROFILE, Artifact, Manifest

_CHUNK = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO planted in a package must not block the open
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
#: Files every package holds besides its model directory (the golden check and the profile read them).
REQUIRED = (GOLDEN, PROFILE)


def check_artifact_path(path: str) -> None:
    """Refuse an artefact path that is not a plain relative POSIX path inside the package."""
    parts = path.split("/")
    plain = (path and "\\" not in path and "\x00" not in path and not path.startswith("/")
             and all(p not in ("", ".", "..") for p in parts) and ":" not in parts[0])
    if not plain:
        raise ManifestError(f"artefact path {path!r} is not a plain relative path inside the package")
    if path == MANIFEST:
        raise ManifestError(f"the manifest lists itself ({MANIFEST}) as an artefact")


def _open_dir(directory: Path) -> int:
    try:
        return os.open(directory, os.O_RDONLY | _DIRECTORY)
    except FileNotFoundError as exc:
        raise ManifestError(f"no model package at {directory.name!r}") from exc
    except NotADirectoryError as exc:
        raise ManifestError(f"{directory.name!r} is not a package directory") from exc


def open_inside(root: Path, relative: str) -> int:
    """A read-only descriptor of the regular file ``relative`` under ``root``, reached without following any
    link (each component opened with O_NOFOLLOW relative to its parent). IntegrityError otherwise."""
    check_artifact_path(relative)
    parts = relative.split("/")
    fd = _open_dir(root)
    try:
        for part in parts[:-1]:
            child = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open(parts[-1], os.O_RDONLY | _NOFOLLOW | _NONBLOCK, dir_fd=fd)
    except FileNotFoundError as exc:
        raise IntegrityError(f"artefact {relative} is missing") from exc
    except OSError as exc:  # ELOOP / ENOTDIR: a link (or a file where a directory should be) on the way
        raise IntegrityError(f"artefact {relative} is not a regular file inside the package (a symbolic link"
                             " on its path, or not a file)") from exc
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(leaf).st_mode):
        os.close(leaf)
        raise IntegrityError(f"artefact {relative} is not a regular file")
    return leaf


def scan(directory: Path) -> tuple[list[str], list[str]]:
    """(files, directories) of the package, as relative POSIX paths, without following links; the manifest is
    left out. A symbolic link or anything but a regular file or directory is refused (IntegrityError)."""
    files: list[str] = []
    dirs: list[str] = []

    def walk(path: Path, prefix: str) -> None:
        with os.scandir(path) as entries:
            for entry in entries:
                relative = f"{prefix}{entry.name}"
                if entry.is_symlink():
                    raise IntegrityError(f"{relative} in the package is a symbolic link; a package holds only"
                                         " regular files and directories")
                if entry.is_dir(follow_symlinks=False):
                    dirs.append(relative)
                    walk(Path(entry.path), relative + "/")
                elif entry.is_file(follow_symlinks=False):
                    if relative != MANIFEST:
                        files.append(relative)
                else:
                    raise IntegrityError(f"{relative} in the package is not a regular file")

    if not directory.is_dir():
        raise ManifestError(f"no model package at {directory.name!r}")
    walk(directory, "")
    return sorted(files), sorted(dirs)


def _digest(fd: int, expected_size: int | None) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with os.fdopen(fd, "rb") as f:
        if expected_size is not None and os.fstat(f.fileno()).st_size != expected_size:
            return "", -1
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


@dataclass(frozen=True)
class Artefacts:
    """The verified files of one package: ``entries`` maps each relative path to its artefact entry."""

    root: Path
    entries: dict[str, Artifact]
    directories: tuple[str, ...]
    label: str

    def read_bytes(self, relative: str) -> bytes:
        """The bytes of ``relative``, hashed in memory and matched to its entry before they are returned."""
        entry = self.entries.get(relative)
        if entry is None:
            raise IntegrityError(f"{self.label}: {relative} is not covered by any artefact entry; refusing to open it")
        fd = open_inside(self.root, relative)
        with os.fdopen(fd, "rb") as f:
            if os.fstat(f.fileno()).st_size != entry.size:
                raise _changed(self.label, relative)
            data = f.read(entry.size + 1)
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise _changed(self.label, relative)
        return data

    def model_view(self) -> ModelView:
        return ModelView(self, MODEL_DIR + "/")

    def copy_to(self, target: Path) -> None:
        """Write every verified file (and directory) into ``target``, which must exist and be empty."""
        for relative in self.directories:
            (target / relative).mkdir(parents=True, exist_ok=True)
        for relative in self.entries:
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("xb") as f:
                f.write(self.read_bytes(relative))


class ModelView:
    """The model directory of :class:`Artefacts`, as a runtime sees it (:class:`shipml.runtimes.base.ModelFiles`).
    Bytes read once are kept for the rest of the load, so judging trust and loading read the same bytes."""

    def __init__(self, artefacts: Artefacts, prefix: str) -> None:
        self._artefacts = artefacts
        self._prefix = prefix
        self._read: dict[str, bytes] = {}

    def names(self) -> list[str]:
        n = len(self._prefix)
        return sorted(p[n:] for p in self._artefacts.entries if p.startswith(self._prefix))

    def read_bytes(self, name: str) -> bytes:
        data = self._read.get(name)
        if data is None:
            data = self._read[name] = self._artefacts.read_bytes(self._prefix + name)
        return data

    def directory(self) -> Path:
        return self._artefacts.root / self._prefix.rstrip("/")


def _changed(label: str, relative: str) -> IntegrityError:
    return IntegrityError(f"{label}: artefact {relative} does not match its recorded sha256 (changed or corrupted"
                          " since it was saved); refusing to load it")


def _entries(manifest: Manifest) -> dict[str, Artifact]:
    entries: dict[str, Artifact] = {}
    for artifact in manifest.artifacts:
        check_artifact_path(artifact.path)
        if artifact.path in entries:
            raise ManifestError(f"{manifest.ref}: artefact {artifact.path} is listed twice")
        entries[artifact.path] = artifact
    return entries


def verify_integrity(directory: Path, manifest: Manifest) -> Artefacts:
    """Check that ``directory`` holds exactly the files ``manifest`` lists, each with its recorded size and
    sha256, and nothing else (no link, no file no entry covers). Returns the verified files."""
    entries = _entries(manifest)
    missing = [name for name in REQUIRED if name not in entries]
    if missing:
        raise ManifestError(f"{manifest.ref}: the manifest lists no {', '.join(missing)}")
    if not any(p.startswith(MODEL_DIR + "/") for p in entries):
        raise ManifestError(f"{manifest.ref}: the manifest lists no file under {MODEL_DIR}/")
    top = directory / MANIFEST
    if top.is_symlink() or not top.is_file():
        raise IntegrityError(f"{manifest.ref}: {MANIFEST} is not a regular file")
    files, dirs = scan(directory)
    uncovered = [f for f in files if f not in entries]
    if uncovered:
        raise IntegrityError(f"{manifest.ref}: {uncovered[0]} is in the package but no artefact entry covers it"
                             + (f" (and {len(uncovered) - 1} more)" if len(uncovered) > 1 else "")
                             + "; refusing to load a package holding files nobody recorded")
    for relative, entry in entries.items():
        sha, size = _digest(open_inside(directory, relative), entry.size)
        if size != entry.size or sha != entry.sha256:
            raise _changed(manifest.ref, relative)
    return Artefacts(directory, entries, tuple(dirs), manifest.ref)


def measure(directory: Path) -> list[Artifact]:
    """An artefact entry (path, sha256, size) for every file of ``directory`` but the manifest, as it is now."""
    files, _ = scan(directory)
    out = []
    for relative in files:
        sha, size = _digest(open_inside(directory, relative), None)
        out.append(Artifact(path=relative, sha256=sha, size=size))
    return out


def fresh(directory: Path, label: str) -> Artefacts:
    """The files just written into ``directory`` (by this process), measured now."""
    _, dirs = scan(directory)
    return Artefacts(directory, {a.path: a for a in measure(directory)}, tuple(dirs), label)
