"""The model registry: immutable semantic versions, movable aliases with an audit trail, atomic writes.

Layout under the root (``$SHIPML_HOME`` or ``~/.shipml`` by default)::

    models/<name>/versions/<x.y.z>/   one package: shipml.json + artefacts (never changed once there)
    models/<name>/versions.jsonl      the ledger: each version's manifest sha256, and deletions (ledger.py)
    models/<name>/aliases.json        {"production": "1.2.0", ...}, replaced atomically
    models/<name>/history.jsonl       every alias move: alias, from, to, at, by, reason
    models/<name>/evaluations.jsonl   metrics computed on held-out data, per version
    models/<name>/release.json        release state: revision, the latest canary of each alias (releases.py)
    models/<name>/releases.jsonl      every canary start, abort and promotion
    models/<name>/.lock               the model's inter-process lock: every write to the model holds it
    .staging/                         packages being written; moved into place in one rename

Every load through the registry is sealed: the manifest must match the sha256 its ledger recorded when the
version was committed. Version numbers are never reused, deleted ones included. Aliases move with
compare-and-set (``expected``); canaries, their promotion and rollback too, under the model's lock. No file
operation below the root follows a symbolic link (files.py), and a malformed file is a one-line
:class:`~shipml.errors.RegistryCorrupt` naming it (records.py, releases.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson

from shipml._paths import absolute
from shipml.config import shipml_home
from shipml.errors import AlreadyExistsError, BadRequest, ConflictError, IntegrityError, InvalidNameError, NotFoundError
from shipml.package.lineage import current_user, now_iso
from shipml.package.loaded import LoadedModel, load_package
from shipml.package.manifest import MANIFEST, Manifest, manifest_digest, read_manifest, write_manifest
from shipml.registry import ledger, records, releases
from shipml.registry.files import STAGING, STALE_AFTER_S, RegistryFiles
from shipml.registry.ledger import LEDGER, Ledger
from shipml.registry.names import FIRST_VERSION, Ref, Version, check_alias, check_name
from shipml.registry.records import AliasMove
from shipml.registry.releases import Canary, CanaryLimits, Outcome, ReleaseState

if TYPE_CHECKING:  # building a package needs pandas; a process that only loads models never imports it
    from shipml.package.builder import BuildOptions

__all__ = ["NOT_GIVEN", "AliasMove", "Expected", "ModelSummary", "ModelVersion", "Registry"]

log = logging.getLogger(__name__)
T = TypeVar("T")

ALIASES = "aliases.json"
HISTORY = "history.jsonl"
EVALUATIONS = "evaluations.jsonl"


class _NotGiven:
    """The type of :data:`NOT_GIVEN`: "no expectation" (None already means "must not exist")."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = _NotGiven()
Expected = str | None | _NotGiven


@dataclass(frozen=True)
class ModelVersion:
    """One stored version. ``manifest_sha256``: what the ledger recorded for its manifest (None only for an
    unsealed version of a read-only registry made before ledgers); ``problem``: why it must not be used (a
    version the registry never committed), raised by :attr:`manifest`."""

    name: str
    version: str
    path: Path
    manifest_sha256: str | None = field(default=None, compare=False, repr=False)
    problem: str | None = field(default=None, compare=False, repr=False)
    #: an object registry's version: makes ``path`` hold the verified files (the local cache) and returns it
    fetch: Callable[[], Path] | None = field(default=None, compare=False, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def manifest(self) -> Manifest:
        """The manifest, checked against its recorded sha256."""
        if self.problem is not None:
            raise IntegrityError(self.problem)
        directory = self.fetch() if self.fetch is not None else self.path  # its own errors name the file
        try:
            manifest = read_manifest(directory, self.manifest_sha256)
        except IntegrityError:
            raise IntegrityError(f"{self.ref}: its {MANIFEST} does not match the sha256 the registry recorded"
                                 " when it was saved (edited or corrupted since); refusing to use it") from None
        if (manifest.name, manifest.version) != (self.name, self.version):
            raise IntegrityError(f"{self.ref}: the registry's records point to a package of"
                                 f" {manifest.name}:{manifest.version} (records edited since); refusing to use it")
        return manifest

    def __str__(self) -> str:
        return self.ref


@dataclass(frozen=True)
class ModelSummary:
    name: str
    latest: str | None
    versions: int
    aliases: dict[str, str]


class Registry:
    """A registry rooted at a local directory (``uri``: a path or ``file://`` URI), or in an object store
    (``s3://bucket/prefix``: an :class:`~shipml.registry.objects.ObjectRegistry`). Without ``uri``:
    ``$SHIPML_HOME``, else ``~/.shipml``."""

    def __new__(cls, uri: str | Path | None = None, *args: Any, **kwargs: Any) -> Registry:
        if cls is Registry:
            given = uri if uri is not None else os.environ.get("SHIPML_HOME")
            if isinstance(given, str) and given.startswith("s3://"):
                from shipml.registry.objects import ObjectRegistry

                return super().__new__(ObjectRegistry)
        return super().__new__(cls)

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
        self.root = absolute(root)
        self._files = RegistryFiles(self.root)

    def __repr__(self) -> str:
        return f"Registry({self.location!r})"

    @property
    def location(self) -> str:
        """Where the registry is: its directory, or its object store's URI."""
        return str(self.root)

    @property
    def local_directory(self) -> Path | None:
        """The registry's directory (where local files such as API tokens go); None for an object registry."""
        return self.root

    def directory(self, mv: ModelVersion) -> Path:
        """A local directory holding ``mv``'s files (for an object registry: its verified cache entry)."""
        return mv.fetch() if mv.fetch is not None else mv.path

    def snapshot(self) -> AbstractContextManager[None]:
        """A block whose reads of a model's records (in this thread) may share one read: an object registry
        reads each model's state once inside it (a server's refresh: aliases and release state together). A
        local registry reads its small files each time, as outside it. Changes always read afresh."""
        return nullcontext()

    # -- the seams an object registry replaces (objects.py) --------------------------------------------------
    def _transact(self, name: str, body: Callable[[], T]) -> T:
        """Run ``body`` as one change of the model's records: here under the model's lock (re-entrant)."""
        with self._files.lock(self._model_dir(name)):
            return body()

    @contextmanager
    def _staging(self) -> Iterator[Path]:
        with self._files.staging() as staging:
            yield staging

    def _write_move(self, name: str, move: AliasMove, aliases: dict[str, str]) -> None:
        mdir = self._model_dir(name)
        self._files.append_line(mdir / HISTORY, orjson.dumps(move.to_dict()))
        self._files.write_atomic(mdir / ALIASES, orjson.dumps(aliases, option=orjson.OPT_SORT_KEYS))

    def _record_release(self, state: ReleaseState, canary: Canary) -> None:
        releases.record(self, state, canary)

    def _import_aliases(self, name: str, moves: list[AliasMove], aliases: dict[str, str],
                        deleted: list[str]) -> int:
        """Take another registry's alias history, aliases and deleted version numbers for ``name`` (a copy):
        refused when this registry has another history for it; the number of moves written."""
        mdir = self._model_dir(name)
        with self._files.lock(mdir):
            book = self._ledger_locked(name)
            for version in deleted:
                if not book.is_deleted(version):
                    self._files.append_line(mdir / LEDGER, ledger.deleted(version).to_line())
            if _same_history(self.alias_history(name), moves, name):
                return 0
            for move in moves:
                self._files.append_line(mdir / HISTORY, orjson.dumps(move.to_dict()))
            self._files.write_atomic(mdir / ALIASES, orjson.dumps(aliases, option=orjson.OPT_SORT_KEYS))
        return len(moves)

    # -- paths ---------------------------------------------------------------------------------------------
    def _model_dir(self, name: str) -> Path:
        return self.root / "models" / check_name(name)

    def _version_dir(self, name: str, version: str) -> Path:
        return self._model_dir(name) / "versions" / str(Version.parse(version))

    def _where(self, path: Path) -> str:
        return self._files.rel(path)

    def _require_model(self, name: str) -> Path:
        mdir = self._model_dir(name)
        if not self._files.is_dir(mdir):
            raise NotFoundError(f"no model named {name!r} in {self}")
        return mdir

    # -- the ledger ----------------------------------------------------------------------------------------
    def _ledger(self, name: str) -> Ledger:
        """What the model's ledger says; a model with versions but no ledger has them recorded now, once."""
        path = self._model_dir(name) / LEDGER
        data = self._files.read_bytes(path)
        if data is not None:
            return Ledger(ledger.parse(data, self._where(path)))
        if not self._present(name):
            return Ledger()
        try:
            with self._files.lock(self._model_dir(name)):
                return self._ledger_locked(name)
        except OSError as exc:  # a read-only registry (an image, a mounted bucket) made before ledgers
            log.warning("%s has no ledger of manifest digests and none can be written (%s): its versions load"
                        " unsealed, and their manifests authenticate nothing", self._where(path.parent),
                        exc.strerror or exc)
            return Ledger(sealed=False)

    def _ledger_locked(self, name: str) -> Ledger:
        """:meth:`_ledger` for a caller holding the model's lock."""
        path = self._model_dir(name) / LEDGER
        data = self._files.read_bytes(path)
        if data is not None:
            return Ledger(ledger.parse(data, self._where(path)))
        present = self._present(name)
        if not present:
            return Ledger()
        found = []
        for v in present:
            raw = self._files.read_bytes(self._version_dir(name, str(v)) / MANIFEST)
            if raw is not None:
                found.append(ledger.saved(str(v), manifest_digest(raw), note="recorded when the ledger was made"))
        self._files.write_atomic(path, b"".join(r.to_line() + b"\n" for r in found))
        log.warning("%s had no ledger of manifest digests (a registry made before shipml kept one): recorded its"
                    " %d version(s) as they are now (%s)", self._where(path.parent), len(found),
                    ", ".join(r.version for r in found))
        return Ledger(tuple(found))

    def _present(self, name: str) -> list[Version]:
        """The version directories on disk holding a manifest (deleted ones left by a crash included)."""
        vdir = self._model_dir(name) / "versions"
        found = []
        for child in self._files.listdir(vdir):
            try:
                v = Version.parse(child)
            except InvalidNameError:
                continue
            if self._exists(name, str(v)):
                found.append(v)
        return sorted(found)

    def _exists(self, name: str, version: str) -> bool:
        path = self._version_dir(name, version)
        return self._files.is_dir(path) and self._files.is_file(path / MANIFEST)

    def _version_list(self, name: str, book: Ledger) -> list[Version]:
        return [v for v in self._present(name) if not book.is_deleted(str(v))]

    def _entry(self, name: str, version: str, book: Ledger) -> ModelVersion:
        digest = book.digest(version)
        problem = None
        if book.sealed and digest is None:
            problem = (f"{name}:{version} has no record in the registry's ledger ({self._where(self._model_dir(name))}"
                       f"/{LEDGER}): it was not saved through the registry; refusing to use it")
        return ModelVersion(name, version, self._version_dir(name, version), digest, problem)

    # -- reading -------------------------------------------------------------------------------------------
    def models(self) -> list[ModelSummary]:
        base = self.root / "models"
        out = []
        for child in self._files.listdir(base):
            if child.startswith("."):
                continue
            try:
                check_name(child)
            except InvalidNameError:
                continue
            if not self._files.is_dir(base / child):
                continue
            versions = self._version_list(child, self._ledger(child))
            if versions:
                out.append(ModelSummary(child, str(versions[-1]), len(versions), self.aliases(child)))
        return out

    def versions(self, name: str) -> list[ModelVersion]:
        self._require_model(name)
        book = self._ledger(name)
        return [self._entry(name, str(v), book) for v in self._version_list(name, book)]

    def get(self, ref: str | Ref) -> ModelVersion:
        """Resolve ``name``, ``name:1.2.0`` or ``name@alias`` to one stored version."""
        r = Ref.parse(ref) if isinstance(ref, str) else ref
        if r.path is not None or r.name is None:
            raise InvalidNameError(f"{ref!s} is a path, not a registry reference")
        name = r.name
        if r.alias is not None:
            version = self.aliases(name).get(r.alias)
            if version is None:
                raise NotFoundError(f"model {name!r} has no alias {r.alias!r}")
        elif r.version is not None:
            version = str(Version.parse(r.version))
        else:
            version = None
        book = self._ledger(name)
        if version is None:
            versions = self._version_list(name, book)
            if not versions:
                raise NotFoundError(f"no model named {name!r} in {self}")
            version = str(versions[-1])
        if book.is_deleted(version):
            raise NotFoundError(f"{name}:{version} was deleted")
        if not self._exists(name, version):
            raise NotFoundError(f"model {name!r} has no version {version}")
        return self._entry(name, version, book)

    def load(self, ref: str | Ref, **kwargs: Any) -> LoadedModel:
        """Load a version, sealed: its manifest must match the sha256 recorded when it was committed."""
        mv = self.get(ref)
        mv.manifest  # noqa: B018 - refused here, naming the version, when it does not match its record
        return load_package(self.directory(mv), manifest_sha256=mv.manifest_sha256, **kwargs)

    # -- writing versions ----------------------------------------------------------------------------------
    def save(self, model: Any, name: str, *, sample: Any, version: str | None = None,
             options: BuildOptions | None = None) -> ModelVersion:
        from shipml.package.builder import BuildOptions, build_package

        check_name(name)
        if version is not None:
            version = str(Version.parse(version))
            self._refuse_taken(name, version, self._ledger(name), self._present(name))
        with self._staging() as staging:
            manifest = build_package(model, staging, name, sample, options or BuildOptions())
            return self._commit(staging, manifest, version)

    def add_package(self, directory: Path, name: str | None = None, version: str | None = None, *,
                    trusted: bool = False, tags: dict[str, str] | None = None,
                    description: str | None = None, manifest_sha256: str | None = None) -> ModelVersion:
        """Copy a package directory (an export, or another registry's version) in as a new version.

        Nothing in its manifest is trusted: its files are verified, it is loaded and its golden sample re-run from
        a private copy, and a package whose runtime or files need trust is refused unless ``trusted``. The new
        version records the trust decision made now and the artefacts really copied. ``tags`` are added to its
        own; ``description`` replaces its own. ``manifest_sha256``: the digest another registry recorded for the
        manifest (a copy of its version): it must match, and the files are judged as that registry judges them."""
        from shipml.package.admit import admit_package

        if name is not None:
            check_name(name)
        if version is not None:
            version = str(Version.parse(version))
        with self._staging() as staging:
            target = staging / "pkg"
            manifest = admit_package(directory, target, trusted=trusted, manifest_sha256=manifest_sha256)
            update: dict[str, Any] = {"name": check_name(name or manifest.name),
                                      "tags": {**manifest.tags, **(tags or {})}}
            if description is not None:
                update["description"] = description
            return self._commit(target, manifest.model_copy(update=update), version)

    def _commit(self, staging: Path, manifest: Manifest, version: str | None) -> ModelVersion:
        """Number, seal and move into place the package in ``staging``: the manifest's sha256 goes into the
        ledger before the version appears, so a version never exists unsealed."""
        name = manifest.name
        mdir = self._model_dir(name)
        with self._files.lock(mdir):
            book = self._ledger_locked(name)
            present = self._present(name)
            self._remove_deleted(name, book, present)
            if version is None:
                top = max([*present, *([h] if (h := book.highest()) is not None else [])], default=None)
                version = str(top.next_minor() if top is not None else FIRST_VERSION)
            else:
                version = str(Version.parse(version))
                self._refuse_taken(name, version, book, present)
            write_manifest(staging, manifest.model_copy(update={"version": version}))
            digest = manifest_digest((staging / MANIFEST).read_bytes())
            self._files.append_line(mdir / LEDGER, ledger.saved(version, digest).to_line())
            dest = self._version_dir(name, version)
            self._files.move_into_place(staging, dest)
        return ModelVersion(name, version, dest, digest)

    def _refuse_taken(self, name: str, version: str, book: Ledger, present: list[Version]) -> None:
        if book.is_deleted(version):
            raise AlreadyExistsError(f"{name}:{version} was deleted; versions are never reused")
        if Version.parse(version) in present:
            raise AlreadyExistsError(f"{name}:{version} exists already; versions are immutable")
        if book.digest(version) is not None:
            raise AlreadyExistsError(f"{name}:{version} was allocated by a save that did not finish; versions are"
                                     " never reused")

    def _remove_deleted(self, name: str, book: Ledger, present: list[Version]) -> None:
        """Finish deletions a crash interrupted (recorded, directory still there). The caller holds the lock."""
        for v in present:
            if book.is_deleted(str(v)):
                self._files.remove(self._version_dir(name, str(v)))

    def gc(self, older_than_s: float = STALE_AFTER_S) -> list[str]:
        """Remove what interrupted writes left behind and no reader can see: staging entries older than
        ``older_than_s`` (a save in progress is younger), and the files of deletions a crash interrupted.
        What was removed, one line each."""
        removed = [f"{STAGING}/{n} (left by an interrupted write)" for n in self._files.sweep_staging(older_than_s)]
        base = self.root / "models"
        for name in self._files.listdir(base):
            try:
                check_name(name)
            except InvalidNameError:
                continue
            if not self._files.is_dir(base / name):
                continue
            with self._files.lock(base / name):
                book, present = self._ledger_locked(name), self._present(name)
                finished = [str(v) for v in present if book.is_deleted(str(v))]
                self._remove_deleted(name, book, present)
            removed += [f"{name}:{v} (a deletion a crash interrupted)" for v in finished]
        return removed

    def delete(self, ref: str) -> ModelVersion:
        """Delete one version (``name:1.2.0``). Refused while an alias points to it. Its number is never
        given to another version."""
        r = Ref.parse(ref)
        if r.name is None or r.version is None:
            raise InvalidNameError(f"delete needs an exact version such as {r.name or 'name'}:1.0.0, got {ref!r}")
        name, version = r.name, r.version
        self._require_model(name)

        def body() -> ModelVersion:
            book = self._ledger_locked(name)
            if book.is_deleted(version):
                raise NotFoundError(f"{name}:{version} does not exist (deleted meanwhile?)")
            if not self._exists(name, version):
                raise NotFoundError(f"model {name!r} has no version {version}")
            holders = sorted(a for a, v in self.aliases(name).items() if v == version)
            if holders:
                raise ConflictError(f"{name}:{version} is held by alias(es) {', '.join(holders)}: move them first")
            trials = sorted(a for a, c in self.release_state(name).canaries.items()
                            if c.state == "running" and c.version == version)
            if trials:
                raise ConflictError(f"{name}:{version} is the running canary of {', '.join(trials)}: promote or"
                                    " abort it first")
            mv = self._entry(name, version, book)
            self._mark_deleted(name, version)
            return mv

        mv = self._transact(name, body)
        self._after_delete(name, version)
        return mv

    def _mark_deleted(self, name: str, version: str) -> None:
        """Record the deletion and remove the version's files (the caller holds the model's lock)."""
        self._files.append_line(self._model_dir(name) / LEDGER, ledger.deleted(version).to_line())
        self._files.remove(self._version_dir(name, version))

    def _after_delete(self, name: str, version: str) -> None:
        """What a deletion does once recorded, outside the model's lock (nothing here)."""

    # -- aliases -------------------------------------------------------------------------------------------
    def aliases(self, name: str) -> dict[str, str]:
        path = self._model_dir(name) / ALIASES
        data = self._files.read_bytes(path)
        return {} if data is None else records.parse_aliases(data, self._where(path))

    def set_alias(self, name: str, alias: str, version: str, *, reason: str | None = None,
                  expected: Expected = NOT_GIVEN) -> AliasMove:
        """Point ``alias`` at ``version``. ``expected`` (compare-and-set): None means the alias must not exist
        yet, a version that it must point there now; otherwise a :class:`ConflictError` names where it points,
        and nothing is written (no history line either)."""
        check_alias(alias)
        return self._move(check_name(name), alias, str(Version.parse(version)), reason, _expected(expected))

    def delete_alias(self, name: str, alias: str, *, reason: str | None = None,
                     expected: Expected = NOT_GIVEN) -> AliasMove:
        """Remove ``alias``; ``expected`` as for :meth:`set_alias`."""
        check_alias(alias)
        return self._move(check_name(name), alias, None, reason, _expected(expected))

    def _move(self, name: str, alias: str, to: str | None, reason: str | None, expected: Expected, *,
              by: str | None = None, rollback: bool = False) -> AliasMove:
        self._require_model(name)

        def body() -> AliasMove:
            current = self.aliases(name)
            holder = current.get(alias)
            if not isinstance(expected, _NotGiven) and holder != expected:
                raise ConflictError(_conflict(name, alias, holder, expected))
            if to is None:
                if holder is None:
                    raise NotFoundError(f"model {name!r} has no alias {alias!r}")
                del current[alias]
            else:
                if self._ledger_locked(name).is_deleted(to) or not self._exists(name, to):
                    raise NotFoundError(f"model {name!r} has no version {to}")
                current[alias] = to
            move = AliasMove(name, alias, holder, to, now_iso(), by or current_user(), reason, rollback)
            self._write_move(name, move, current)
            return move

        return self._transact(name, body)

    def alias_history(self, name: str) -> list[AliasMove]:
        path = self._model_dir(name) / HISTORY
        data = self._files.read_bytes(path)
        if data is None:
            self._require_model(name)
            return []
        return records.parse_history(data, name, self._where(path))

    # -- releases (releases.py) ------------------------------------------------------------------------------
    def release_state(self, name: str) -> ReleaseState:
        """The model's release state (one file read): revision, and the latest canary of each alias."""
        return releases.read_state(self, name)

    def release_history(self, name: str, alias: str | None = None) -> list[Canary]:
        """Every canary start, abort and promotion of the model (of ``alias`` only, if given), oldest first."""
        return releases.read_log(self, name, alias)

    def start_canary(self, name: str, version: str, *, alias: str = "production", weight: float,
                     limits: CanaryLimits = CanaryLimits(), reason: str | None = None,  # noqa: B008 - frozen
                     by: str | None = None) -> Canary:
        """Send ``weight`` percent of ``alias``'s requests to ``version`` (servers following the alias do).
        Refused, writing nothing, when the version or the alias does not exist (NotFoundError), the version
        holds the alias or a canary of it runs already (ConflictError), or weight/limits are out of range
        (BadRequest)."""
        return releases.start_canary(self, name, version, alias=alias, weight=weight, limits=limits,
                                     reason=reason, by=by)

    def end_canary(self, name: str, *, alias: str = "production", outcome: Outcome, reason: str | None = None,
                   by: str | None = None, expected_id: str | None = None) -> Canary:
        """End the running canary of ``alias``: ``"aborted"``, or ``"promoted"`` (the alias moves to it in the
        same locked step, compare-and-set against the holder it started from). With ``expected_id`` only that
        canary is ended: of replicas aborting at once, one wins and the others get ConflictError."""
        return releases.end_canary(self, name, alias=alias, outcome=outcome, reason=reason, by=by,
                                   expected_id=expected_id)

    def rollback(self, name: str, *, alias: str = "production", reason: str | None = None,
                 by: str | None = None) -> AliasMove:
        """Move ``alias`` back to its previous holder (rollbacks stack; deleted versions are skipped) and abort
        a running canary of it, in one locked step."""
        return releases.rollback(self, name, alias=alias, reason=reason, by=by).move

    # -- evaluations ---------------------------------------------------------------------------------------
    def record_evaluation(self, mv: ModelVersion, record: dict[str, Any]) -> None:
        """Append ``record`` (metrics, task, rows, ... as :class:`shipml.Evaluation` stores them) for ``mv``."""
        problem = records.evaluation_problem(record)
        if problem is not None:
            raise BadRequest(f"the evaluation record for {mv.ref} {problem}; nothing was stored")
        mdir = self._require_model(mv.name)
        with self._files.lock(mdir):
            self._files.append_line(mdir / EVALUATIONS, orjson.dumps({"version": mv.version, **record}))

    def evaluations(self, mv: ModelVersion) -> list[dict[str, Any]]:
        path = self._model_dir(mv.name) / EVALUATIONS
        data = self._files.read_bytes(path)
        if data is None:
            return []
        return records.parse_evaluations(data, self._where(path), lambda v: v == mv.version)


def _same_history(have: list[AliasMove], given: list[AliasMove], name: str) -> bool:
    """True when ``have`` is ``given`` already; False when there is none yet; else ConflictError."""
    if not have:
        return False
    if [m.to_dict() for m in have] == [m.to_dict() for m in given]:
        return True
    raise ConflictError(f"model {name!r} has another alias history here already ({len(have)} move(s)); a copy"
                        " never merges histories, so its aliases were not copied")


def _expected(expected: Expected) -> Expected:
    if expected is None or isinstance(expected, _NotGiven):
        return expected
    if not isinstance(expected, str):
        raise InvalidNameError(f"expected must be a version, None or NOT_GIVEN, got {expected!r}")
    return str(Version.parse(expected))


def _conflict(name: str, alias: str, holder: str | None, expected: str | None) -> str:
    if expected is None:
        return f"{name}@{alias} points to {holder} (expected it not to exist); nothing changed"
    if holder is None:
        return f"{name}@{alias} does not exist, not {expected}; nothing changed"
    return f"{name}@{alias} points to {holder}, not {expected}; nothing changed"
