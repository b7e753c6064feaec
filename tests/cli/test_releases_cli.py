"""`shipml rollback` and `shipml canary start|status|promote|abort` on a real registry of tiny scikit-learn models
(churn 1.0.0 weak, 1.1.0 good, 1.2.0 a copy of 1.0.0; @production -> 1.0.0)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipml
from tests.cli.gate_models import GOOD, WEAK, run
from tests.unit.registry_support import snapshot

ROOT = Path(__file__).resolve().parents[2]
THIRD = "1.2.0"


@pytest.fixture(scope="module")
def release_source(tmp_path_factory: pytest.TempPathFactory, churn_registry: Path) -> Path:
    work = tmp_path_factory.mktemp("releases") / "w"
    shutil.copytree(churn_registry, work)
    reg = shipml.Registry(work / "registry")
    assert reg.add_package(reg.get(f"churn:{WEAK}").path).version == THIRD
    reg.set_alias("churn", "production", WEAK, reason="first release")
    return work


@pytest.fixture
def work(release_source: Path, tmp_path: Path) -> Path:
    shutil.copytree(release_source, tmp_path / "w")
    return tmp_path / "w"


def registry(work: Path) -> shipml.Registry:
    return shipml.Registry(work / "registry")


def ok(work: Path, *args: str) -> Result:
    result = run(work, *args)
    assert result.exit_code == 0, result.output
    return result


def as_json(work: Path, *args: str) -> Any:
    return orjson.loads(ok(work, *args, "--json").stdout)


def refused(work: Path, *args: str) -> str:
    """The one error line of a refused command; the registry's files are byte-identical afterwards."""
    before = snapshot(work / "registry")
    result = run(work, *args)
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert snapshot(work / "registry") == before
    return result.stderr.removeprefix("error: ").rstrip("\n")


def rows(text: str) -> dict[str, str]:
    """`canary status` as key -> value."""
    return dict(line.split(maxsplit=1) for line in text.splitlines())  # type: ignore[misc]


def test_canary_start_status_promote(work: Path) -> None:
    out = ok(work, "canary", "start", "churn", GOOD, "--weight", "10", "--max-p99-ms", "50", "--reason", "try")
    canary = registry(work).release_state("churn").running("production")
    assert canary is not None and (canary.version, canary.stable, canary.weight) == (GOOD, WEAK, 10.0)
    assert out.stdout.splitlines() == [
        f"started canary churn:{GOOD} for churn@production at 10% of its requests (stable: {WEAK}), id {canary.id}",
        "limits: error rate <= 1.00%, p99 <= 50 ms over the last 1000 requests (judged once 200 are seen)"]
    status = rows(ok(work, "canary", "status", "churn").stdout)
    assert status == {"canary": f"churn:{GOOD} for churn@production at 10% (stable: {WEAK})", "id": canary.id,
                      "state": "running", "started": f"{canary.started_at} by {canary.started_by}",
                      "limits": "error rate <= 1.00%, p99 <= 50 ms over the last 1000 requests (judged once 200"
                                " are seen)", "reason": "try"}
    shown = as_json(work, "canary", "status", "churn")
    assert shown == {"name": "churn", "alias": "production", "revision": 1, "canary": canary.to_dict()}
    promoted = as_json(work, "canary", "promote", "churn", "--reason", "looks good")
    assert (promoted["state"], promoted["reason"], promoted["id"]) == ("promoted", "looks good", canary.id)
    assert registry(work).aliases("churn") == {"production": GOOD}
    history = ok(work, "history", "churn").stdout
    assert f"canary {canary.id} promoted: looks good" in history
    status = rows(ok(work, "canary", "status", "churn").stdout)
    assert (status["state"], status["why"]) == ("promoted", "looks good")
    assert status["ended"] == f"{promoted['ended_at']} by {promoted['ended_by']}"


@pytest.mark.parametrize("ref", [GOOD, f"churn:{GOOD}", "churn@staging"])
def test_canary_start_takes_a_version_a_ref_or_an_alias(work: Path, ref: str) -> None:
    registry(work).set_alias("churn", "staging", GOOD)
    started = as_json(work, "canary", "start", "churn", ref, "--weight", "2.5")
    assert (started["version"], started["weight"], started["alias"]) == (GOOD, 2.5, "production")


def test_canary_start_refuses_bad_input_writing_nothing(work: Path) -> None:
    assert refused(work, "canary", "start", "churn", "other:1.1.0", "--weight", "10") == (
        "REF 'other:1.1.0' is not a version of model 'churn': give 1.3.0, churn:1.3.0 or churn@alias")
    assert refused(work, "canary", "start", "churn", "churn", "--weight", "10") == (
        "REF 'churn' names no version: give 1.3.0, churn:1.3.0 or churn@alias")
    assert refused(work, "canary", "start", "churn", "churn@nope", "--weight", "10") == (
        "model 'churn' has no alias 'nope'")
    assert refused(work, "canary", "start", "churn", "7.0.0", "--weight", "10") == "model 'churn' has no version 7.0.0"
    assert refused(work, "canary", "start", "churn", WEAK, "--weight", "10") == (
        f"churn:{WEAK} already holds churn@production: a canary needs another version")
    assert refused(work, "canary", "start", "churn", GOOD, "--alias", "staging", "--weight", "10").startswith(
        "model 'churn' has no alias 'staging': a canary is compared with the alias's holder")
    assert refused(work, "canary", "start", "churn", GOOD, "--weight", "0") == (
        "invalid canary weight: weight must be a percentage with 0 < weight < 100, got 0.0")
    assert "max_error_rate must be a share" in refused(work, "canary", "start", "churn", GOOD, "--weight", "5",
                                                       "--max-error-rate", "1")
    assert "max_p99_ms must be" in refused(work, "canary", "start", "churn", GOOD, "--weight", "5",
                                           "--max-p99-ms", "-1")
    assert "min_requests must be a whole number >= 1, got 0" in refused(
        work, "canary", "start", "churn", GOOD, "--weight", "5", "--min-requests", "0")
    assert "window must be a whole number with min_requests (200) <= window" in refused(
        work, "canary", "start", "churn", GOOD, "--weight", "5", "--window", "10")
    assert "no model named 'nope'" in refused(work, "canary", "start", "nope", GOOD, "--weight", "5")
    ok(work, "canary", "start", "churn", GOOD, "--weight", "5")
    assert refused(work, "canary", "start", "churn", THIRD, "--weight", "5").startswith(
        f"a canary of churn@production is running already ({GOOD} at 5%, id ")
    usage = run(work, "canary", "start", "churn", GOOD, "--weight", "ten")
    assert usage.exit_code == 2 and "'ten' is not a valid float" in usage.stderr


def test_the_window_defaults_to_at_least_min_requests(work: Path) -> None:
    started = as_json(work, "canary", "start", "churn", GOOD, "--weight", "5", "--min-requests", "5000")
    assert started["limits"] == {"max_error_rate": 0.01, "max_p99_ms": None, "min_requests": 5000, "window": 5000}


def test_abort_and_what_status_says_afterwards(work: Path) -> None:
    assert ok(work, "canary", "status", "churn").stdout == "no canary of churn@production was ever started\n"
    assert as_json(work, "canary", "status", "churn")["canary"] is None
    assert refused(work, "canary", "abort", "churn") == (
        "no canary of churn@production is running (none was ever started)")
    ok(work, "canary", "start", "churn", GOOD, "--weight", "5")
    assert ok(work, "canary", "abort", "churn", "--reason", "p99 too high").stdout == (
        f"aborted canary {GOOD} of churn@production; its holder keeps serving every request\n")
    ended = registry(work).release_state("churn").canaries["production"]
    assert refused(work, "canary", "promote", "churn") == (
        f"no canary of churn@production is running (the last one, {GOOD}, was aborted at {ended.ended_at} by"
        f" {ended.ended_by}: p99 too high)")
    status = rows(ok(work, "canary", "status", "churn").stdout)
    assert (status["state"], status["why"]) == ("aborted", "p99 too high")
    assert registry(work).aliases("churn") == {"production": WEAK}


def test_promote_refused_when_the_alias_moved_during_the_canary(work: Path) -> None:
    ok(work, "canary", "start", "churn", GOOD, "--weight", "5")
    ok(work, "alias", "churn", "production", THIRD)
    assert refused(work, "canary", "promote", "churn") == (
        f"production moved from {WEAK} to {THIRD} during the canary; nothing changed: abort it or start again")


def test_rollback_goes_back_release_by_release(work: Path) -> None:
    ok(work, "alias", "churn", "production", GOOD)
    ok(work, "alias", "churn", "production", THIRD)
    assert ok(work, "rollback", "churn", "--reason", "bad").stdout == (
        f"churn@production -> {GOOD} (rolled back from {THIRD})\n")
    done = as_json(work, "rollback", "churn")
    assert done["aborted_canary"] is None
    assert (done["move"]["from"], done["move"]["to"], done["move"]["rollback"]) == (GOOD, WEAK, True)
    assert refused(work, "rollback", "churn") == "churn@production has no earlier holder to roll back to"
    history = ok(work, "history", "churn").stdout.splitlines()
    assert history[-2].endswith("rollback: bad") and history[-1].endswith("rollback")
    assert refused(work, "rollback", "churn", "--alias", "staging") == "model 'churn' has no alias 'staging'"


def test_rollback_aborts_a_running_canary(work: Path) -> None:
    ok(work, "alias", "churn", "production", GOOD)
    ok(work, "canary", "start", "churn", THIRD, "--weight", "5")
    out = ok(work, "rollback", "churn", "--reason", "incident").stdout.splitlines()
    assert out == [f"churn@production -> {WEAK} (rolled back from {GOOD})",
                   f"aborted the running canary of churn@production ({THIRD})"]
    ended = registry(work).release_state("churn").canaries["production"]
    assert (ended.state, ended.reason) == ("aborted", "rollback: incident")


def shipml_process(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHIPML_HOME": str(work / "registry")}
    return subprocess.run([sys.executable, "-m", "shipml.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.slow
def test_the_commands_as_processes(work: Path) -> None:
    """The installed entry point as a user runs it: a canary started, aborted by two processes at once (one
    wins), then started again and rolled back."""
    started = shipml_process(work, "canary", "start", "churn", f"churn:{GOOD}", "--weight", "10", "--json")
    assert started.returncode == 0, started.stderr
    assert orjson.loads(started.stdout)["state"] == "running"
    env = {**os.environ, "SHIPML_HOME": str(work / "registry")}
    procs = [subprocess.Popen([sys.executable, "-m", "shipml.cli", "canary", "abort", "churn"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=120)]]
    assert sorted(code for code, _ in results) == [0, 1], results
    lost = next(err for code, err in results if code == 1)
    assert lost.startswith("error: no canary of churn@production is running"), lost
    status = shipml_process(work, "canary", "status", "churn", "--json")
    assert status.returncode == 0 and orjson.loads(status.stdout)["canary"]["state"] == "aborted"


texts = st.one_of(st.text(max_size=8), st.sampled_from(["0", "100", "99.9", "1e-3", "nan", "inf", "-1", "1e400",
                                                        "0x10", "5", "200", "1000", "1000001"]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(weight=texts, rate=texts, least=texts, window=texts)
def test_any_option_text_starts_a_valid_canary_or_is_refused_in_one_line(
        release_source: Path, tmp_path_factory: pytest.TempPathFactory, weight: str, rate: str, least: str,
        window: str) -> None:
    work = tmp_path_factory.mktemp("cli") / "w"
    shutil.copytree(release_source, work)
    before = snapshot(work / "registry")
    result = run(work, "canary", "start", "churn", GOOD, "--weight", weight, "--max-error-rate", rate,
                 "--min-requests", least, "--window", window, "--json")
    if result.exit_code == 0:
        c = registry(work).release_state("churn").running("production")
        assert c is not None and orjson.loads(result.stdout) == c.to_dict()
        assert 0 < c.weight < 100 and 0 <= c.limits.max_error_rate < 1
        assert 1 <= c.limits.min_requests <= c.limits.window
        return
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output and result.stderr.strip()
    if result.exit_code == 1:
        assert result.stderr.count("\n") == 1
    assert snapshot(work / "registry") == before
