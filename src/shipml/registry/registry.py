"""The model registry: immutable semantic versions, movable aliases with an audit trail, atomic writes.

Layout under the root (``$SHIPML_HOME`` or ``~/.shipml`` by default)::

    models/<name>/versions/<x.y.z>/   one package: shipml.json + artefacts (never changed once there)
    models/<name>/aliases.json        {"production": "1.2.0", ...}, replaced atomically
    models/<name>/history.jsonl       every alias move: alias, from, to, at, by, reason
    models/<name>/evaluations.jsonl   metrics computed on held-out data, per version
    .staging/                         packages being written; moved into place in one rename
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from shipml.config import shipml_home
from shipml.errors import AlreadyExistsError, ConflictError, InvalidNameError, NotFoundError
from shipml.package.lineage import current_user, now_iso
from shipml.package.loaded import LoadedModel, load_package
from shipml.package.manifest import MANIFEST, Manifest, read_manifest, write_manifest
from shipml.registry import local
from shipml.registry.names import FIRST_VERSION, Ref, Version, check_alias, check_name

if TYPE_CHECKING:  # building a package needs pandas; a process that only loads models never imports it
    from shipml.package.builder import BuildOptions


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    path: Path

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def manifest(self) -> Manifest:
        return read_manifest(self.path)

    def __str__(self) -> str:
        return self.ref


@dataclass(frozen=True)
class AliasMove:
    name: str
    alias: str
    from_version: str | None
    to_version: str | None
    at: str
    by: str | None
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "alias": self.alias, "from": self.from_version, "to": self.to_version,
                "at": self.at, "by": self.by, "reason": self.reason}


@dataclass(frozen=True)
class ModelSummary:
    name: str
    latest: str | None
    versions: int
    aliases: dict[str, str]


class Registry:
    """A registry rooted at a local directory (``uri``: a path or ``file://`` URI)."""

    def __init__(self, uri: str | Path | None = None) -> None:
        if uri is None:
            root = shipml_home()
        elif isinstance(uri, Path):
            root = uri
        elif uri.startswith("file://"):
            root = Path(uri[len("file://"):])
        elif "://" in uri:
            raise InvalidNameError(f"unsupported registry URI {uri!r}: give a directory path or file:// URI")
        else:
            root = Path(uri)
        self.root = root.expanduser().absolute()

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------------------------
    def _model_dir(self, name: str) -> Path:
        return self.root / "models" / check_name(name)

    def _version_dir(self, name: str, version: str) -> Path:
        return self._model_dir(name) / "versions" / str(Version.parse(version))

    # -- reading -------------------------------------------------------------------------------------------
    def models(self) -> list[ModelSummary]:
        base = self.root / "models"
        if not base.is_dir():
            return []
        out = []
        for child in sorted(base.iterdir()):
            if not child.is_dir() or child.name.startswith("."):
                continue
            versions = self._version_list(child.name)
            if not versions:
                continue
            out.append(ModelSummary(child.name, str(versions[-1]), len(versions), self.aliases(child.name)))
        return out

    def _version_list(self, name: str) -> list[Version]:
        vdir = self._model_dir(name) / "versions"
        if not vdir.is_dir():
            return []
        found = []
        for child in vdir.iterdir():
            try:
                v = Version.parse(child.name)
            except InvalidNameError:
                continue
            if (child / MANIFEST).is_file():
                found.append(v)
        return sorted(found)

    def versions(self, name: str) -> list[ModelVersion]:
        versions = self._version_list(name)
        if not versions and not self._model_dir(name).is_dir():
            raise NotFoundError(f"no model named {name!r} in {self}")
        return [ModelVersion(name, str(v), self._version_dir(name, str(v))) for v in versions]

    def get(self, ref: str | Ref) -> ModelVersion:
        """Resolve ``name``, ``name:1.2.0`` or ``name@alias`` to one stored version."""
        r = Ref.parse(ref) if isinstance(ref, str) else ref
        if r.path is not None or r.name is None:
            raise InvalidNameError(f"{ref!s} is a path, not a registry reference")
        if r.alias is not None:
            version = self.aliases(r.name).get(r.alias)
            if version is None:
                raise NotFoundError(f"model {r.name!r} has no alias {r.alias!r}")
        elif r.version is not None:
            version = r.version
        else:
            versions = self._version_list(r.name)
            if not versions:
                raise NotFoundError(f"no model named {r.name!r} in {self}")
            version = str(versions[-1])
        path = self._version_dir(r.name, version)
        if not (path / MANIFEST).is_file():
            raise NotFoundError(f"model {r.name!r} has no version {version}")
        return ModelVersion(r.name, version, path)

    def load(self, ref: str | Ref, **kwargs: Any) -> LoadedModel:
        return load_package(self.get(ref).path, **kwargs)

    # -- writing versions ----------------------------------------------------------------------------------
    def save(self, model: Any, name: str, *, sample: Any, version: str | None = None,
             options: BuildOptions | None = None) -> ModelVersion:
        from shipml.package.builder import BuildOptions, build_package

        check_name(name)
        if version is not None:
            version = str(Version.parse(version))
            self._refuse_existing(name, version)
        with local.staging_dir(self.root) as staging:
            manifest = build_package(model, staging, name, sample, options or BuildOptions())
            return self._commit(staging, manifest, version)

    def add_package(self, directory: Path, name: str | None = None, version: str | None = None, *,
                    trusted: bool = False, tags: dict[str, str] | None = None,
                    description: str | None = None) -> ModelVersion:
        """Copy a package directory (an export, or another registry's version) in as a new version.

        Nothing in its manifest is trusted: its files are verified, it is loaded and its golden sample re-run from
        a private copy, and a package whose runtime or files need trust is refused unless ``trusted``. The new
        version records the trust decision made now and the artefacts really copied. ``tags`` are added to its
        own; ``description`` replaces its own."""
        from shipml.package.admit import admit_package

        if name is not None:
            check_name(name)
        if version is not None:
            version = str(Version.parse(version))
        with local.staging_dir(self.root) as staging:
            target = staging / "pkg"
            manifest = admit_package(directory, target, trusted=trusted)
            update: dict[str, Any] = {"name": check_name(name or manifest.name),
                                      "tags": {**manifest.tags, **(tags or {})}}
            if description is not None:
                update["description"] = description
            return self._commit(target, manifest.model_copy(update=update), version)

    def _commit(self, staging: Path, manifest: Manifest, version: str | None) -> ModelVersion:
        name = manifest.name
        with local.locked(self._model_dir(name)):
            if version is None:
                existing = self._version_list(name)
                version = str(existing[-1].next_minor() if existing else FIRST_VERSION)
            else:
                self._refuse_existing(name, version)
            write_manifest(staging, manifest.model_copy(update={"version": version}))
            dest = self._version_dir(name, version)
            local.move_into_place(staging, dest)
        return ModelVersion(name, version, dest)

    def _refuse_existing(self, name: str, version: str) -> None:
        if self._version_dir(name, version).exists():
            raise AlreadyExistsError(f"{name}:{version} exists already; versions are immutable")

    def delete(self, ref: str) -> ModelVersion:
        """Delete one version (``name:1.2.0``). Refused while an alias points to it."""
        r = Ref.parse(ref)
        if r.name is None or r.version is None:
            raise InvalidNameError(f"delete needs an exact version such as {r.name or 'name'}:1.0.0, got {ref!r}")
        mv = self.get(r)
        with local.locked(self._model_dir(mv.name)):
            holders = sorted(a for a, v in self.aliases(mv.name).items() if v == mv.version)
            if holders:
                raise ConflictError(f"{mv.ref} is held by alias(es) {', '.join(holders)}: move them first")
            local.remove_atomically(mv.path, self.root)
        return mv

    # -- aliases -------------------------------------------------------------------------------------------
    def aliases(self, name: str) -> dict[str, str]:
        path = self._model_dir(name) / "aliases.json"
        if not path.is_file():
            return {}
        data: dict[str, str] = orjson.loads(path.read_bytes())
        return data

    def set_alias(self, name: str, alias: str, version: str, *, reason: str | None = None) -> AliasMove:
        check_alias(alias)
        mv = self.get(Ref(name=check_name(name), version=str(Version.parse(version))))
        return self._move(name, alias, mv.version, reason)

    def delete_alias(self, name: str, alias: str, *, reason: str | None = None) -> AliasMove:
        check_alias(alias)
        if alias not in self.aliases(name):
            raise NotFoundError(f"model {name!r} has no alias {alias!r}")
        return self._move(name, alias, None, reason)

    def _move(self, name: str, alias: str, to: str | None, reason: str | None) -> AliasMove:
        mdir = self._model_dir(name)
        with local.locked(mdir):
            current = self.aliases(name)
            move = AliasMove(name, alias, current.get(alias), to, now_iso(), current_user(), reason)
            if to is None:
                current.pop(alias, None)
            else:
                current[alias] = to
            local.append_line(mdir / "history.jsonl", orjson.dumps(move.to_dict()))
            local.write_atomic(mdir / "aliases.json", orjson.dumps(current, option=orjson.OPT_SORT_KEYS))
        return move

    def alias_history(self, name: str) -> list[AliasMove]:
        path = self._model_dir(name) / "history.jsonl"
        if not path.is_file():
            if not self._model_dir(name).is_dir():
                raise NotFoundError(f"no model named {name!r} in {self}")
            return []
        return [AliasMove(name=d["name"], alias=d["alias"], from_version=d["from"], to_version=d["to"], at=d["at"],
                          by=d["by"], reason=d["reason"]) for d in _jsonl(path)]

    # -- evaluations ---------------------------------------------------------------------------------------
    def record_evaluation(self, mv: ModelVersion, record: dict[str, Any]) -> None:
        mdir = self._model_dir(mv.name)
        with local.locked(mdir):
            local.append_line(mdir / "evaluations.jsonl", orjson.dumps({"version": mv.version, **record}))

    def evaluations(self, mv: ModelVersion) -> list[dict[str, Any]]:
        path = self._model_dir(mv.name) / "evaluations.jsonl"
        if not path.is_file():
            return []
        return [d for d in _jsonl(path) if d.get("version") == mv.version]


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_bytes().splitlines():
        if line.strip():
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a torn last line after a crash: everything before it still counts
