"""A model's release state in the registry: canaries of its aliases, and rollback of an alias.

Two files, next to ``aliases.json`` and ``history.jsonl`` in ``models/<name>/``::

    release.json     {"revision": 3, "canaries": {"production": {<canary record>}}}: the state now, replaced
                     atomically under the model's lock; missing = revision 0, no canaries
    releases.jsonl   every canary start, abort and promotion: the canary's record as it was after the change

``revision`` grows by one with every change of ``release.json``, so a server that polls it can tell a change
from a re-read. Each alias keeps its latest canary (running, or how it ended). Every change happens under the
model's lock, after checking what is there now (compare-and-set): two replicas aborting the same canary at once
get one abort recorded and one :class:`~shipml.errors.ConflictError`. Both files are parsed strictly: anything
but what they must hold is a :class:`~shipml.errors.RegistryCorrupt` naming the file.

Rollback replays the alias's history as a stack of holders: a move pushes its ``to``, a rollback (marked
``"rollback": true`` in its history line) pops back to its ``to``, and a removal of the alias empties it. So two
rollbacks go back two releases, not back and forth; holders since deleted are skipped.

The :class:`~shipml.registry.Registry` methods of the same names are the public entry points; the functions
here take the registry and use its files, lock and alias moves (one package, one set of files).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

import orjson

from shipml.errors import BadRequest, ConflictError, InvalidNameError, NotFoundError
from shipml.package.lineage import current_user, now_iso
from shipml.registry.names import Version, check_alias, check_name
from shipml.registry.records import AliasMove, corrupt, json_object, jsonl

if TYPE_CHECKING:
    from pathlib import Path

    from shipml.registry.registry import Registry

__all__ = ["RELEASE", "RELEASES", "Canary", "CanaryLimits", "CanaryState", "Outcome", "ReleaseState", "Rollback"]

RELEASE = "release.json"
RELEASES = "releases.jsonl"
#: the largest ``window`` accepted: a server keeps that many recent canary requests in memory
MAX_WINDOW = 1_000_000
_MAX_ID = 128

CanaryState = Literal["running", "aborted", "promoted"]
Outcome = Literal["aborted", "promoted"]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _limits_problem(limits: CanaryLimits) -> str | None:
    rate, p99, least, window = limits.max_error_rate, limits.max_p99_ms, limits.min_requests, limits.window
    if not (_number(rate) and 0 <= rate < 1):
        return f"max_error_rate must be a share with 0 <= max_error_rate < 1 (0.01 is 1%), got {rate!r}"
    if p99 is not None and not (_number(p99) and p99 > 0):
        return f"max_p99_ms must be a number of milliseconds > 0 (or None: no latency limit), got {p99!r}"
    if not (_whole(least) and least >= 1):
        return f"min_requests must be a whole number >= 1, got {least!r}"
    if not (_whole(window) and least <= window <= MAX_WINDOW):
        return f"window must be a whole number with min_requests ({least}) <= window <= {MAX_WINDOW}, got {window!r}"
    return None


@dataclass(frozen=True)
class CanaryLimits:
    """When a server aborts a canary: judged over the canary's last ``window`` requests, once it has seen
    ``min_requests``. Checked on construction (:class:`~shipml.errors.BadRequest` naming the field and the rule)."""

    max_error_rate: float = 0.01  # share of the canary's recent requests that failed, 0 <= x < 1
    max_p99_ms: float | None = None  # p99 latency of the canary's recent requests, > 0
    min_requests: int = 200  # canary requests seen before the limits are judged, >= 1
    window: int = 1000  # how many recent canary requests are judged, >= min_requests

    def __post_init__(self) -> None:
        problem = _limits_problem(self)
        if problem is not None:
            raise BadRequest(f"invalid canary limits: {problem}")
        object.__setattr__(self, "max_error_rate", float(self.max_error_rate))
        if self.max_p99_ms is not None:
            object.__setattr__(self, "max_p99_ms", float(self.max_p99_ms))

    def to_dict(self) -> dict[str, Any]:
        return {"max_error_rate": self.max_error_rate, "max_p99_ms": self.max_p99_ms,
                "min_requests": self.min_requests, "window": self.window}


def check_weight(weight: object) -> float:
    """``weight`` as a float: percent of the alias's requests sent to the candidate, 0 < weight < 100."""
    if not (_number(weight) and 0 < weight < 100):  # type: ignore[operator]
        raise BadRequest(f"invalid canary weight: weight must be a percentage with 0 < weight < 100, got {weight!r}")
    return float(weight)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Canary:
    """One canary of an alias: ``weight`` percent of the alias's requests go to ``version`` instead of
    ``stable`` (the alias's holder when it started) until it is promoted or aborted."""

    id: str  # unique per start, used for compare-and-set
    name: str
    alias: str
    version: str
    stable: str
    weight: float
    limits: CanaryLimits
    state: CanaryState
    started_at: str
    started_by: str | None
    ended_at: str | None = None
    ended_by: str | None = None
    reason: str | None = None  # why it was started, or (once ended) why it ended

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.alias}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "alias": self.alias, "version": self.version,
                "stable": self.stable, "weight": self.weight, "limits": self.limits.to_dict(), "state": self.state,
                "started_at": self.started_at, "started_by": self.started_by, "ended_at": self.ended_at,
                "ended_by": self.ended_by, "reason": self.reason}

    def how_it_ended(self) -> str:
        """"aborted at <when> by <whom>: <why>" (or "running since ..." while it runs)."""
        if self.state == "running":
            return f"running since {self.started_at}"
        return f"{self.state} at {self.ended_at} by {self.ended_by or 'unknown'}: {self.reason or 'no reason given'}"


@dataclass(frozen=True)
class ReleaseState:
    """A model's release state at one revision: the latest canary of each alias, by alias."""

    name: str
    revision: int = 0  # bumped by every change; 0 = nothing recorded yet
    canaries: dict[str, Canary] = field(default_factory=dict)

    def running(self, alias: str) -> Canary | None:
        canary = self.canaries.get(alias)
        return canary if canary is not None and canary.state == "running" else None

    def after(self, canary: Canary) -> ReleaseState:
        """The next revision: ``canary`` logged as its alias's latest."""
        return ReleaseState(self.name, self.revision + 1, {**self.canaries, canary.alias: canary})

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "canaries": {a: c.to_dict() for a, c in sorted(self.canaries.items())}}


@dataclass(frozen=True)
class Rollback:
    """What :func:`rollback` did: the alias move, and the canary of that alias it aborted (if one ran)."""

    move: AliasMove
    aborted: Canary | None = None


# -- strict parsing ----------------------------------------------------------------------------------------

class _Invalid(Exception):
    """A record that is not a canary record; the message says why (wrapped into RegistryCorrupt)."""


def _get(d: dict[str, Any], key: str, check: Callable[[object], bool], optional: bool = False) -> Any:
    value = d.get(key)
    if (value is None and optional) or (value is not None and check(value)):
        return value
    raise _Invalid(f"has no valid {key!r}")


def _text(value: object) -> bool:
    return isinstance(value, str)


def _version(value: object) -> bool:
    try:
        Version.parse(value)  # type: ignore[arg-type]
    except InvalidNameError:
        return False
    return True


def _alias(value: object) -> bool:
    try:
        check_alias(value)  # type: ignore[arg-type]
    except InvalidNameError:
        return False
    return True


def _parse_limits(value: object) -> CanaryLimits:
    if not isinstance(value, dict):
        raise _Invalid("has no valid 'limits'")
    p99 = _get(value, "max_p99_ms", _number, optional=True)
    try:
        return CanaryLimits(max_error_rate=_get(value, "max_error_rate", _number), max_p99_ms=p99,
                            min_requests=_get(value, "min_requests", _whole), window=_get(value, "window", _whole))
    except BadRequest as exc:
        raise _Invalid(f"has invalid limits: {str(exc).removeprefix('invalid canary limits: ')}") from None
    except _Invalid as exc:
        raise _Invalid(str(exc).replace("has no valid", "has limits with no valid", 1)) from None


def _parse_canary(d: object, name: str) -> Canary:
    if not isinstance(d, dict):
        raise _Invalid("is not a JSON object")
    if d.get("name") != name:
        raise _Invalid(f"has no valid 'name' (must be {name!r}, the model's)")
    state = _get(d, "state", lambda v: v in get_args(CanaryState))
    ended_at = _get(d, "ended_at", _text, optional=True)
    if (state == "running") != (ended_at is None):
        raise _Invalid(f"has state {state!r} {'with' if state == 'running' else 'without'} an 'ended_at'")
    canary = Canary(
        id=_get(d, "id", lambda v: isinstance(v, str) and 0 < len(v) <= _MAX_ID),
        name=name, alias=_get(d, "alias", _alias),
        version=str(Version.parse(_get(d, "version", _version))),
        stable=str(Version.parse(_get(d, "stable", _version))),
        weight=float(_get(d, "weight", lambda v: _number(v) and 0 < v < 100)),  # type: ignore[operator]
        limits=_parse_limits(d.get("limits")), state=state,
        started_at=_get(d, "started_at", _text), started_by=_get(d, "started_by", _text, optional=True),
        ended_at=ended_at, ended_by=_get(d, "ended_by", _text, optional=True),
        reason=_get(d, "reason", _text, optional=True),
    )
    if canary.version == canary.stable:
        raise _Invalid("has the same version as candidate and stable")
    return canary


def parse_state(data: bytes, name: str, where: str) -> ReleaseState:
    """``release.json``'s content as a :class:`ReleaseState`, or RegistryCorrupt naming ``where``."""
    value = json_object(data, where, '{"revision": ..., "canaries": {...}}')
    revision = value.get("revision")
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise corrupt(where, "has no valid 'revision' (a whole number >= 0)")
    found = value.get("canaries")
    if not isinstance(found, dict):
        raise corrupt(where, "has no valid 'canaries' (an object of alias -> canary)")
    canaries: dict[str, Canary] = {}
    for alias, record in found.items():
        try:
            canary = _parse_canary(record, name)
        except _Invalid as exc:
            raise corrupt(where, f"has a canary under {alias[:64]!r} that {exc}") from None
        if canary.alias != alias:
            raise corrupt(where, f"has the canary of {canary.alias!r} under {alias[:64]!r}")
        canaries[alias] = canary
    return ReleaseState(name, revision, canaries)


def parse_log(data: bytes, name: str, where: str) -> list[Canary]:
    """Every record of ``releases.jsonl``, or RegistryCorrupt naming ``where`` and the line."""
    out = []
    for line, record in jsonl(data, where):
        try:
            out.append(_parse_canary(record, name))
        except _Invalid as exc:
            raise corrupt(where, f"holds a canary record that {exc}", line) from None
    return out


# -- rollback as a stack -----------------------------------------------------------------------------------

def holder_stack(moves: Iterable[AliasMove], alias: str) -> list[str]:
    """The holders of ``alias`` a rollback can go back through, oldest first, replayed from its history."""
    stack: list[str] = []
    for move in moves:
        if move.alias != alias:
            continue
        if move.to_version is None:  # removed: what it held before does not come back by a rollback
            stack.clear()
        elif move.rollback:
            while stack and stack[-1] != move.to_version:
                stack.pop()
            if not stack:
                stack.append(move.to_version)
        elif not stack or stack[-1] != move.to_version:
            stack.append(move.to_version)
    return stack


def rollback_target(moves: Iterable[AliasMove], alias: str, holder: str, usable: Callable[[str], bool]) -> str | None:
    """The version a rollback of ``alias`` (held by ``holder``) goes back to: the latest earlier holder on the
    stack that is ``usable`` (not deleted); None when there is none."""
    stack = holder_stack(moves, alias)
    if stack and stack[-1] == holder:
        stack.pop()
    for version in reversed(stack):
        if version != holder and usable(version):
            return version
    return None


# -- reading and changing the state of a registry's model ---------------------------------------------------

def _path(reg: Registry, name: str, file: str) -> Path:
    return reg._model_dir(name) / file


def read_state(reg: Registry, name: str) -> ReleaseState:
    path = _path(reg, name, RELEASE)
    data = reg._files.read_bytes(path)
    if data is None:
        reg._require_model(name)
        return ReleaseState(check_name(name))
    return parse_state(data, name, reg._where(path))


def read_log(reg: Registry, name: str, alias: str | None = None) -> list[Canary]:
    path = _path(reg, name, RELEASES)
    data = reg._files.read_bytes(path)
    if data is None:
        reg._require_model(name)
        return []
    found = parse_log(data, name, reg._where(path))
    return found if alias is None else [c for c in found if c.alias == alias]


def record(reg: Registry, state: ReleaseState, canary: Canary) -> None:
    """Log ``canary`` and make it its alias's canary in a new revision, in a local registry's files. The
    caller holds the model's lock. (:meth:`Registry._record_release` calls it; an object registry has its own.)"""
    new = state.after(canary)
    reg._files.append_line(_path(reg, state.name, RELEASES), orjson.dumps(canary.to_dict()))
    reg._files.write_atomic(_path(reg, state.name, RELEASE), orjson.dumps(new.to_dict()))


def _new_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def start_canary(reg: Registry, name: str, version: str, *, alias: str, weight: float, limits: CanaryLimits,
                 reason: str | None, by: str | None) -> Canary:
    check_name(name)
    check_alias(alias)
    version = str(Version.parse(version))
    weight = check_weight(weight)
    if not isinstance(limits, CanaryLimits):
        raise BadRequest(f"invalid canary limits: expected CanaryLimits, got {type(limits).__name__}")
    reg._require_model(name)

    def body() -> Canary:
        # NotFoundError when it does not exist or was deleted; IntegrityError when its manifest was edited since
        # it was saved (every server would refuse to load it)
        reg.get(f"{name}:{version}").manifest  # noqa: B018
        holder = reg.aliases(name).get(alias)
        if holder is None:
            raise NotFoundError(f"model {name!r} has no alias {alias!r}: a canary is compared with the alias's"
                                " holder, so point the alias at the stable version first")
        if holder == version:
            raise ConflictError(f"{name}:{version} already holds {name}@{alias}: a canary needs another version")
        state = reg.release_state(name)
        running = state.running(alias)
        if running is not None:
            raise ConflictError(f"a canary of {name}@{alias} is running already ({running.version} at"
                                f" {running.weight:g}%, id {running.id}, started at {running.started_at}):"
                                " promote or abort it first")
        canary = Canary(_new_id(), name, alias, version, holder, weight, limits, "running", now_iso(),
                        by or current_user(), reason=reason)
        reg._record_release(state, canary)
        return canary

    return reg._transact(name, body)


def _not_running(name: str, alias: str, last: Canary | None) -> str:
    if last is None:
        return f"no canary of {name}@{alias} is running (none was ever started)"
    return f"no canary of {name}@{alias} is running (the last one, {last.version}, was {last.how_it_ended()})"


def end_canary(reg: Registry, name: str, *, alias: str, outcome: Outcome, reason: str | None, by: str | None,
               expected_id: str | None) -> Canary:
    check_name(name)
    check_alias(alias)
    if outcome not in get_args(Outcome):
        raise BadRequest(f"a canary ends 'aborted' or 'promoted', not {outcome!r}")
    reg._require_model(name)
    by = by or current_user()

    def body() -> Canary:
        state = reg.release_state(name)
        canary = state.running(alias)
        if canary is None:
            raise ConflictError(_not_running(name, alias, state.canaries.get(alias)))
        if expected_id is not None and canary.id != expected_id:
            raise ConflictError(f"the running canary of {name}@{alias} is {canary.id}, not {expected_id};"
                                " nothing changed")
        if outcome == "promoted":
            holder = reg.aliases(name).get(alias)
            if holder != canary.version:  # equal: the alias was moved to the candidate already; just end it
                if holder != canary.stable:
                    now = "was removed" if holder is None else f"moved from {canary.stable} to {holder}"
                    raise ConflictError(f"{alias} {now} during the canary; nothing changed: abort it or start"
                                        " again")
                why = f"canary {canary.id} promoted" + (f": {reason}" if reason else "")
                reg._move(name, alias, canary.version, why, canary.stable, by=by)
        ended = replace(canary, state=outcome, ended_at=now_iso(), ended_by=by, reason=reason)
        reg._record_release(state, ended)
        return ended

    return reg._transact(name, body)


def rollback(reg: Registry, name: str, *, alias: str, reason: str | None, by: str | None) -> Rollback:
    check_name(name)
    check_alias(alias)
    reg._require_model(name)
    by = by or current_user()

    def body() -> Rollback:
        holder = reg.aliases(name).get(alias)
        if holder is None:
            raise NotFoundError(f"model {name!r} has no alias {alias!r}")
        book = reg._ledger_locked(name)
        target = rollback_target(reg.alias_history(name), alias, holder,
                                 lambda v: not book.is_deleted(v) and reg._exists(name, v))
        if target is None:
            raise ConflictError(f"{name}@{alias} has no earlier holder to roll back to")
        move = reg._move(name, alias, target, reason, holder, by=by, rollback=True)
        state = reg.release_state(name)
        running = state.running(alias)
        aborted = None
        if running is not None:
            aborted = replace(running, state="aborted", ended_at=move.at, ended_by=by,
                              reason="rollback" + (f": {reason}" if reason else ""))
            reg._record_release(state, aborted)
        return Rollback(move, aborted)

    return reg._transact(name, body)
