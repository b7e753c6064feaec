"""The ledger of a model's versions, ``models/<name>/versions.jsonl``: append-only, fsync'd, one line per event.

``{"event": "saved", "version": "1.2.0", "manifest_sha256": "<hex>", "at": ..., "by": ...}`` is written when
the registry commits a version (save, import, add_package), before the version's directory is renamed into
place; ``{"event": "deleted", "version": "1.2.0", "at": ..., "by": ...}`` before a deletion.

Why: a version's manifest (``shipml.json``) says what the model is, what it needs and whether it was trusted.
It lives in the version's directory, so whoever can edit that directory could rewrite it and its artefact
hashes together. The ledger keeps the manifest's sha256 outside that directory; every load through the registry
passes it on, and a manifest that does not match is refused. The ledger is the only way in: to accept an edited
manifest, its line must be rewritten, deliberately.

It also remembers every version number ever allocated, deleted ones included, so a number is never reused.

A model whose directory has versions but no ledger (a registry made before shipml kept one) has its versions
recorded once, as they are at that moment, under the model's lock, with a warning in the log; from then on it
is sealed like any other. Where that cannot be written (a read-only registry), its versions load unsealed and
the log says so: their manifests then authenticate nothing (their recorded trust does not count).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from shipml.package.lineage import current_user, now_iso
from shipml.registry.names import Version
from shipml.registry.records import corrupt, field, jsonl, version_field

LEDGER = "versions.jsonl"
_SHA256 = re.compile(r"[0-9a-f]{64}")
Event = Literal["saved", "deleted"]


def is_sha256(value: object) -> bool:
    """Whether ``value`` is a sha256 as the registry writes it: 64 lowercase hex digits."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


@dataclass(frozen=True)
class LedgerRecord:
    event: Event
    version: str
    manifest_sha256: str | None  # for "saved"
    at: str
    by: str | None
    note: str | None = None

    def to_line(self) -> bytes:
        data: dict[str, Any] = {"event": self.event, "version": self.version}
        if self.manifest_sha256 is not None:
            data["manifest_sha256"] = self.manifest_sha256
        data.update(at=self.at, by=self.by)
        if self.note is not None:
            data["note"] = self.note
        return orjson.dumps(data)


def saved(version: str, manifest_sha256: str, note: str | None = None) -> LedgerRecord:
    return LedgerRecord("saved", version, manifest_sha256, now_iso(), current_user(), note)


def deleted(version: str) -> LedgerRecord:
    return LedgerRecord("deleted", version, None, now_iso(), current_user())


@dataclass(frozen=True)
class Ledger:
    """What the ledger of one model says. ``sealed`` is False only for a model made before ledgers whose
    registry could not be written to record it (its manifests load unsealed)."""

    records: tuple[LedgerRecord, ...] = ()
    sealed: bool = True

    def digest(self, version: str) -> str | None:
        """The manifest sha256 recorded for ``version`` when it was committed (None: no record)."""
        for r in self.records:
            if r.event == "saved" and r.version == version:
                return r.manifest_sha256
        return None

    def is_deleted(self, version: str) -> bool:
        return any(r.event == "deleted" and r.version == version for r in self.records)

    def highest(self) -> Version | None:
        """The highest version number ever allocated, deleted ones included."""
        return max((Version.parse(r.version) for r in self.records), default=None)


def parse(data: bytes, where: str) -> tuple[LedgerRecord, ...]:
    out = []
    for line, d in jsonl(data, where):
        event = d.get("event")
        if event not in ("saved", "deleted"):
            raise corrupt(where, "has no valid 'event' (saved or deleted)", line)
        version = str(version_field(d, "version", where, line))
        digest = None
        if event == "saved":
            digest = field(d, "manifest_sha256", str, where, line)
            if not is_sha256(digest):
                raise corrupt(where, "has an invalid 'manifest_sha256'", line)
        out.append(LedgerRecord(event, version, digest, field(d, "at", str, where, line),
                                field(d, "by", str, where, line, optional=True),
                                field(d, "note", str, where, line, optional=True)))
    return tuple(out)
