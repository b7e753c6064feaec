"""The registry's small files, read strictly: aliases.json, and the JSON-lines files (history, evaluations, the
ledger). A file that does not hold what it must is a :class:`~shipml.errors.RegistryCorrupt` naming the file
(relative to the root) and the line, never a traceback nor a silently skipped record.

One exception, by design: a last line without its newline is what a crash in the middle of an append leaves.
That append was never acknowledged, so the line is ignored (and cut off by the next append).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from shipml.errors import InvalidNameError, RegistryCorrupt
from shipml.registry.names import Version, check_alias

_RESTORE = "restore it from a backup or repair it by hand"


def corrupt(where: str, problem: str, line: int | None = None) -> RegistryCorrupt:
    at = f" line {line}" if line is not None else ""
    return RegistryCorrupt(f"registry file {where}{at} {problem}; {_RESTORE}")


def jsonl(data: bytes, where: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every complete line of a JSON-lines file."""
    lines = data.split(b"\n")
    lines.pop()  # the part after the last newline: empty, or a torn append
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise corrupt(where, "is not valid JSON", number) from None
        if not isinstance(value, dict):
            raise corrupt(where, "is not a JSON object", number)
        out.append((number, value))
    return out


def field(record: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, line: int,
          *, optional: bool = False) -> Any:
    value = record.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise corrupt(where, f"has no valid {key!r}", line)
    return value


def version_field(record: dict[str, Any], key: str, where: str, line: int, *, optional: bool = False) -> str | None:
    value = field(record, key, str, where, line, optional=optional)
    if value is None:
        return None
    try:
        return str(Version.parse(value))
    except InvalidNameError:
        raise corrupt(where, f"has an invalid version in {key!r}", line) from None


# -- aliases.json ------------------------------------------------------------------------------------------

def json_object(data: bytes, where: str, what: str) -> dict[str, Any]:
    """``data`` as a JSON object, or RegistryCorrupt naming ``where`` (``what``: the object it should be)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise corrupt(where, "is not valid JSON") from None
    if not isinstance(value, dict):
        raise corrupt(where, f"is not a JSON object {what}")
    return value


def parse_aliases(data: bytes, where: str) -> dict[str, str]:
    value = json_object(data, where, "of alias -> version")
    out: dict[str, str] = {}
    for alias, version in value.items():
        try:
            check_alias(alias)
        except InvalidNameError:
            raise corrupt(where, f"holds an invalid alias name {alias[:64]!r}") from None
        if not isinstance(version, str):
            raise corrupt(where, f"maps alias {alias!r} to a {type(version).__name__}, not a version")
        try:
            out[alias] = str(Version.parse(version))
        except InvalidNameError:
            raise corrupt(where, f"maps alias {alias!r} to an invalid version {version[:32]!r}") from None
    return out


# -- history.jsonl -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AliasMove:
    name: str
    alias: str
    from_version: str | None
    to_version: str | None
    at: str
    by: str | None
    reason: str | None
    rollback: bool = False  # a move made by ``rollback``: replaying the history pops instead of pushing

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "alias": self.alias, "from": self.from_version,
                               "to": self.to_version, "at": self.at, "by": self.by, "reason": self.reason}
        if self.rollback:
            out["rollback"] = True
        return out


def parse_history(data: bytes, name: str, where: str) -> list[AliasMove]:
    moves = []
    for line, d in jsonl(data, where):
        alias = field(d, "alias", str, where, line)
        try:
            check_alias(alias)
        except InvalidNameError:
            raise corrupt(where, "has an invalid alias name", line) from None
        moves.append(AliasMove(name=name, alias=alias, from_version=version_field(d, "from", where, line,
                                                                                    optional=True),
                               to_version=version_field(d, "to", where, line, optional=True),
                               at=field(d, "at", str, where, line), by=field(d, "by", str, where, line,
                                                                             optional=True),
                               reason=field(d, "reason", str, where, line, optional=True),
                               rollback="rollback" in d and field(d, "rollback", bool, where, line)))
    return moves


# -- evaluations.jsonl -------------------------------------------------------------------------------------

_EVALUATION_FIELDS: dict[str, type] = {
    "task": str, "rows": int, "rejected": int, "data": str, "fingerprint": str, "target": str, "at": str,
    "by": str,
}


def evaluation_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with an evaluation record (each field optional but typed), or None."""
    for key, kind in _EVALUATION_FIELDS.items():
        value = record.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            return f"has no valid {key!r}"
    metrics = record.get("metrics", {})
    if not isinstance(metrics, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in metrics.items()):
        return "has metrics that are not name -> number"
    return None


def parse_evaluations(data: bytes, where: str, keep: Callable[[str], bool]) -> list[dict[str, Any]]:
    """Every evaluation record (each checked), those of the versions ``keep`` accepts."""
    out = []
    for line, d in jsonl(data, where):
        version = version_field(d, "version", where, line)
        problem = evaluation_problem(d)
        if problem is not None:
            raise corrupt(where, problem, line)
        if keep(str(version)):
            out.append(d)
    return out
