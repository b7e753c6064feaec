"""Copy models between two registries of any kind (local <-> S3): every version under its own number, verified
and re-admitted like an import (hashes checked, loaded, golden sample re-run), its evaluations, the deleted
version numbers (never to be reused there either), then the aliases with their whole history.

A copy is resumable: a version the destination holds already is skipped when its artefacts are the same
(ConflictError when they differ), and a history the destination has already is left as it is when it is the
same (ConflictError when it differs: histories are never merged). The release state (canary records) is not
copied: a canary is an operation of one registry's servers, not part of a model's history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shipml.errors import ConflictError, NotFoundError
from shipml.registry.names import check_name
from shipml.registry.registry import ModelVersion, Registry

__all__ = ["CopyReport", "copy_models"]


@dataclass
class CopyReport:
    copied: list[str] = field(default_factory=list)  # refs written to the destination
    skipped: list[str] = field(default_factory=list)  # refs the destination held already, the same
    moves: dict[str, int] = field(default_factory=dict)  # model -> alias moves written


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
            new = dst.add_package(src.directory(mv), name, mv.version, trusted=manifest.trust.required)
            for record in src.evaluations(mv):
                dst.record_evaluation(new, {k: v for k, v in record.items() if k != "version"})
            report.copied.append(new.ref)
        deleted = [r.version for r in book.records if r.event == "deleted"]
        report.moves[name] = dst._import_aliases(name, src.alias_history(name), src.aliases(name), deleted)
    return report
