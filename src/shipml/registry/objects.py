"""The registry in an object store (S3 and the like): no lock, only conditional writes.

Layout under the store's root (``s3://bucket/prefix``)::

    models/<name>/claims/<x.y.z>                 a version number, taken by one save (If-None-Match: *); kept
                                                 forever, so numbers are never reused (deleted ones included)
    models/<name>/packages/<x.y.z>/<files>       the package, uploaded by the save holding the claim
    models/<name>/versions/<x.y.z>_<sha256>      the commit: created last (If-None-Match: *) once every file is
                                                 uploaded and checked; holds each file's sha256 and size. Its
                                                 name carries the manifest's sha256 (the ledger): one LIST
                                                 gives every committed version and its seal
    models/<name>/state.json                     aliases, their whole history, release state and its log, the
                                                 deleted versions, and the seals (version -> manifest sha256)
                                                 of committed versions: one object, changed by compare-and-set
                                                 on its ETag (If-Match), so a change and its history line land
                                                 together or not at all
    models/<name>/evaluations/<at>-<id>.json     one evaluation record each

A version is visible once its commit exists and the state does not list it as deleted; a save killed before
that leaves a claim (its number stays used) and perhaps some package files, which no reader ever sees.

Changes of the state run as optimistic transactions (:meth:`ObjectRegistry._transact`): read the state and its
ETag, run the same checks the local registry runs under its lock, write the new state with ``If-Match``; when
someone else wrote first, read again and re-run the checks (a compare-and-set by the caller, ``expected=``, is
then judged against the new state). The state carries a fresh ``txid`` on every write, so a write whose answer
was lost (and whose retry was refused) is recognised as ours by reading it back.

Versions are read through the local :class:`~shipml.registry.cache.VersionCache`: downloaded once, verified,
and loaded from there, with the same hash checks as a local registry. A save copies its seal into the state
after its commit (best effort: a save killed in between leaves the commit as the only record), and an alias
move or a canary copies its version's seal there too, so ``name@alias`` and ``name:x.y.z`` resolve from the
state alone: a cached version loads after that one small read. A version without a seal in the state (or the
bare ``name``, the newest one) is resolved from the listing of the commits as well.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from shipml.errors import (
    AlreadyExistsError,
    BadRequest,
    ConflictError,
    IntegrityError,
    InvalidNameError,
    NotFoundError,
    ShipmlError,
)
from shipml.package.lineage import current_user, now_iso
from shipml.package.loaded import sha256_file
from shipml.package.manifest import MANIFEST, Manifest, manifest_digest, write_manifest
from shipml.registry import records, releases
from shipml.registry.cache import STALE_AFTER_S, CachedFile, VersionCache
from shipml.registry.ledger import Ledger, LedgerRecord, is_sha256
from shipml.registry.names import FIRST_VERSION, Ref, Version, check_name
from shipml.registry.records import AliasMove, corrupt
from shipml.registry.registry import ModelSummary, ModelVersion, Registry, T, _same_history
from shipml.registry.releases import Canary, ReleaseState
from shipml.registry.store import PreconditionFailed, Store, check_key

__all__ = ["ObjectRegistry"]

STATE = "state.json"
MAX_ATTEMPTS = 64
DEADLINE_S = 60.0


@dataclass
class _Transaction:
    name: str
    doc: dict[str, Any]
    token: str | None
    dirty: bool = False
    commits: dict[str, tuple[str, str]] | None = None  # the versions' commits, listed once per transaction


class ObjectRegistry(Registry):
    """A registry in an object store: ``s3://bucket/prefix`` (or any :class:`~shipml.registry.store.Store`)."""

    def __init__(self, uri: str | None = None, *, store: Store | None = None,
                 cache: VersionCache | None = None) -> None:
        if store is None:
            from shipml.registry.s3 import S3Store

            store = S3Store(uri if uri is not None else os.environ.get("SHIPML_HOME", ""))
        self.store = store
        self._cache = cache if cache is not None else VersionCache()
        # this registry's local files (tokens of servers started from it): next to its cache, per store
        self.root = self._cache.root / "registries" / hashlib.sha256(store.describe().encode()).hexdigest()[:16]
        self._tx = threading.local()

    @property
    def location(self) -> str:
        return self.store.describe()

    @property
    def local_directory(self) -> Path | None:
        return None

    def __repr__(self) -> str:
        return f"Registry({self.location!r})"

    # -- keys ----------------------------------------------------------------------------------------------
    @staticmethod
    def _key(name: str, *parts: str) -> str:
        return "/".join(["models", check_name(name), *parts])

    def _at(self, key: str) -> str:
        return f"{self.location.rstrip('/')}/{key}"

    # -- the model's state (state.json) --------------------------------------------------------------------
    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Inside this block (this thread) each model's state is read once and reused by every read."""
        if getattr(self._tx, "views", None) is not None:
            yield
            return
        self._tx.views = {}
        try:
            yield
        finally:
            self._tx.views = None

    def _read_state(self, name: str, *, fresh: bool = False) -> tuple[dict[str, Any], str | None]:
        """The state and its ETag; inside a :meth:`snapshot` the first read's, unless ``fresh`` (a change). Only
        a transaction changes a state document, and it reads afresh: the views are never written to."""
        views: dict[str, tuple[dict[str, Any], str | None]] | None = getattr(self._tx, "views", None)
        if views is not None and not fresh and name in views:
            return views[name]
        key = self._key(name, STATE)
        found = self.store.get(key)
        if found is None:
            out: tuple[dict[str, Any], str | None] = ({}, None)
        else:
            out = records.json_object(found.data, self._at(key), "of the model's state"), found.token
        if views is not None and not fresh:
            views[name] = out
        return out

    def _state(self, name: str) -> dict[str, Any] | None:
        """The state document: the open transaction's (for this model), else read now; None if none exists."""
        tx: _Transaction | None = getattr(self._tx, "current", None)
        if tx is not None and tx.name == name:
            return tx.doc if tx.doc or tx.dirty else None
        doc, token = self._read_state(name)
        return doc if token is not None else None

    def _open(self, name: str) -> _Transaction:
        tx: _Transaction | None = getattr(self._tx, "current", None)
        if tx is None or tx.name != name:
            raise ShipmlError(f"internal error: a change of model {name!r} outside its transaction")
        tx.dirty = True
        return tx

    def _part(self, doc: dict[str, Any] | None, field: str, kind: type, name: str) -> Any:
        value = (doc or {}).get(field)
        if value is None:
            return kind()
        if not isinstance(value, kind):
            raise corrupt(self._at(self._key(name, STATE)), f"has no valid {field!r}")
        return value

    @staticmethod
    def _lines(items: list[Any]) -> bytes:
        return b"".join(orjson.dumps(item) + b"\n" for item in items)

    def _transact(self, name: str, body: Callable[[], T]) -> T:
        """Run ``body`` against the model's state and write what it changed with compare-and-set; re-run it
        (checks included) when another writer got there first. Re-entrant within a thread."""
        tx: _Transaction | None = getattr(self._tx, "current", None)
        if tx is not None:
            if tx.name != name:
                raise ShipmlError(f"internal error: a change of model {name!r} inside one of {tx.name!r}")
            return body()
        views = getattr(self._tx, "views", None)
        if views is not None:  # a snapshot's reads after this change read it afresh
            views.pop(name, None)
        key = self._key(name, STATE)
        deadline = time.monotonic() + DEADLINE_S
        pause = 0.005
        for _ in range(MAX_ATTEMPTS):
            doc, token = self._read_state(name, fresh=True)
            tx = _Transaction(name, doc, token)
            self._tx.current = tx
            try:
                result = body()
            finally:
                self._tx.current = None
            if not tx.dirty:
                return result
            data = orjson.dumps({**tx.doc, "txid": uuid.uuid4().hex})
            try:
                if token is None:
                    self.store.create(key, data)
                else:
                    self.store.replace(key, data, token)
                return result
            except PreconditionFailed:
                found = self.store.get(key)
                if found is not None and found.data == data:  # ours landed; only its answer was lost
                    return result
            if time.monotonic() > deadline:
                break
            time.sleep(random.uniform(0, pause))
            pause = min(pause * 2, 0.5)
        raise ConflictError(f"the state of model {name!r} in {self.location} kept changing while this change was"
                            " being made; nothing changed, try again")

    # -- reading the state ----------------------------------------------------------------------------------
    def aliases(self, name: str) -> dict[str, str]:
        doc = self._state(name)
        found = self._part(doc, "aliases", dict, name)
        return records.parse_aliases(orjson.dumps(found), self._at(self._key(name, STATE)))

    def alias_history(self, name: str) -> list[AliasMove]:
        doc = self._state(name)
        if doc is None:
            self._require_model(name)
            return []
        found = self._part(doc, "history", list, name)
        return records.parse_history(self._lines(found), name, self._at(self._key(name, STATE)) + " history")

    def release_state(self, name: str) -> ReleaseState:
        doc = self._state(name)
        found = self._part(doc, "release", dict, name)
        if not found:
            if doc is None:  # a state exists only for a model saved here
                self._require_model(name)
            return ReleaseState(check_name(name))
        return releases.parse_state(orjson.dumps(found), name, self._at(self._key(name, STATE)) + " release")

    def release_history(self, name: str, alias: str | None = None) -> list[Canary]:
        doc = self._state(name)
        if doc is None:
            self._require_model(name)
            return []
        found = releases.parse_log(self._lines(self._part(doc, "releases", list, name)), name,
                                   self._at(self._key(name, STATE)) + " releases")
        return found if alias is None else [c for c in found if c.alias == alias]

    def _deleted(self, name: str) -> list[str]:
        out = []
        for value in self._part(self._state(name), "deleted", list, name):
            try:
                out.append(str(Version.parse(value)))
            except InvalidNameError:
                raise corrupt(self._at(self._key(name, STATE)), "lists an invalid deleted version") from None
        return out

    # -- changing the state (inside _transact) ---------------------------------------------------------------
    def _write_move(self, name: str, move: AliasMove, aliases: dict[str, str]) -> None:
        tx = self._open(name)
        tx.doc["history"] = [*self._part(tx.doc, "history", list, name), move.to_dict()]
        tx.doc["aliases"] = dict(sorted(aliases.items()))
        self._seal(name, move.to_version)

    def _seal(self, name: str, *versions: str | None) -> None:
        """Copy the commits' seals of ``versions`` into the state (inside a transaction)."""
        tx = self._open(name)
        seals = dict(self._part(tx.doc, "seals", dict, name))
        book = self._ledger(name)
        for version in versions:
            digest = book.digest(version) if version is not None else None
            if version is not None and digest is not None:
                seals[version] = digest
        tx.doc["seals"] = dict(sorted(seals.items()))

    def _record_release(self, state: ReleaseState, canary: Canary) -> None:
        tx = self._open(state.name)
        self._seal(state.name, canary.version, canary.stable)
        new = state.after(canary)
        tx.doc["releases"] = [*self._part(tx.doc, "releases", list, state.name), canary.to_dict()]
        tx.doc["release"] = new.to_dict()

    def _import_aliases(self, name: str, moves: list[AliasMove], aliases: dict[str, str],
                        deleted: list[str]) -> int:
        for version in deleted:  # claimed, so a save never takes the number
            with suppress(PreconditionFailed):
                self.store.create(self._key(name, "claims", version),
                                  orjson.dumps({"copied": "deleted", "at": now_iso(), "by": current_user()}))

        def body() -> int:
            tx = self._open(name)
            tx.doc["deleted"] = sorted({*self._deleted(name), *deleted}, key=Version.parse)
            self._seal(name, *aliases.values())
            if _same_history(self.alias_history(name), moves, name):
                return 0
            tx.doc["history"] = [m.to_dict() for m in moves]
            tx.doc["aliases"] = dict(sorted(aliases.items()))
            return len(moves)

        return self._transact(name, body)

    def _mark_deleted(self, name: str, version: str) -> None:
        tx = self._open(name)
        tx.doc["deleted"] = [*self._part(tx.doc, "deleted", list, name), version]

    def _after_delete(self, name: str, version: str) -> None:
        """Remove the deleted version's files and commit (a crash here leaves garbage no reader sees)."""
        for key in self.store.keys(self._key(name, "packages", version) + "/"):
            self.store.delete(key)
        for key, (v, _digest) in self._commits(name).items():
            if v == version:
                self.store.delete(key)

    # -- versions --------------------------------------------------------------------------------------------
    def get(self, ref: str | Ref) -> ModelVersion:
        """As :meth:`Registry.get`: ``name@alias`` or ``name:x.y.z`` from one read of the model's state when it
        holds the version's seal (a cached version then loads with no other request), else with one listing of
        the commits as well."""
        r = Ref.parse(ref) if isinstance(ref, str) else ref
        if r.name is None or r.path is not None or getattr(self._tx, "current", None) is not None:
            return super().get(r)
        doc, token = self._read_state(r.name)
        self._tx.current = _Transaction(r.name, doc, token)  # a read-only view: never written
        try:
            return self._sealed(r.name, r) or super().get(r)
        finally:
            self._tx.current = None

    def _sealed(self, name: str, r: Ref) -> ModelVersion | None:
        """``r`` resolved from the state alone, when it names a version (or an alias of one) the state holds a
        seal of and does not list as deleted; None otherwise (the caller lists the commits)."""
        if r.alias is not None:
            version = self.aliases(name).get(r.alias)
        elif r.version is not None:
            version = str(Version.parse(r.version))
        else:
            return None
        if version is None or version in self._deleted(name):
            return None
        digest = self._part(self._state(name), "seals", dict, name).get(version)
        return self._version(name, version, digest) if is_sha256(digest) else None

    def _commits(self, name: str) -> dict[str, tuple[str, str]]:
        """Commit key -> (version, manifest sha256), from one LIST (once per transaction)."""
        tx: _Transaction | None = getattr(self._tx, "current", None)
        if tx is not None and tx.name == name and tx.commits is not None:
            return tx.commits
        out = {}
        for key in self.store.keys(self._key(name, "versions") + "/"):
            version, _, digest = key.rsplit("/", 1)[1].partition("_")
            try:
                version = str(Version.parse(version))
            except InvalidNameError:
                raise corrupt(self._at(key), "is not a version's commit (x.y.z_<sha256>)") from None
            if not is_sha256(digest):
                raise corrupt(self._at(key), "is not a version's commit (x.y.z_<sha256>)")
            out[key] = (version, digest)
        if tx is not None and tx.name == name:
            tx.commits = out
        return out

    def _ledger(self, name: str) -> Ledger:
        found = [LedgerRecord("saved", v, d, "", None) for v, d in self._commits(name).values()]
        found += [LedgerRecord("deleted", v, None, "", None) for v in self._deleted(name)]
        return Ledger(tuple(found))

    def _ledger_locked(self, name: str) -> Ledger:
        return self._ledger(name)

    def _present(self, name: str) -> list[Version]:
        return sorted(Version.parse(v) for v, _ in self._commits(name).values())

    def _exists(self, name: str, version: str) -> bool:
        return any(v == version for v, _ in self._commits(name).values())

    def _require_model(self, name: str) -> Path:
        if not self.store.keys(self._key(name, "claims") + "/"):
            raise NotFoundError(f"no model named {name!r} in {self}")
        return self.root / "models" / name

    def _claimed(self, name: str) -> list[Version]:
        out = []
        for key in self.store.keys(self._key(name, "claims") + "/"):
            try:
                out.append(Version.parse(key.rsplit("/", 1)[1]))
            except InvalidNameError:
                raise corrupt(self._at(key), "is not a version number's claim") from None
        return out

    def _entry(self, name: str, version: str, book: Ledger) -> ModelVersion:
        digest = book.digest(version)
        if digest is None:
            raise NotFoundError(f"model {name!r} has no version {version}")
        return self._version(name, version, digest)

    def _version(self, name: str, version: str, digest: str) -> ModelVersion:
        """``name:version`` sealed by ``digest``: its files are the cache's entry, fetched on first use."""
        return ModelVersion(name, version, self._cache.entry(digest), digest,
                            fetch=lambda: self._fetch(name, version, digest))

    def _fetch(self, name: str, version: str, digest: str) -> Path:
        """The verified local copy of ``name:version`` (downloaded into the cache the first time)."""
        found = self._cache.lookup(digest)
        if found is not None:
            return found
        key = self._key(name, "versions", f"{version}_{digest}")
        commit = self.store.get(key)
        if commit is None:
            if version in self._deleted(name):
                raise NotFoundError(f"{name}:{version} was deleted")
            raise IntegrityError(f"{name}:{version}: its commit {self._at(key)} is missing (the registry's records"
                                 " were edited, or the version deleted by hand); refusing to use it")
        files = self._commit_files(commit.data, self._at(key))
        prefix = self._key(name, "packages", version)
        return self._cache.fill(digest, files, lambda rel, dest: self.store.download(f"{prefix}/{rel}", dest),
                                f"{name}:{version}")

    def _commit_files(self, data: bytes, where: str) -> dict[str, CachedFile]:
        value = records.json_object(data, where, "describing a version's files")
        files = value.get("files")
        if not isinstance(files, dict) or MANIFEST not in files:
            raise corrupt(where, "has no valid 'files'")
        out = {}
        for rel, info in files.items():
            try:
                check_key(rel)
            except InvalidNameError:
                raise corrupt(where, f"lists an invalid file name {str(rel)[:64]!r}") from None
            if not (isinstance(info, dict) and isinstance(info.get("sha256"), str)
                    and isinstance(info.get("size"), int) and not isinstance(info.get("size"), bool)):
                raise corrupt(where, f"has no valid sha256 and size for {rel}")
            out[rel] = CachedFile(info["sha256"], info["size"])
        return out

    def models(self) -> list[ModelSummary]:
        out = []
        for child in self.store.children("models/"):
            try:
                check_name(child)
            except InvalidNameError:
                continue
            versions = self._version_list(child, self._ledger(child))
            if versions:
                out.append(ModelSummary(child, str(versions[-1]), len(versions), self.aliases(child)))
        return out

    # -- saving ----------------------------------------------------------------------------------------------
    @contextmanager
    def _staging(self) -> Iterator[Path]:
        base = self._cache.root / "staging"
        base.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=base) as staging:
            yield Path(staging)

    def _claim(self, name: str, version: str | None, save: str) -> str:
        """Take a version number with a conditional create: ``version``, or the next minor one."""
        body = orjson.dumps({"save": save, "at": now_iso(), "by": current_user()})

        def take(v: str) -> bool:
            key = self._key(name, "claims", v)
            try:
                self.store.create(key, body)
            except PreconditionFailed:
                found = self.store.get(key)
                return found is not None and found.data == body  # ours; the answer was lost
            return True

        if version is not None:
            if take(version):
                return version
            self._refuse_taken(name, version, self._ledger(name), self._present(name))
            raise AlreadyExistsError(f"{name}:{version} is taken by another save (running, or one that did not"
                                     " finish); versions are never reused")
        for _ in range(MAX_ATTEMPTS):
            taken = self._claimed(name)
            candidate = str(max(taken).next_minor() if taken else FIRST_VERSION)
            if take(candidate):
                return candidate
        raise ConflictError(f"could not take a version number of {name!r} in {self.location}: other saves kept"
                            " taking them first; try again")

    def _commit(self, staging: Path, manifest: Manifest, version: str | None) -> ModelVersion:
        """Claim a number, upload the package, check it arrived, then create its commit: the version appears
        only with that last write."""
        name = check_name(manifest.name)
        save = uuid.uuid4().hex
        version = self._claim(name, version, save)
        write_manifest(staging, manifest.model_copy(update={"version": version}))
        digest = manifest_digest((staging / MANIFEST).read_bytes())
        files: dict[str, dict[str, Any]] = {}
        for path in sorted(p for p in staging.rglob("*") if p.is_file() and not p.is_symlink()):
            rel = path.relative_to(staging).as_posix()
            check_key(rel)
            files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
        prefix = self._key(name, "packages", version)
        try:
            for rel in files:
                self.store.upload(f"{prefix}/{rel}", staging / rel)
            arrived = {key[len(prefix) + 1:] for key in self.store.keys(prefix + "/")}
            missing = sorted(set(files) - arrived)
            if missing:
                raise ConflictError(f"{name}:{version}: {', '.join(missing)} did not arrive in {self.location};"
                                    " the version was not committed")
            commit = orjson.dumps({"version": version, "manifest_sha256": digest, "files": files,
                                   "at": now_iso(), "by": current_user(), "save": save})
            key = self._key(name, "versions", f"{version}_{digest}")
            try:
                self.store.create(key, commit)
            except PreconditionFailed:
                found = self.store.get(key)
                if found is None or found.data != commit:
                    raise
        except BaseException:
            for key in self.store.keys(prefix + "/"):  # garbage no reader can see; cleaned as a courtesy
                self.store.delete(key)
            raise
        with suppress(ShipmlError):  # the version exists now; without its seal in the state it is listed
            self._transact(name, lambda: self._seal(name, version))
        return self._version(name, version, digest)

    # -- garbage -------------------------------------------------------------------------------------------------
    def gc(self, older_than_s: float = STALE_AFTER_S) -> list[str]:
        """Remove what no reader can see: the files of saves that never committed, once their claim is older
        than ``older_than_s`` (a save in progress is younger; its claim stays, so its number is never reused),
        and the files and commits of deleted versions. What was removed, one line each."""
        removed = []
        cutoff = time.time() - older_than_s
        for name in self.store.children("models/"):
            try:
                check_name(name)
            except InvalidNameError:
                continue
            committed = {v for v, _ in self._commits(name).values()}
            deleted = set(self._deleted(name))
            for key in self.store.keys(self._key(name, "claims") + "/"):
                version = key.rsplit("/", 1)[1]
                if version in deleted:
                    files = self.store.keys(self._key(name, "packages", version) + "/")
                    if files or version in committed:
                        self._after_delete(name, version)
                        removed.append(f"{name}:{version} (deleted; {len(files)} file(s))")
                elif version not in committed and self._claimed_at(key) < cutoff:
                    files = self.store.keys(self._key(name, "packages", version) + "/")
                    for file in files:
                        self.store.delete(file)
                    if files:
                        removed.append(f"{name}:{version} (a save that never committed; {len(files)} file(s))")
        removed += [f"cache tmp/{n}" for n in self._cache.sweep(older_than_s)]
        return removed

    def _claimed_at(self, key: str) -> float:
        found = self.store.get(key)
        at = records.json_object(found.data, self._at(key), "claiming a version").get("at") if found else None
        try:
            return datetime.fromisoformat(str(at)).timestamp()
        except ValueError:
            raise corrupt(self._at(key), "has no valid 'at'") from None

    # -- evaluations -----------------------------------------------------------------------------------------
    def record_evaluation(self, mv: ModelVersion, record: dict[str, Any]) -> None:
        problem = records.evaluation_problem(record)
        if problem is not None:
            raise BadRequest(f"the evaluation record for {mv.ref} {problem}; nothing was stored")
        self._require_model(mv.name)
        at = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[1:]
        key = self._key(mv.name, "evaluations", f"{at}-{uuid.uuid4().hex}.json")
        self.store.create(key, orjson.dumps({"version": mv.version, **record}))

    def evaluations(self, mv: ModelVersion) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for key in self.store.keys(self._key(mv.name, "evaluations") + "/"):
            found = self.store.get(key)
            if found is not None:
                out += records.parse_evaluations(found.data + b"\n", self._at(key), lambda v: v == mv.version)
        return out

