"""The registry commands on an S3 registry named by ``SHIPML_HOME=s3://bucket/prefix`` (a real moto server),
and the library's default registry from the same variable."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

import shipml
from shipml.cli import cli
from shipml.registry.objects import ObjectRegistry
from tests.s3_support import S3Server
from tests.unit.registry_support import build_tiny_registry


def shipml_json(*args: str) -> object:
    result = CliRunner().invoke(cli, ["--json", *args])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def test_every_registry_command_works_on_shipml_home_in_s3(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"s3://{s3.new_bucket()}/team/registry"
    monkeypatch.setenv("SHIPML_HOME", uri)
    reg = shipml.Registry()
    assert isinstance(reg, ObjectRegistry) and reg.location == uri
    build_tiny_registry(reg)
    assert shipml_json("models") == [{"name": "m", "latest": "1.1.0", "versions": 2,
                                      "aliases": {"production": "1.0.0"}}]
    assert [v["version"] for v in shipml_json("versions", "m")] == ["1.0.0", "1.1.0"]  # type: ignore[union-attr]
    shown = CliRunner().invoke(cli, ["show", "m@production"])
    assert shown.exit_code == 0 and "1.0.0" in shown.stdout and "accuracy" in shown.stdout, shown.output
    shipml_json("alias", "m", "production", "1.1.0", "--expect", "1.0.0", "--reason", "better")
    history = shipml_json("history", "m")
    assert [(h["from"], h["to"]) for h in history] == [(None, "1.0.0"), ("1.0.0", "1.1.0")]  # type: ignore[union-attr]
    assert shipml_json("delete", "m:1.0.0") == {"deleted": "m:1.0.0"}
    assert shipml.load_model("m@production").version == "1.1.0"  # the default registry: $SHIPML_HOME
    refused = CliRunner().invoke(cli, ["alias", "m", "production", "1.0.0"])
    assert (refused.exit_code, refused.stderr) == (1, "error: model 'm' has no version 1.0.0\n")


def test_a_missing_bucket_is_one_error_line(s3: S3Server) -> None:
    result = CliRunner().invoke(cli, ["--registry", "s3://no-such-bucket-anywhere/x", "models"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the bucket 'no-such-bucket-anywhere' does not exist")
    assert result.stderr.count("\n") == 1


def test_tokens_need_a_local_file_with_an_s3_registry(s3: S3Server, tmp_path: Path) -> None:
    from shipml.errors import SpecError
    from shipml.server.runner import build_parts
    from shipml.spec import parse_spec

    uri = f"s3://{s3.new_bucket()}/r"
    build_tiny_registry(shipml.Registry(uri))
    listed = CliRunner().invoke(cli, ["--registry", uri, "token", "list"])
    assert listed.exit_code == 1 and listed.stderr == (f"error: tokens of a server on registry '{uri}' live in a"
                                                       " local file: give --file PATH, the path its spec's"
                                                       " auth.tokens_file names\n")
    data = {"registry": uri, "endpoints": [{"name": "m", "models": ["m@production"]}], "auth": {"enabled": True}}
    with pytest.raises(SpecError, match=r"auth\.tokens_file is needed with a registry in an object store"):
        build_parts(parse_spec(data))
    tokens = tmp_path / "tokens.json"
    created = CliRunner().invoke(cli, ["--registry", uri, "token", "create", "--file", str(tokens)])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    app, gate = build_parts(parse_spec({**data, "auth": {"enabled": True, "tokens_file": str(tokens)}}))
    assert gate is not None and app.registry.location == uri
    from shipml.server.auth import TokenStore

    assert TokenStore(tokens).verify(token) is not None  # the file the server reads holds the new token
    listed = CliRunner().invoke(cli, ["--registry", uri, "token", "list", "--file", str(tokens)])
    assert listed.exit_code == 0 and token.split("_")[1] in listed.stdout
    revoked = CliRunner().invoke(cli, ["token", "revoke", token.split("_")[1], "--file", str(tokens)])
    assert revoked.exit_code == 0 and TokenStore(tokens).verify(token) is None
