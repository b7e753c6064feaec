"""Compare-and-set aliases (item 9 of issue 12): ``expected`` on set_alias/delete_alias, and ``promote``, which
moves the alias only if it still points where it did when the evaluation began."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipml
from shipml.errors import ConflictError, NotFoundError
from shipml.evaluation import gate
from tests.cli.gate_models import GOOD, TARGET, WEAK, run
from tests.s3_support import S3Server
from tests.unit.registry_backends import BACKENDS, Sources
from tests.unit.registry_support import build_tiny_registry, one_line, race

ROOT = Path(__file__).resolve().parents[2]


def _build(reg: shipml.Registry) -> None:
    build_tiny_registry(reg)
    reg.add_package(reg.directory(reg.get("m:1.0.0")), name="m")  # m:1.2.0, a third version to move between


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Sources:
    return Sources(tmp_path_factory, s3_server, _build)


@pytest.fixture(params=BACKENDS)
def reg(request: pytest.FixtureRequest, tiny_source: Sources, tmp_path: Path) -> shipml.Registry:
    """The tiny registry in a local directory, or in S3."""
    return tiny_source.clone_for(request, tmp_path / "registry")


def history_lines(reg: shipml.Registry) -> int:
    return len(reg.alias_history("m"))


def test_expected_none_means_the_alias_must_not_exist(reg: shipml.Registry) -> None:
    move = reg.set_alias("m", "staging", "1.1.0", expected=None)
    assert (move.from_version, move.to_version) == (None, "1.1.0")
    before = history_lines(reg)
    with pytest.raises(ConflictError) as exc:
        reg.set_alias("m", "production", "1.1.0", expected=None)
    assert "m@production points to 1.0.0" in one_line(exc.value)
    assert reg.aliases("m") == {"production": "1.0.0", "staging": "1.1.0"}
    assert history_lines(reg) == before


def test_expected_version_must_match_what_the_alias_points_to(reg: shipml.Registry) -> None:
    before = history_lines(reg)
    with pytest.raises(ConflictError) as exc:
        reg.set_alias("m", "production", "1.2.0", expected="1.1.0")
    assert one_line(exc.value) == "m@production points to 1.0.0, not 1.1.0; nothing changed"
    with pytest.raises(ConflictError) as exc:
        reg.set_alias("m", "canary", "1.2.0", expected="1.1.0")
    assert one_line(exc.value) == "m@canary does not exist, not 1.1.0; nothing changed"
    assert reg.aliases("m") == {"production": "1.0.0"} and history_lines(reg) == before
    move = reg.set_alias("m", "production", "1.2.0", expected="1.0.0", reason="hotfix")
    assert (move.from_version, move.to_version, move.reason) == ("1.0.0", "1.2.0", "hotfix")


def test_delete_alias_compares_too(reg: shipml.Registry) -> None:
    before = history_lines(reg)
    with pytest.raises(ConflictError) as exc:
        reg.delete_alias("m", "production", expected="1.1.0")
    assert one_line(exc.value) == "m@production points to 1.0.0, not 1.1.0; nothing changed"
    with pytest.raises(ConflictError):
        reg.delete_alias("m", "production", expected=None)
    assert reg.aliases("m") == {"production": "1.0.0"} and history_lines(reg) == before
    assert reg.delete_alias("m", "production", expected="1.0.0").to_version is None
    with pytest.raises(NotFoundError):
        reg.delete_alias("m", "production")


def test_expected_is_checked_as_a_version(reg: shipml.Registry) -> None:
    with pytest.raises(shipml.InvalidNameError):
        reg.set_alias("m", "production", "1.1.0", expected="latest")


def test_the_cli_alias_takes_expect(reg: shipml.Registry, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from shipml.cli import cli

    def alias(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(cli, ["--registry", reg.location, "alias", "m", *args])
        return result.exit_code, result.stdout, result.stderr

    assert alias("production", "1.2.0", "--expect", "1.1.0") == (
        1, "", "error: m@production points to 1.0.0, not 1.1.0; nothing changed\n")
    assert alias("staging", "1.2.0", "--expect", "none") == (0, "m@staging -> 1.2.0\n", "")
    assert alias("staging", "--delete", "--expect", "1.1.0")[0] == 1
    assert alias("staging", "--delete", "--expect", "1.2.0")[0] == 0


# -- promote against an alias that moves during the evaluation ---------------------------------------------

@pytest.fixture
def churn(workdir: Path) -> shipml.Registry:
    reg = shipml.Registry(workdir / "registry")
    reg.set_alias("churn", "production", WEAK)
    hotfix = reg.add_package(reg.get(f"churn:{WEAK}").path)
    assert hotfix.version == "1.2.0"
    return reg


def move_in_another_process(reg: shipml.Registry, *args: str) -> None:
    out = subprocess.run([sys.executable, "-c", "from shipml.cli import cli; cli()", "--registry", str(reg.root),
                          "alias", "churn", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr


def test_promote_refuses_when_the_alias_moved_during_the_evaluation(churn: shipml.Registry,
                                                                    workdir: Path) -> None:
    checked = gate.check_promotion(churn, f"churn:{GOOD}", "production", against="@production",
                                   data=workdir / "valid.csv", target=TARGET)
    assert checked.passed and checked.baseline is not None and checked.baseline.version == WEAK
    move_in_another_process(churn, "production", "1.2.0", "--reason", "hotfix")  # during the evaluation
    history = churn.alias_history("churn")
    with pytest.raises(ConflictError) as exc:
        gate.apply_promotion(churn, checked)
    assert one_line(exc.value) == ("production moved from 1.0.0 to 1.2.0 during the evaluation; nothing changed;"
                                   " promote again to compare against 1.2.0")
    assert churn.aliases("churn") == {"production": "1.2.0"}
    assert churn.alias_history("churn") == history
    # promoting again compares against the hotfix, and moves from it
    result = gate.promote(churn, f"churn:{GOOD}", "production", against="@production",
                          data=workdir / "valid.csv", target=TARGET)
    assert result.baseline is not None and result.baseline.version == "1.2.0"
    assert result.move is not None and (result.move.from_version, result.move.to_version) == ("1.2.0", GOOD)


def test_promote_refuses_when_the_alias_was_created_or_removed_meanwhile(churn: shipml.Registry,
                                                                         workdir: Path) -> None:
    checked = gate.check_promotion(churn, f"churn:{GOOD}", "canary", requirements=["accuracy>=0.5"],
                                   data=workdir / "valid.csv", target=TARGET)
    churn.set_alias("churn", "canary", WEAK)
    with pytest.raises(ConflictError) as exc:
        gate.apply_promotion(churn, checked)
    assert one_line(exc.value) == ("canary was created (at 1.0.0) during the evaluation; nothing changed;"
                                   " promote again")
    checked = gate.check_promotion(churn, f"churn:{GOOD}", "production", against="@production",
                                   data=workdir / "valid.csv", target=TARGET)
    churn.delete_alias("churn", "production")
    with pytest.raises(ConflictError) as exc:
        gate.apply_promotion(churn, checked)
    assert one_line(exc.value) == ("production was removed (it pointed to 1.0.0) during the evaluation; nothing"
                                   " changed; promote again")
    assert churn.aliases("churn") == {"canary": WEAK}


def test_promote_cli_says_the_alias_moved_and_exits_1(churn: shipml.Registry, workdir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = gate.apply_promotion

    def hotfix_lands_during_the_evaluation(*args: object, **kwargs: object) -> gate.PromotionResult:
        move_in_another_process(churn, "production", "1.2.0")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gate, "apply_promotion", hotfix_lands_during_the_evaluation)
    result = run(workdir, "promote", f"churn:{GOOD}", "production", "--against", "@production",
                 "--data", str(workdir / "valid.csv"), "--target", TARGET)
    assert result.exit_code == 1
    assert result.stderr == ("error: production moved from 1.0.0 to 1.2.0 during the evaluation; nothing changed;"
                             " promote again to compare against 1.2.0\n")
    assert churn.aliases("churn") == {"production": "1.2.0"}


# -- interleavings: never a lost update --------------------------------------------------------------------

VERSIONS = ["1.0.0", "1.1.0", "1.2.0"]
OPS = st.one_of(
    st.tuples(st.just("cas"), st.sampled_from(VERSIONS)),  # read, then move expecting what was read
    st.tuples(st.just("create"), st.sampled_from(VERSIONS)),  # expected=None
    st.tuples(st.just("set"), st.sampled_from(VERSIONS)),  # unconditional
    st.tuples(st.just("cas-delete"), st.none()),
)


@pytest.mark.parametrize("backend", ["local", pytest.param("s3", marks=pytest.mark.slow)])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plans=st.lists(st.lists(OPS, min_size=1, max_size=6), min_size=2, max_size=3))
def test_concurrent_moves_of_one_alias_lose_no_update(backend: str, tiny_source: Sources,
                                                      tmp_path_factory: pytest.TempPathFactory,
                                                      plans: list[list[tuple[str, str | None]]]) -> None:
    reg = tiny_source.clone(backend, tmp_path_factory.mktemp("cas") / "registry")
    start = len(reg.alias_history("m"))

    def step(thread: int, i: int, item: tuple[str, str | None]) -> list[shipml.AliasMove]:
        kind, version = item
        reason = f"t{thread}-{i}"
        read = reg.aliases("m").get("production")
        if kind == "cas":
            move = reg.set_alias("m", "production", str(version), expected=read, reason=reason)
            assert move.from_version == read  # it moved from exactly what this thread had seen
        elif kind == "create":
            move = reg.set_alias("m", "production", str(version), expected=None, reason=reason)
            assert move.from_version is None
        elif kind == "set":
            move = reg.set_alias("m", "production", str(version), reason=reason)
        else:
            if read is None:
                return []
            move = reg.delete_alias("m", "production", expected=read, reason=reason)
            assert move.from_version == read
        return [move]

    done = race(plans, step)
    moves = [m for m in reg.alias_history("m")[start:] if m.alias == "production"]
    # complete: every move that returned is in the history once, and nothing else is
    assert sorted(m.reason or "" for m in moves) == sorted(m.reason or "" for m in done)
    # ordered, no lost update: each move starts where the previous one ended, and the file agrees with the last
    previous: str | None = "1.0.0"
    for m in moves:
        assert m.from_version == previous, (m, moves)
        previous = m.to_version
    assert reg.aliases("m").get("production") == previous
