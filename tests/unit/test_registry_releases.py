"""Release state in the registry (issue 13, section 1 of the contract): canaries of an alias, compare-and-set
between replicas, rollback as a stack, and strict parsing of release.json, releases.jsonl and the history's new
``rollback`` field. Every test runs on a real registry directory holding tiny real scikit-learn models."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipml
from shipml.errors import (
    BadRequest,
    ConflictError,
    IntegrityError,
    InvalidNameError,
    NotFoundError,
    RegistryCorrupt,
)
from shipml.registry.objects import ObjectRegistry
from shipml.registry.records import AliasMove
from shipml.registry.releases import MAX_WINDOW, RELEASE, RELEASES, Canary, CanaryLimits, ReleaseState
from tests.json_strategies import json_values
from tests.s3_support import S3Server
from tests.unit.registry_backends import BACKENDS, Sources, snapshot_of
from tests.unit.registry_support import build_tiny_registry, one_line, race

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_SCOPED = [HealthCheck.function_scoped_fixture]


def _build(reg: shipml.Registry) -> None:
    build_tiny_registry(reg)
    for _ in range(2):
        reg.add_package(reg.directory(reg.get("m:1.0.0")), name="m")


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Sources:
    """m 1.0.0 (@production), 1.1.0, 1.2.0 and 1.3.0, in a local directory or in S3."""
    return Sources(tmp_path_factory, s3_server, _build)


@pytest.fixture(params=BACKENDS)
def reg(request: pytest.FixtureRequest, tiny_source: Sources, tmp_path: Path) -> shipml.Registry:
    """The tiny registry in a local directory, or in S3."""
    return tiny_source.clone_for(request, tmp_path / "registry")


LOCAL_ONLY = pytest.mark.parametrize("reg", ["local"], indirect=True)  # edits the local registry's files


def fresh(tiny_source: Sources, factory: pytest.TempPathFactory, backend: str = "local") -> shipml.Registry:
    return tiny_source.clone(backend, factory.mktemp("rel") / "registry")


def stored_release(reg: shipml.Registry) -> dict[str, Any]:
    """The release state as stored: release.json, or the "release" of an object registry's state object."""
    if isinstance(reg, ObjectRegistry):
        found = reg.store.get("models/m/state.json")
        assert found is not None
        return dict(orjson.loads(found.data)["release"])
    return dict(orjson.loads(model_file(reg, RELEASE).read_bytes()))


def model_file(reg: shipml.Registry, name: str) -> Path:
    return reg.root / "models" / "m" / name


# -- the state and its log ---------------------------------------------------------------------------------

def test_a_model_without_release_state_is_revision_0(reg: shipml.Registry) -> None:
    assert reg.release_state("m") == ReleaseState("m", 0, {})
    assert reg.release_state("m").running("production") is None
    assert reg.release_history("m") == []
    with pytest.raises(NotFoundError) as exc:
        reg.release_state("nope")
    assert "no model named 'nope'" in one_line(exc.value)


def test_start_records_the_canary_in_the_state_and_the_log(reg: shipml.Registry) -> None:
    limits = CanaryLimits(max_error_rate=0.05, max_p99_ms=50, min_requests=20, window=40)
    canary = reg.start_canary("m", "1.1.0", weight=10, limits=limits, reason="try it", by="ana")
    assert (canary.name, canary.alias, canary.version, canary.stable) == ("m", "production", "1.1.0", "1.0.0")
    assert (canary.weight, canary.limits, canary.state) == (10.0, limits, "running")
    assert (canary.started_by, canary.reason, canary.ended_at, canary.ended_by) == ("ana", "try it", None, None)
    assert canary.id and canary.id[:8].isdigit() and canary.started_at.endswith("Z")
    state = reg.release_state("m")
    assert state.revision == 1 and state.canaries == {"production": canary} and state.running("production") == canary
    assert reg.release_history("m") == [canary]
    assert stored_release(reg) == state.to_dict()
    assert reg.aliases("m") == {"production": "1.0.0"}  # the alias does not move until a promotion
    reg.set_alias("m", "staging", "1.1.0")
    other = reg.start_canary("m", "1.2.0", alias="staging", weight=5)  # each alias has its own canary
    assert other.id != canary.id and other.stable == "1.1.0"
    assert reg.release_state("m").canaries == {"production": canary, "staging": other}


def test_ids_are_unique_per_start(reg: shipml.Registry) -> None:
    ids = set()
    for _ in range(5):
        ids.add(reg.start_canary("m", "1.1.0", weight=1).id)
        reg.end_canary("m", outcome="aborted")
    assert len(ids) == 5
    assert reg.release_state("m").revision == 10 and len(reg.release_history("m")) == 10


def refusals(reg: shipml.Registry) -> list[tuple[str, Any, type[Exception], str]]:
    return [
        ("no such model", lambda: reg.start_canary("nope", "1.1.0", weight=10), NotFoundError, "no model named 'nope'"),
        ("no such version", lambda: reg.start_canary("m", "9.9.9", weight=10), NotFoundError,
         "model 'm' has no version 9.9.9"),
        ("no such alias", lambda: reg.start_canary("m", "1.1.0", alias="staging", weight=10), NotFoundError,
         "model 'm' has no alias 'staging': a canary is compared with the alias's holder"),
        ("holds the alias", lambda: reg.start_canary("m", "1.0.0", weight=10), ConflictError,
         "m:1.0.0 already holds m@production"),
        ("weight 0", lambda: reg.start_canary("m", "1.1.0", weight=0), BadRequest,
         "weight must be a percentage with 0 < weight < 100, got 0"),
        ("weight 100", lambda: reg.start_canary("m", "1.1.0", weight=100), BadRequest, "got 100"),
        ("weight nan", lambda: reg.start_canary("m", "1.1.0", weight=math.nan), BadRequest, "got nan"),
        ("weight bool", lambda: reg.start_canary("m", "1.1.0", weight=True), BadRequest, "got True"),
        ("weight text", lambda: reg.start_canary("m", "1.1.0", weight="10"), BadRequest, "got '10'"),  # type: ignore[arg-type]
        ("limits type", lambda: reg.start_canary("m", "1.1.0", weight=10, limits={"window": 5}),  # type: ignore[arg-type]
         BadRequest, "expected CanaryLimits, got dict"),
        ("bad version", lambda: reg.start_canary("m", "latest", weight=10), InvalidNameError, "invalid version"),
        ("bad alias", lambda: reg.start_canary("m", "1.1.0", alias="../x", weight=10), InvalidNameError,
         "invalid alias"),
    ]


def test_start_refuses_bad_input_and_writes_nothing(reg: shipml.Registry) -> None:
    reg.start_canary("m", "1.1.0", alias="production", weight=10)
    reg.end_canary("m", outcome="aborted", reason="first try")
    reg.set_alias("m", "production", "1.2.0")
    reg.set_alias("m", "production", "1.0.0")
    reg.delete("m:1.2.0")
    cases = [*refusals(reg), ("deleted version", lambda: reg.start_canary("m", "1.2.0", weight=10), NotFoundError,
                              "m:1.2.0 was deleted")]
    before = snapshot_of(reg)
    for what, call, kind, message in cases:
        with pytest.raises(kind) as exc:
            call()
        assert message in one_line(exc.value), what
        assert snapshot_of(reg) == before, what


@LOCAL_ONLY
def test_start_refuses_a_version_whose_manifest_was_edited(reg: shipml.Registry) -> None:
    manifest = reg.root / "models" / "m" / "versions" / "1.1.0" / "shipml.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"tiny"', b'"edited"'))
    before = snapshot_of(reg)
    with pytest.raises(IntegrityError) as exc:
        reg.start_canary("m", "1.1.0", weight=10)
    assert one_line(exc.value).startswith("m:1.1.0: its shipml.json does not match the sha256 the registry recorded")
    assert snapshot_of(reg) == before


def test_start_refuses_while_a_canary_of_the_alias_runs(reg: shipml.Registry) -> None:
    running = reg.start_canary("m", "1.1.0", weight=10)
    before = snapshot_of(reg)
    with pytest.raises(ConflictError) as exc:
        reg.start_canary("m", "1.2.0", weight=20)
    assert one_line(exc.value) == (f"a canary of m@production is running already (1.1.0 at 10%, id {running.id},"
                                   f" started at {running.started_at}): promote or abort it first")
    assert snapshot_of(reg) == before


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_error_rate": 1.0}, "max_error_rate must be a share with 0 <= max_error_rate < 1"),
    ({"max_error_rate": -0.01}, "max_error_rate must be"),
    ({"max_error_rate": math.inf}, "max_error_rate must be"),
    ({"max_p99_ms": 0}, "max_p99_ms must be a number of milliseconds > 0"),
    ({"max_p99_ms": math.nan}, "max_p99_ms must be"),
    ({"min_requests": 0}, "min_requests must be a whole number >= 1, got 0"),
    ({"min_requests": 2.5}, "min_requests must be a whole number"),
    ({"window": 100}, "window must be a whole number with min_requests (200) <= window <= 1000000, got 100"),
    ({"window": MAX_WINDOW + 1}, "window must be"),
    ({"window": True}, "window must be"),
])
def test_limits_out_of_range_name_the_field_and_the_rule(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as exc:
        CanaryLimits(**kwargs)
    assert one_line(exc.value).startswith("invalid canary limits: ") and message in str(exc.value)


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**20), 10**20), st.booleans(),
                    st.none(), st.sampled_from([0, 1, 99, 100, 0.5, 1e-9, 99.999, 200, 1000, MAX_WINDOW]))


@settings(max_examples=60, deadline=None, suppress_health_check=FUNCTION_SCOPED)
@given(weight=numbers, rate=numbers, p99=numbers, least=numbers, window=numbers)
def test_any_weight_and_limits_start_a_valid_canary_or_are_refused_naming_the_field(
        tiny_source: Sources, tmp_path_factory: pytest.TempPathFactory, weight: Any, rate: Any, p99: Any, least: Any,
        window: Any) -> None:
    reg = fresh(tiny_source, tmp_path_factory)
    before = snapshot_of(reg)
    try:
        limits = CanaryLimits(max_error_rate=rate, max_p99_ms=p99, min_requests=least, window=window)
        canary = reg.start_canary("m", "1.1.0", weight=weight, limits=limits)
    except BadRequest as exc:
        text = one_line(exc)
        assert any(f in text for f in ("weight", "max_error_rate", "max_p99_ms", "min_requests", "window")), text
        assert snapshot_of(reg) == before
        return
    assert 0 < canary.weight < 100 and 0 <= canary.limits.max_error_rate < 1
    assert canary.limits.max_p99_ms is None or 0 < canary.limits.max_p99_ms < math.inf
    assert 1 <= canary.limits.min_requests <= canary.limits.window <= MAX_WINDOW
    assert reg.release_state("m").running("production") == canary  # what was written reads back the same


# -- ending a canary ---------------------------------------------------------------------------------------

def test_abort_ends_the_canary_and_says_how_when_aborted_again(reg: shipml.Registry) -> None:
    canary = reg.start_canary("m", "1.1.0", weight=10, reason="try")
    ended = reg.end_canary("m", outcome="aborted", reason="error rate 4%", by="replica-1")
    assert (ended.id, ended.state, ended.ended_by, ended.reason) == (canary.id, "aborted", "replica-1", "error rate 4%")
    assert ended.ended_at is not None
    state = reg.release_state("m")
    assert state.revision == 2 and state.running("production") is None and state.canaries["production"] == ended
    assert reg.release_history("m") == [canary, ended]
    assert reg.aliases("m") == {"production": "1.0.0"}
    before = snapshot_of(reg)
    with pytest.raises(ConflictError) as exc:
        reg.end_canary("m", outcome="aborted")
    assert one_line(exc.value) == (f"no canary of m@production is running (the last one, 1.1.0, was aborted at"
                                   f" {ended.ended_at} by replica-1: error rate 4%)")
    with pytest.raises(ConflictError) as exc:
        reg.end_canary("m", alias="staging", outcome="promoted")
    assert one_line(exc.value) == "no canary of m@staging is running (none was ever started)"
    with pytest.raises(BadRequest):
        reg.end_canary("m", outcome="paused")  # type: ignore[arg-type]
    assert snapshot_of(reg) == before


def test_expected_id_must_be_the_running_canary(reg: shipml.Registry) -> None:
    canary = reg.start_canary("m", "1.1.0", weight=10)
    before = snapshot_of(reg)
    with pytest.raises(ConflictError) as exc:
        reg.end_canary("m", outcome="aborted", expected_id="20260101T000000Z-00000000")
    assert one_line(exc.value) == (f"the running canary of m@production is {canary.id}, not"
                                   " 20260101T000000Z-00000000; nothing changed")
    assert snapshot_of(reg) == before
    assert reg.end_canary("m", outcome="aborted", expected_id=canary.id).state == "aborted"
    with pytest.raises(ConflictError, match="no canary of m@production is running"):
        reg.end_canary("m", outcome="aborted", expected_id=canary.id)


def test_promote_moves_the_alias_in_the_same_step(reg: shipml.Registry) -> None:
    canary = reg.start_canary("m", "1.1.0", weight=10)
    ended = reg.end_canary("m", outcome="promoted", reason="looks good", by="ana")
    assert ended.state == "promoted" and reg.aliases("m") == {"production": "1.1.0"}
    move = reg.alias_history("m")[-1]
    assert (move.from_version, move.to_version, move.by) == ("1.0.0", "1.1.0", "ana")
    assert move.reason == f"canary {canary.id} promoted: looks good" and not move.rollback
    assert reg.release_state("m").revision == 2


def test_promote_refuses_when_the_alias_moved_during_the_canary(reg: shipml.Registry) -> None:
    reg.start_canary("m", "1.1.0", weight=10)
    reg.set_alias("m", "production", "1.2.0", reason="hotfix")
    before = snapshot_of(reg)
    with pytest.raises(ConflictError) as exc:
        reg.end_canary("m", outcome="promoted")
    assert one_line(exc.value) == ("production moved from 1.0.0 to 1.2.0 during the canary; nothing changed: abort"
                                   " it or start again")
    assert snapshot_of(reg) == before
    reg.delete_alias("m", "production")
    with pytest.raises(ConflictError, match="production was removed during the canary"):
        reg.end_canary("m", outcome="promoted")
    assert reg.end_canary("m", outcome="aborted").state == "aborted"


def test_promote_ends_a_canary_whose_alias_points_at_it_already(reg: shipml.Registry) -> None:
    """What a crash between the alias move and the state write leaves (or a move by hand): promoting finishes."""
    reg.start_canary("m", "1.1.0", weight=10)
    reg.set_alias("m", "production", "1.1.0")
    moves = len(reg.alias_history("m"))
    assert reg.end_canary("m", outcome="promoted").state == "promoted"
    assert len(reg.alias_history("m")) == moves and reg.aliases("m") == {"production": "1.1.0"}


def test_the_running_canarys_version_cannot_be_deleted(reg: shipml.Registry) -> None:
    reg.start_canary("m", "1.1.0", weight=10)
    with pytest.raises(ConflictError) as exc:
        reg.delete("m:1.1.0")
    assert one_line(exc.value) == "m:1.1.0 is the running canary of production: promote or abort it first"
    reg.end_canary("m", outcome="aborted")
    assert reg.delete("m:1.1.0").version == "1.1.0"


# -- replicas racing -----------------------------------------------------------------------------------------

RACER = textwrap.dedent("""
    import sys, time, pathlib
    import shipml
    root, go, outcome, expected, who = sys.argv[1:6]
    reg = shipml.Registry(root)
    deadline = time.monotonic() + 60
    while not pathlib.Path(go).exists():
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.002)
    try:
        c = reg.end_canary("m", outcome=outcome, expected_id=expected, reason=who, by=who)
        print("won", c.state)
    except shipml.ConflictError as exc:
        print("lost", exc)
""")


@pytest.mark.slow
@pytest.mark.parametrize("outcomes", [["aborted"] * 4, ["aborted", "promoted", "aborted", "promoted"]])
def test_replicas_ending_the_same_canary_at_once_one_wins(reg: shipml.Registry, tmp_path: Path,
                                                          outcomes: list[str]) -> None:
    canary = reg.start_canary("m", "1.1.0", weight=10)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACER, reg.location, str(go), outcome, canary.id, f"r{i}"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, outcome in enumerate(outcomes)]
    time.sleep(1.0)  # let every process import shipml and wait for the signal
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(out.strip())
    winners = [r for r in results if r.startswith("won")]
    assert len(winners) == 1, results
    assert all(r.startswith("lost no canary of m@production is running") for r in results if r not in winners)
    ended = reg.release_state("m").canaries["production"]
    assert ended.id == canary.id and ended.state != "running" and winners == [f"won {ended.state}"]
    assert reg.release_state("m").revision == 2 and len(reg.release_history("m")) == 2
    assert reg.aliases("m")["production"] == ("1.1.0" if ended.state == "promoted" else "1.0.0")
    promotions = [m for m in reg.alias_history("m") if m.reason and m.reason.startswith(f"canary {canary.id}")]
    assert len(promotions) == (ended.state == "promoted")


@pytest.mark.slow
def test_threads_starting_ending_and_rolling_back_keep_the_state_and_the_log_consistent(
        reg: shipml.Registry) -> None:
    """Four threads, each a bounded plan of starts, aborts, promotions and rollbacks on one model: every change
    that returned is in the log once, revisions count the log, and the file state is the log's last word."""
    reg.set_alias("m", "production", "1.1.0")
    plans = [["start", "abort", "start", "promote", "rollback"], ["rollback", "start", "promote", "start", "abort"],
             ["start", "start", "abort", "rollback", "promote"], ["promote", "start", "rollback", "abort", "start"]]
    rolled: set[str] = set()

    def step(thread: int, i: int, op: str) -> list[Canary]:
        held = reg.aliases("m")["production"]
        candidate = next(v for v in ("1.2.0", "1.3.0", "1.0.0") if v != held)
        if op == "start":
            return [reg.start_canary("m", candidate, weight=10, reason=f"t{thread}-{i}")]
        if op == "rollback":
            reg.rollback("m", reason=f"t{thread}-{i}")
            rolled.add(f"rollback: t{thread}-{i}")
            return []
        return [reg.end_canary("m", outcome="aborted" if op == "abort" else "promoted", reason=f"t{thread}-{i}")]

    done = race(plans, step)
    log = reg.release_history("m")
    by_rollback = [c for c in log if (c.reason or "").startswith("rollback: ")]
    assert {c.reason for c in by_rollback} <= rolled and len(by_rollback) == len({c.reason for c in by_rollback})
    assert sorted((c.id, c.state, c.reason or "") for c in log if c not in by_rollback) == sorted(
        (c.id, c.state, c.reason or "") for c in done)
    state = reg.release_state("m")
    assert state.revision == len(log)
    assert state.canaries.get("production") == (log[-1] if log else None)
    running: dict[str, Canary] = {}
    for c in log:  # a start only when nothing runs; an end only of what runs
        if c.state == "running":
            assert "production" not in running
            running["production"] = c
        else:
            assert running.pop("production").id == c.id


# -- rollback ------------------------------------------------------------------------------------------------

def test_two_rollbacks_go_back_two_releases(reg: shipml.Registry) -> None:
    for v in ("1.1.0", "1.2.0", "1.3.0"):
        reg.set_alias("m", "production", v)
    first = reg.rollback("m", reason="bad 1.3", by="ana")
    assert (first.from_version, first.to_version, first.rollback, first.reason, first.by) == (
        "1.3.0", "1.2.0", True, "bad 1.3", "ana")
    assert reg.rollback("m").to_version == "1.1.0"
    assert reg.rollback("m").to_version == "1.0.0"
    before = snapshot_of(reg)
    with pytest.raises(ConflictError) as exc:
        reg.rollback("m")
    assert one_line(exc.value) == "m@production has no earlier holder to roll back to"
    assert snapshot_of(reg) == before
    assert reg.aliases("m") == {"production": "1.0.0"}
    assert [m.rollback for m in reg.alias_history("m")] == [False] * 4 + [True] * 3
    # a move after rollbacks pushes on what is left: rolling it back returns to where the rollbacks ended
    reg.set_alias("m", "production", "1.3.0")
    assert reg.rollback("m").to_version == "1.0.0"


def test_rollback_skips_deleted_holders(reg: shipml.Registry) -> None:
    for v in ("1.1.0", "1.2.0", "1.3.0"):
        reg.set_alias("m", "production", v)
    reg.delete("m:1.2.0")
    reg.delete("m:1.1.0")
    move = reg.rollback("m")
    assert (move.from_version, move.to_version) == ("1.3.0", "1.0.0")
    with pytest.raises(ConflictError, match="no earlier holder"):
        reg.rollback("m")


def test_rollback_of_other_aliases_and_removed_ones(reg: shipml.Registry) -> None:
    reg.set_alias("m", "staging", "1.2.0")
    reg.set_alias("m", "production", "1.1.0")
    reg.set_alias("m", "staging", "1.3.0")
    assert reg.rollback("m", alias="staging").to_version == "1.2.0"
    assert reg.aliases("m") == {"production": "1.1.0", "staging": "1.2.0"}
    reg.delete_alias("m", "staging")
    reg.set_alias("m", "staging", "1.3.0")  # created again: what it held before its removal is not a release
    with pytest.raises(ConflictError, match="m@staging has no earlier holder"):
        reg.rollback("m", alias="staging")
    with pytest.raises(NotFoundError, match="model 'm' has no alias 'canary'"):
        reg.rollback("m", alias="canary")
    with pytest.raises(NotFoundError, match="no model named 'x'"):
        reg.rollback("x")


def test_rollback_aborts_the_running_canary_in_the_same_step(reg: shipml.Registry) -> None:
    reg.set_alias("m", "production", "1.1.0")
    canary = reg.start_canary("m", "1.2.0", weight=10)
    move = reg.rollback("m", reason="1.1 is slow", by="ops")
    assert (move.from_version, move.to_version) == ("1.1.0", "1.0.0")
    ended = reg.release_state("m").canaries["production"]
    assert (ended.id, ended.state, ended.reason, ended.ended_by, ended.ended_at) == (
        canary.id, "aborted", "rollback: 1.1 is slow", "ops", move.at)
    assert reg.release_state("m").revision == 2
    # without a canary running the release state is not touched
    reg.set_alias("m", "production", "1.3.0")
    before = stored_release(reg)
    reg.rollback("m")
    assert stored_release(reg) == before


@pytest.mark.parametrize("backend", ["local", pytest.param("s3", marks=pytest.mark.slow)])
@settings(max_examples=40, deadline=None, suppress_health_check=FUNCTION_SCOPED)
@given(ops=st.lists(st.one_of(st.sampled_from(["1.0.0", "1.1.0", "1.2.0", "1.3.0"]), st.just("rollback")),
                    max_size=12))
def test_rollback_follows_the_stack_of_releases(backend: str, tiny_source: Sources,
                                                tmp_path_factory: pytest.TempPathFactory, ops: list[str]) -> None:
    """A model of what users expect: every move puts a release on a stack (unless it is the one on top), every
    rollback takes the top one off; the alias is always the top."""
    reg = fresh(tiny_source, tmp_path_factory, backend)
    releases = ["1.0.0"]
    for op in ops:
        if op == "rollback":
            if len(releases) < 2:
                with pytest.raises(ConflictError, match="no earlier holder"):
                    reg.rollback("m")
                continue
            releases.pop()
            assert reg.rollback("m").to_version == releases[-1]
        else:
            reg.set_alias("m", "production", op)
            if releases[-1] != op:
                releases.append(op)
        assert reg.aliases("m") == {"production": releases[-1]}


# -- the history's new field -------------------------------------------------------------------------------

def test_alias_move_writes_rollback_only_when_true() -> None:
    move = AliasMove("m", "production", "1.0.0", "1.1.0", "2026-01-01T00:00:00Z", "ana", None)
    assert "rollback" not in move.to_dict()
    assert AliasMove(**{**move.__dict__, "rollback": True}).to_dict()["rollback"] is True


@LOCAL_ONLY
@pytest.mark.parametrize("value", [b'"yes"', b"1", b"null", b"[]"])
def test_a_history_line_with_an_invalid_rollback_field_is_corrupt(reg: shipml.Registry, value: bytes) -> None:
    path = model_file(reg, "history.jsonl")
    path.write_bytes(path.read_bytes() + b'{"alias": "production", "to": "1.1.0", "at": "x", "rollback": '
                     + value + b"}\n")
    with pytest.raises(RegistryCorrupt) as exc:
        reg.rollback("m")
    assert one_line(exc.value).startswith("registry file models/m/history.jsonl line 2 has no valid 'rollback'")


@pytest.mark.parametrize(("edit", "message"), [
    ({"state": "running"}, "has state 'running' with an 'ended_at'"),
    ({"weight": 100}, "has no valid 'weight'"),
    ({"name": "other"}, "has no valid 'name' (must be 'm', the model's)"),
    ({"stable": "1.2.0"}, "has the same version as candidate and stable"),
    ({"limits": {"max_error_rate": 0.01, "min_requests": 9, "window": 3}}, "has invalid limits: window must be"),
    ({"limits": {"max_error_rate": "1%", "min_requests": 9, "window": 30}},
     "has limits with no valid 'max_error_rate'"),
])
@LOCAL_ONLY
def test_what_a_corrupt_release_file_says(reg: shipml.Registry, edit: dict[str, Any], message: str) -> None:
    record = {**valid_record("1.2.0", "aborted"), **edit}
    model_file(reg, RELEASE).write_bytes(orjson.dumps({"revision": 1, "canaries": {"production": record}}))
    with pytest.raises(RegistryCorrupt) as exc:
        reg.release_state("m")
    assert one_line(exc.value).startswith(f"registry file models/m/release.json has a canary under 'production'"
                                          f" that {message}")
    model_file(reg, RELEASES).write_bytes(b"\n" + orjson.dumps(record) + b"\n")
    with pytest.raises(RegistryCorrupt) as exc:
        reg.release_history("m")
    assert one_line(exc.value).startswith(f"registry file models/m/releases.jsonl line 2 holds a canary record"
                                          f" that {message}")


# -- strict parsing: anything in the files is a valid state or RegistryCorrupt naming the file ----------------

def valid_record(version: str = "1.1.0", state: str = "running") -> dict[str, Any]:
    ended = state != "running"
    return {"id": "20260101T000000Z-0badcafe", "name": "m", "alias": "production", "version": version,
            "stable": "1.0.0", "weight": 10.0, "limits": CanaryLimits().to_dict(), "state": state,
            "started_at": "2026-01-01T00:00:00Z", "started_by": "ana", "ended_at": "2026-01-01T01:00:00Z" if ended
            else None, "ended_by": "bob" if ended else None, "reason": "why"}


@st.composite
def mangled(draw: st.DrawFn, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with some fields (or fields of its limits) replaced by any JSON value, or removed."""
    out = {**record, "limits": {**record["limits"]}}
    for _ in range(draw(st.integers(0, 3))):
        limits = out.get("limits")
        where = limits if isinstance(limits, dict) and limits and draw(st.booleans()) else out
        if not where:
            break
        key = draw(st.sampled_from(sorted(where)))
        if draw(st.integers(0, 4)) == 0:
            del where[key]
        else:
            where[key] = draw(json_values)
    return out


def dump(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):  # huge integers, NaN: what another writer might put there
        import json
        return json.dumps(value).encode()


file_contents = st.one_of(
    st.binary(max_size=64),
    json_values.map(dump),
    st.builds(lambda r, rev: dump({"revision": rev, "canaries": {"production": r}}),
              mangled(valid_record()), st.one_of(st.integers(0, 5), json_values)),
    st.builds(lambda c: dump({"revision": 1, "canaries": c}),
              st.one_of(json_values, st.dictionaries(st.sampled_from(["production", "x"]), json_values))),
    st.builds(lambda r, k: dump({"revision": 1, "canaries": {k: r}}), mangled(valid_record("1.2.0", "aborted")),
              st.sampled_from(["production", "staging", "../x", ""])),
)
log_contents = st.one_of(
    st.binary(max_size=64),
    st.lists(st.one_of(mangled(valid_record()), mangled(valid_record(state="promoted")), json_values),
             max_size=3).map(lambda rs: b"".join(dump(r) + b"\n" for r in rs)),
)
history_contents = st.lists(
    st.fixed_dictionaries({"alias": st.sampled_from(["production", "staging"]),
                           "to": st.sampled_from(["1.0.0", "1.1.0", "1.3.0", None]),
                           "from": st.sampled_from(["1.0.0", None]), "at": st.just("2026-01-01T00:00:00Z")},
                          optional={"rollback": st.one_of(st.booleans(), json_values)}),
    max_size=4).map(lambda rs: b"".join(dump(r) + b"\n" for r in rs))


def check_outcome(call: Any, files: set[str]) -> Any:
    """Call; a failure must be RegistryCorrupt naming one of ``files``, or a domain error (409/404)."""
    try:
        return call()
    except RegistryCorrupt as exc:
        text = one_line(exc)
        assert any(f"registry file models/m/{f}" in text for f in files), text
    except (ConflictError, NotFoundError) as exc:
        one_line(exc)
    return None


@settings(max_examples=120, deadline=None, suppress_health_check=FUNCTION_SCOPED)
@given(release=st.none() | file_contents, log=st.none() | log_contents, history=st.none() | history_contents)
def test_any_content_of_the_release_files_is_a_valid_state_or_corrupt(
        tiny_source: Sources, tmp_path_factory: pytest.TempPathFactory, release: bytes | None, log: bytes | None,
        history: bytes | None) -> None:
    reg = fresh(tiny_source, tmp_path_factory)
    for name, content in ((RELEASE, release), (RELEASES, log), ("history.jsonl", history)):
        if content is not None:
            model_file(reg, name).write_bytes(content)
    state = check_outcome(lambda: reg.release_state("m"), {RELEASE})
    if state is not None:
        assert isinstance(state, ReleaseState) and state.revision >= 0
        for alias, c in state.canaries.items():
            assert c.alias == alias and c.name == "m" and 0 < c.weight < 100 and c.version != c.stable
            assert (c.state == "running") == (c.ended_at is None)
            assert c.limits == CanaryLimits(**c.limits.to_dict())
    found = check_outcome(lambda: reg.release_history("m"), {RELEASES})
    assert found is None or all(isinstance(c, Canary) for c in found)
    check_outcome(lambda: reg.alias_history("m"), {"history.jsonl"})
    check_outcome(lambda: reg.end_canary("m", outcome="promoted"), {RELEASE, RELEASES, "history.jsonl"})
    check_outcome(lambda: reg.start_canary("m", "1.3.0", weight=5), {RELEASE, RELEASES})
    check_outcome(lambda: reg.rollback("m"), {RELEASE, RELEASES, "history.jsonl"})
    check_outcome(lambda: reg.delete("m:1.3.0"), {RELEASE})
