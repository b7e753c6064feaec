from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import click
import orjson
import pytest
from click.testing import CliRunner

import shipml.cli
from shipml.cli import COMMANDS, cli
from tests.cli.gate_models import GOOD, WEAK, run


def run_json(workdir: Path, *args: str) -> object:
    result = run(workdir, "--json", *args)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def all_commands() -> dict[str, click.Command]:
    ctx = click.Context(cli)
    commands = {name: cli.get_command(ctx, name) for name in cli.list_commands(ctx)}
    assert all(commands.values()), [name for name, c in commands.items() if c is None]
    return commands  # type: ignore[return-value]


def test_every_command_and_option_has_help() -> None:
    missing = []
    for name, command in all_commands().items():
        if not (command.help or "").strip():
            missing.append(name)
        missing += [f"{name} {p.name}" for p in command.params
                    if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert not missing, f"commands or options without help text: {missing}"
    for name in ("models", "versions", "show", "alias", "history", "delete", "evaluate", "promote",
                 "predict-sample"):
        assert name in all_commands()
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0
        assert "Usage: " in result.output


def test_lazy_commands_match_what_each_module_registers() -> None:
    """COMMANDS names every command of every module under shipml.cli, each under the module that adds it."""
    found: dict[str, str] = {}
    for info in pkgutil.iter_modules(shipml.cli.__path__):
        if info.name.startswith("_"):  # __main__ runs the command line on import
            continue
        register = getattr(importlib.import_module(f"shipml.cli.{info.name}"), "register", None)
        if register is not None:
            group = click.Group()
            register(group)
            found.update(dict.fromkeys(group.commands, info.name))
    assert found == COMMANDS


def test_models(workdir: Path) -> None:
    result = run(workdir, "models")
    assert result.exit_code == 0
    header, _rule, row = result.stdout.splitlines()
    assert header.split() == ["name", "latest", "versions", "aliases"]
    assert row.split() == ["churn", GOOD, "2"]
    assert run_json(workdir, "models") == [{"name": "churn", "latest": GOOD, "versions": 2, "aliases": {}}]


def test_models_on_an_empty_registry(tmp_path: Path) -> None:
    result = run(tmp_path, "models")
    assert result.exit_code == 0
    assert "no models in" in result.stdout
    assert run_json(tmp_path, "models") == []


def test_versions(workdir: Path) -> None:
    run(workdir, "alias", "churn", "production", WEAK)
    result = run(workdir, "versions", "churn")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[2].startswith(WEAK) and "@production" in lines[2] and "age only" in lines[2]
    assert lines[3].startswith(GOOD)
    rows = run_json(workdir, "versions", "churn")
    assert isinstance(rows, list)
    assert [(r["version"], r["aliases"], r["runtime"], r["task"]) for r in rows] == [
        (WEAK, ["production"], "sklearn", "classification"), (GOOD, [], "sklearn", "classification")]


def test_show_the_model_card(workdir: Path) -> None:
    run(workdir, "alias", "churn", "production", WEAK)
    run(workdir, "evaluate", f"churn:{WEAK}", "--data", str(workdir / "valid.csv"), "--target", "churned")
    result = run(workdir, "show", "churn@production")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"churn:{WEAK}  (@production)\nage only\n")
    for expected in ("tags     team=growth", "runtime  sklearn (API v1)", "trust    not needed (safe format)",
                     "Signature (dataframe, 3 inputs)", "state   string  no        {CA, NY, TX}",
                     "classes           no, yes", "Environment", "framework  scikit-learn", "Evaluations",
                     "valid.csv  churned  200", "Lineage", "Aliases: @production"):
        assert expected in out, expected
    assert re.search(r"\n  sample rows +300\n", out)
    assert "age     int     no        [" in out
    card = run_json(workdir, "show", f"churn:{WEAK}")
    assert isinstance(card, dict)
    assert card["manifest"]["version"] == WEAK
    assert card["aliases"] == ["production"]
    assert card["evaluations"][0]["data"] == "valid.csv"


def test_show_a_package_directory(workdir: Path) -> None:
    path = workdir / "registry" / "models" / "churn" / "versions" / GOOD
    card = run_json(workdir, "show", str(path))
    assert isinstance(card, dict)
    assert card["manifest"]["version"] == GOOD
    assert card["aliases"] == []


def test_alias_set_move_delete_and_history(workdir: Path) -> None:
    result = run(workdir, "alias", "churn", "@production", WEAK, "--reason", "first")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"churn@production -> {WEAK}"
    moved = run_json(workdir, "alias", "churn", "production", GOOD)
    assert isinstance(moved, dict)
    assert (moved["from"], moved["to"]) == (WEAK, GOOD)
    result = run(workdir, "alias", "churn", "production", "--delete", "--reason", "retired")
    assert result.stdout.strip() == f"removed churn@production (was {GOOD})"
    assert run_json(workdir, "models") == [{"name": "churn", "latest": GOOD, "versions": 2, "aliases": {}}]

    history = run(workdir, "history", "churn")
    assert history.exit_code == 0
    lines = history.stdout.splitlines()
    assert lines[0].split() == ["at", "alias", "from", "to", "by", "reason"]
    assert len(lines) == 5
    assert lines[2].endswith("first")
    assert "(removed)" in lines[4] and lines[4].endswith("retired")
    moves = run_json(workdir, "history", "churn", "--alias", "production")
    assert isinstance(moves, list)
    assert [(m["from"], m["to"], m["reason"]) for m in moves] == [
        (None, WEAK, "first"), (WEAK, GOOD, None), (GOOD, None, "retired")]


def test_alias_needs_a_version_or_delete(workdir: Path) -> None:
    result = run(workdir, "alias", "churn", "production")
    assert result.exit_code == 2
    assert "give a VERSION" in result.stderr
    result = run(workdir, "alias", "churn", "production", WEAK, "--delete")
    assert result.exit_code == 2


def test_history_of_a_model_without_moves(workdir: Path) -> None:
    result = run(workdir, "history", "churn")
    assert result.exit_code == 0
    assert "no alias moves" in result.stdout


def test_delete_refused_while_an_alias_holds_the_version(workdir: Path) -> None:
    run(workdir, "alias", "churn", "production", WEAK)
    result = run(workdir, "delete", f"churn:{WEAK}")
    assert result.exit_code == 1
    assert result.stderr == f"error: churn:{WEAK} is held by alias(es) production: move them first\n"
    assert result.stdout == ""
    run(workdir, "alias", "churn", "production", "--delete")
    assert run_json(workdir, "delete", f"churn:{WEAK}") == {"deleted": f"churn:{WEAK}"}
    assert run_json(workdir, "models") == [{"name": "churn", "latest": GOOD, "versions": 1, "aliases": {}}]


@pytest.mark.parametrize(("args", "message"), [
    (["show", "churn:9.9.9"], "error: model 'churn' has no version 9.9.9"),
    (["show", "churn@nowhere"], "error: model 'churn' has no alias 'nowhere'"),
    (["show", "churn:1"], "error: invalid version '1': expected MAJOR.MINOR.PATCH such as 1.2.0"),
    (["versions", "nope"], "error: no model named 'nope'"),
    (["delete", "churn"], "error: delete needs an exact version such as churn:1.0.0"),
    (["alias", "churn", "bad alias!", WEAK], "error: invalid alias 'bad alias!'"),
    (["evaluate", "ghost", "--data", "x.csv", "--target", "y"], "error: no model named 'ghost'"),
    (["predict-sample", "ghost:1.0.0", "x.csv"], "error: model 'ghost' has no version 1.0.0"),
])
def test_a_bad_ref_gives_one_clear_error_line(workdir: Path, args: list[str], message: str) -> None:
    result = run(workdir, *args)
    assert result.exit_code == 1
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_the_installed_entry_point(workdir: Path) -> None:
    shipml = Path(sys.executable).parent / "shipml"
    out = subprocess.run([str(shipml), "--registry", str(workdir / "registry"), "--json", "models"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout)[0]["name"] == "churn"
    bad = subprocess.run([str(shipml), "--registry", str(workdir / "registry"), "show", "churn:7.0.0"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 1
    assert bad.stderr == "error: model 'churn' has no version 7.0.0\n"
