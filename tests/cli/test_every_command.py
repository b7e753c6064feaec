"""``--json`` and ``--registry`` on every command, before or after its name (issue 12, item 12).

The table below names every registered command (the COMMANDS table, and each subcommand of a group) with the
arguments that run it on a tiny registry; a command added without an entry fails
``test_the_table_covers_every_command``, so each new command gets both options checked and its JSON parsed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import orjson
import pytest
import skops.io as sio
from click.testing import CliRunner, Result
from sklearn.linear_model import LogisticRegression

from shipml.cli import COMMANDS, cli
from shipml.cli._common import add_shared_options
from tests.cli.gate_models import GOOD, TARGET, WEAK, churn_frame
from tests.loadtest.tiny_server import running

Args = Callable[[Path, dict[str, object]], list[str]]


def walk(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from walk(command, (*prefix, name))


def every_command() -> dict[str, click.Command]:
    return {" ".join(path): command for path, command in walk(cli)}


def _skops_model(work: Path) -> Path:
    X, y = churn_frame(60, seed=4)
    path = work / "model.skops"
    sio.dump(LogisticRegression().fit(X[["age", "income"]], y), path)
    X[["age", "income"]].to_csv(work / "sample.csv", index=False)
    return path


def _labels(work: Path, seen: dict[str, object]) -> Path:
    """Labels for the first rows that ``predict`` logged (its JSON names the request id)."""
    path = work / "labels.csv"
    request_id = seen["predict"]["log_request_id"]  # type: ignore[index]
    path.write_text("request_id,row,target\n" + "".join(f"{request_id},{i},1\n" for i in range(3)))
    return path


# Run in this order on one registry (some use what an earlier one made): name -> arguments after the name.
CASES: dict[str, Args] = {
    "models": lambda w, s: [],
    "versions": lambda w, s: ["churn"],
    "show": lambda w, s: [f"churn:{GOOD}"],
    "export": lambda w, s: [f"churn:{GOOD}", "-o", str(w / "bundle"), "--rows", "200"],
    "evaluate": lambda w, s: [f"churn:{GOOD}", "--data", str(w / "valid.csv"), "--target", TARGET],
    "alias": lambda w, s: ["churn", "production", WEAK],
    "history": lambda w, s: ["churn"],
    "promote": lambda w, s: [f"churn:{GOOD}", "staging", "--data", str(w / "valid.csv"), "--target", TARGET],
    "predict-sample": lambda w, s: ["churn@production", str(w / "valid.csv"), "--limit", "3"],
    "drift": lambda w, s: ["churn@production", str(w / "valid.csv"), "--predict"],
    "predict": lambda w, s: ["churn@production", str(w / "valid.csv"), "-o", str(w / "scores.parquet"),
                             "--workers", "1", "-q", "--log", str(w / "predlog")],
    "feedback": lambda w, s: ["churn", str(_labels(w, s)), "--log", str(w / "predlog")],
    "monitor": lambda w, s: ["churn@production", "--log", str(w / "predlog"), "-o", str(w / "report.html")],
    "import": lambda w, s: [str(_skops_model(w)), "--name", "imported", "--sample", str(w / "sample.csv")],
    "delete": lambda w, s: ["imported:1.0.0"],
    "gc": lambda w, s: ["--older-than", "0"],
    "registry copy": lambda w, s: [str(w / "registry"), str(w / "copy"), "--model", "churn"],
    "registry": lambda w, s: ["copy", str(w / "registry"), str(w / "copy")],  # resumed: skips what is there
    "token": lambda w, s: ["list"],
    "token create": lambda w, s: ["--description", "ci"],
    "token list": lambda w, s: [],
    "token revoke": lambda w, s: [str(s["token create"]["id"])],  # type: ignore[index]
    "serve": lambda w, s: ["churn@production", "--check"],
    "build": lambda w, s: ["churn@production", "--context-only", str(w / "context")],
    "k8s": lambda w, s: ["churn@production", "-o", str(w / "k8s")],
    "ray": lambda w, s: ["churn@production", "-o", str(w / "ray")],
    "locustfile": lambda w, s: ["churn@production", "-o", str(w / "locustfile.py")],
    "loadtest": lambda w, s: [str(s["url"]), "--ref", "churn@production", "--rate", "20", "--duration", "0.2s",
                              "-q"],
    # production is at WEAK (the alias case), GOOD was evaluated and promoted to staging
    "canary start": lambda w, s: ["churn", "churn@staging", "--weight", "10", "--max-p99-ms", "50"],
    "canary status": lambda w, s: ["churn"],
    "canary abort": lambda w, s: ["churn", "--reason", "test"],
    "canary": lambda w, s: ["start", "churn", GOOD, "--weight", "5"],
    "canary promote": lambda w, s: ["churn"],
    "rollback": lambda w, s: ["churn", "--reason", "undo the promotion"],
}


def test_the_table_covers_every_command() -> None:
    assert set(COMMANDS) <= set(every_command())
    assert set(CASES) == set(every_command())


@pytest.mark.parametrize("path", sorted(every_command()))
def test_help_lists_json_and_registry(path: str) -> None:
    result = CliRunner().invoke(cli, [*path.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "--json" in result.output and "--registry PATH" in result.output, result.output


def _invoke(*args: str) -> Result:
    env = {"SHIPML_HOME": os.environ["SHIPML_HOME"]}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.mark.slow
def test_every_command_takes_both_options_after_its_name_and_prints_json(workdir: Path) -> None:
    """Each command with ``--registry DIR --json`` after its name (SHIPML_HOME names another, empty registry):
    exit code 0, and stdout is one JSON document."""
    seen: dict[str, object] = {}
    with running(get_json={"/models": {"models": [{"name": "churn"}]}}) as server:
        seen["url"] = server.url
        commands = every_command()
        for name, args in CASES.items():
            shared = ["--registry", str(workdir / "registry"), "--json"]
            if isinstance(commands[name], click.Group):  # a group's own options come before its subcommand
                result = _invoke(*name.split(), *shared, *args(workdir, seen))
            else:
                result = _invoke(*name.split(), *args(workdir, seen), *shared)
            assert result.exit_code == 0, f"{name}: {result.output}"
            try:
                seen[name] = orjson.loads(result.stdout)
            except orjson.JSONDecodeError:
                pytest.fail(f"shipml {name} --json printed no JSON: {result.stdout[:500]!r}")
    assert seen["models"] and isinstance(seen["models"], list)
    assert seen["models"][0]["name"] == "churn"  # the registry given after the command, not SHIPML_HOME's
    assert seen["show"]["manifest"]["version"] == GOOD  # type: ignore[index]
    assert seen["serve"]["endpoints"][0]["models"] == ["churn@production"]  # type: ignore[index]
    assert seen["build"]["context"] == str(workdir / "context")  # type: ignore[index]
    assert seen["export"]["parity"]["rows_differing"] == 0 and seen["export"]["size_bytes"] > 0  # type: ignore[index]
    assert seen["canary start"]["version"] == GOOD and seen["canary abort"]["state"] == "aborted"  # type: ignore[index]
    assert seen["canary promote"]["state"] == "promoted"  # type: ignore[index]
    assert seen["rollback"]["move"]["to"] == WEAK  # type: ignore[index]
    assert seen["feedback"]["matched_rows"] == 3 and seen["feedback"]["unmatched_labels"] == 0  # type: ignore[index]
    assert seen["monitor"]["labelled_rows"] == 3 and seen["monitor"]["features"]  # type: ignore[index]
    assert seen["monitor"]["html"]["bytes"] == (workdir / "report.html").stat().st_size  # type: ignore[index]


def test_options_before_and_after_the_command_name(workdir: Path) -> None:
    registry = str(workdir / "registry")
    before = _invoke("--registry", registry, "--json", "models")
    after = _invoke("models", "--registry", registry, "--json")
    mixed = _invoke("--json", "models", "--registry", registry)
    assert before.exit_code == after.exit_code == mixed.exit_code == 0, (before.output, after.output, mixed.output)
    assert orjson.loads(before.stdout) == orjson.loads(after.stdout) == orjson.loads(mixed.stdout)
    assert orjson.loads(after.stdout)[0]["name"] == "churn"
    nested = _invoke("token", "create", "--registry", registry, "--json")
    assert nested.exit_code == 0, nested.output
    assert orjson.loads(nested.stdout)["scope"] == "predict"
    assert (workdir / "registry" / "tokens.json").is_file()
    # the registry named after the command wins over the one named before it
    other = workdir / "other"
    assert orjson.loads(_invoke("--registry", str(other), "models", "--registry", registry, "--json").stdout)
    assert orjson.loads(_invoke("--registry", registry, "models", "--registry", str(other), "--json").stdout) == []


def test_show_json_after_the_name_is_the_model_card(workdir: Path) -> None:
    result = _invoke("show", f"churn:{WEAK}", "--json", "--registry", str(workdir / "registry"))
    assert result.exit_code == 0, result.output
    card = orjson.loads(result.stdout)
    assert card["manifest"]["name"] == "churn" and card["manifest"]["version"] == WEAK


def test_a_command_may_not_declare_the_shared_options_again() -> None:
    @click.command("mine")
    @click.option("--json", "as_json", is_flag=True, help="Its own JSON.")
    def mine(as_json: bool) -> None:
        """A command with its own --json."""

    with pytest.raises(TypeError, match="'mine' declares --json"):
        add_shared_options(mine)
