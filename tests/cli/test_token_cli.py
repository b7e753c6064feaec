"""``shipml token``: create, list, revoke through click's runner, against real files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from shipml.cli import cli
from shipml.server.auth import TokenStore


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "reg"


def run(*args: str, root: Path | str | None = None) -> Result:
    prefix = ["--registry", str(root)] if root is not None else []
    return CliRunner().invoke(cli, [*prefix, *args], catch_exceptions=False)


def test_round_trip(root: Path) -> None:
    created = run("token", "create", "--scope", "predict", "--model", "churn", "--description", "ci job",
                  "--expires-in", "30d", root=root)
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("shipml_") and "\n" not in token
    token_id = token.split("_")[1]
    assert f"created token {token_id}" in created.stderr
    assert "shown only this once" in created.stderr

    store = TokenStore(root / "tokens.json")
    info = store.verify(token)
    assert info is not None
    assert (info.scope, info.model, info.description) == ("predict", "churn", "ci job")
    assert info.expires_at is not None
    assert stat.S_IMODE((root / "tokens.json").stat().st_mode) == 0o600

    listed = run("token", "list", root=root)
    assert listed.exit_code == 0
    assert token_id in listed.stdout and "churn" in listed.stdout and "active" in listed.stdout
    assert "ci job" in listed.stdout
    assert token.split("_")[2] not in listed.output

    revoked = run("token", "revoke", token_id, root=root)
    assert revoked.exit_code == 0
    assert revoked.stdout.strip() == f"revoked token {token_id}"
    assert TokenStore(root / "tokens.json").verify(token) is None
    assert "revoked" in run("token", "list", root=root).stdout


def test_json_output(root: Path) -> None:
    created = run("--json", "token", "create", "--scope", "admin", root=root)
    assert created.exit_code == 0
    data = json.loads(created.stdout)
    assert data["scope"] == "admin" and data["model"] is None and data["expires_at"] is None
    assert data["token"].startswith(f"shipml_{data['id']}_")
    assert "hash" not in data

    listed = json.loads(run("--json", "token", "list", root=root).stdout)
    assert [(t["id"], t["status"]) for t in listed] == [(data["id"], "active")]
    assert "hash" not in listed[0] and "token" not in listed[0]
    assert data["token"].split("_")[2] not in json.dumps(listed)

    revoked = json.loads(run("--json", "token", "revoke", data["id"], root=root).stdout)
    assert revoked["revoked"] is True and revoked["status"] == "revoked" and revoked["revoked_at"]


def test_store_follows_shipml_home(tmp_path: Path) -> None:
    created = run("token", "create")  # conftest points SHIPML_HOME at tmp_path/home-registry
    assert created.exit_code == 0
    info = TokenStore(tmp_path / "home-registry" / "tokens.json").verify(created.stdout.strip())
    assert info is not None and info.scope == "predict"


def test_empty_list(root: Path) -> None:
    listed = run("token", "list", root=root)
    assert listed.exit_code == 0
    assert "no tokens" in listed.stdout
    assert json.loads(run("--json", "token", "list", root=root).stdout) == []


def test_errors_are_one_line(root: Path) -> None:
    missing = run("token", "revoke", "0123456789ab", root=root)
    assert missing.exit_code == 1
    assert missing.stderr.strip() == "error: no token with id '0123456789ab'"

    bad_model = run("token", "create", "--model", "../x", root=root)
    assert bad_model.exit_code == 1
    assert bad_model.stderr.startswith("error: invalid model name")

    remote = run("token", "list", root="s3://bucket/registry")
    assert remote.exit_code == 1
    assert remote.stderr.startswith("error: tokens of a server on registry 's3://bucket/registry' live in a local")


@pytest.mark.parametrize(("args", "message"), [
    (["--scope", "root"], "Invalid value for '--scope'"),
    (["--expires-in", "soon"], "invalid duration 'soon'"),
    (["--expires-in", "0d"], "longer than zero"),
    (["--scope", "admin", "--model", "churn"], "restricts predict tokens only"),
])
def test_usage_errors(root: Path, args: list[str], message: str) -> None:
    result = run("token", "create", *args, root=root)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (root / "tokens.json").exists()


def test_every_command_has_help() -> None:
    group = cli.get_command(click.Context(cli), "token")
    assert isinstance(group, click.Group) and group.help
    for name in ("create", "list", "revoke"):
        command = group.commands[name]
        assert command.help, name
        result = run("token", name, "--help")
        assert result.exit_code == 0 and "Usage:" in result.stdout
