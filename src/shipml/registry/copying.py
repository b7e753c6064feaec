"""Copy models between two registries of any kind (local <-> S3): every version under its own number, verified
and re-admitted like an import (hashes checked, loaded, golden sample re-run), its evaluations, the deleted
version numbers (never to be reused there either), then the aliases with their whole history.

Then the release log (every canary, running or ended) and the release state it leads to: a running canary
is copied running, so servers started from the destination take it up where it stands.

A copy is resumable: a version the destination holds already is skipped when its artefacts are the same
(ConflictError when they differ), and a history (of aliases, of releases) the destination has already is left
as it is when it is the same (ConflictError when it differs: histories are never merged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shipml.errors import ConflictError, NotFoundError
from shipml.registry.names import check_name
from shipml.registry.registry import ModelVersion, Registry
from shipml.registry.releases import Canary, ReleaseState

__all__ = ["CopyReport", "copy_models"]


@dataclass
class CopyReport:
    copied: list[str] = field(default_factory=list)  # refs written to the destination
    skipped: list[str] = field(default_factory=list)  # refs the destination held already, the same
    moves: dict[str, int] = field(default_factory=dict)  # model -> alias moves written
    releases: dict[str, int] = field(default_factory=dict)  # model -> canary records written


def _artefacts(mv: ModelVersion) -> list[tuple[str, str]]:
    return sorted((a.path, a.sha256) for a in mv.manifest.artifacts)


def copy_models(src: Registry, dst: Registry, names: Sequence[str] | None = None) -> CopyReport:
    """Copy ``names`` (default: every model of ``src``) from ``src`` to ``dst``; what was done."""
    report = CopyReport()
    for name in names if names is not None else [m.name for m in src.models()]:
        check_name(name)
        versions = src.versions(name)
        book = src._ledger(name)
        for mv in versions:
            manifest = mv.manifest  # sealed: the bytes the source recorded when it saved this version
            try:
                there: ModelVersion | None = dst.get(mv.ref)
            except NotFoundError:
                there = None
            if there is not None:
                if _artefacts(there) != _artefacts(mv):
                    raise ConflictError(f"{mv.ref} exists in {dst.location} with other artefacts; nothing more"
                                        " of it was copied")
                report.skipped.append(mv.ref)
                continue
            new = dst.add_package(src.directory(mv), name, mv.version, trusted=manifest.trust.required,
                                  manifest_sha256=mv.manifest_sha256)
            for record in src.evaluations(mv):
                dst.record_evaluation(new, {k: v for k, v in record.items() if k != "version"})
            report.copied.append(new.ref)
        deleted = [r.version for r in book.records if r.event == "deleted"]
        report.moves[name] = dst._import_aliases(name, src.alias_history(name), src.aliases(name), deleted)
        report.releases[name] = _copy_releases(dst, name, src.release_history(name))
    return report


def _copy_releases(dst: Registry, name: str, log: list[Canary]) -> int:
    """Replay ``log`` (another registry's release log of ``name``) into ``dst``, where the model has no release
    log yet: each record logged and made its alias's latest canary, as when it happened. The records written."""

    def body() -> int:
        have = dst.release_history(name)
        if [c.to_dict() for c in have] == [c.to_dict() for c in log]:
            return 0
        if have:
            raise ConflictError(f"model {name!r} has another release log here already ({len(have)} record(s)); a"
                                " copy never merges histories, so its canaries were not copied")
        state = ReleaseState(name)
        for canary in log:
            dst._record_release(state, canary)
            state = state.after(canary)
        return len(log)

    return dst._transact(name, body)
