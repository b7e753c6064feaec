"""The ``server`` section of the deployment spec: the HTTP backend, from the spec file or ``serve --http``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from shipml.cli import cli
from shipml.errors import SpecError
from shipml.spec import parse_spec

ENDPOINTS = [{"name": "churn", "models": ["churn"]}]


def test_http_backend_defaults_to_uvicorn_and_takes_granian() -> None:
    assert parse_spec({"endpoints": ENDPOINTS}).server.http == "uvicorn"
    assert parse_spec({"endpoints": ENDPOINTS, "server": {"http": "granian"}}).server.http == "granian"


def test_an_unknown_http_backend_is_refused_naming_the_field_and_the_choices() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"endpoints": ENDPOINTS, "server": {"http": "hypercorn"}}, "shipml.yaml")
    assert str(caught.value) == "shipml.yaml is invalid: server.http: Input should be 'uvicorn' or 'granian'"


def test_serve_http_option_overrides_the_spec(tmp_path: Path) -> None:
    spec = tmp_path / "shipml.yaml"
    spec.write_text(yaml.safe_dump({"endpoints": ENDPOINTS, "server": {"http": "granian", "workers": 2}}))
    runner = CliRunner()
    kept = runner.invoke(cli, ["serve", "--spec", str(spec), "--check"])
    assert kept.exit_code == 0, kept.output
    assert yaml.safe_load(kept.output)["server"]["http"] == "granian"
    overridden = runner.invoke(cli, ["serve", "--spec", str(spec), "--http", "uvicorn", "--check"])
    assert overridden.exit_code == 0, overridden.output
    assert yaml.safe_load(overridden.output)["server"] == {**yaml.safe_load(kept.output)["server"], "http": "uvicorn"}
    unknown = runner.invoke(cli, ["serve", "churn", "--http", "hypercorn", "--check"])
    assert unknown.exit_code == 2 and "'hypercorn' is not one of 'uvicorn', 'granian'" in unknown.output


def test_connection_limits_have_defaults_and_refuse_what_cannot_work() -> None:
    limits = parse_spec({"endpoints": ENDPOINTS}).limits
    assert (limits.header_timeout_s, limits.body_timeout_s, limits.max_connections) == (10.0, 10.0, 4096)
    for field, value, message in [("header_timeout_s", 0, "greater than 0"), ("body_timeout_s", -1, "greater than 0"),
                                  ("max_connections", 8, "greater than or equal to 16"),
                                  ("header_timeout_s", "soon", "valid number")]:
        with pytest.raises(SpecError) as caught:
            parse_spec({"endpoints": ENDPOINTS, "limits": {field: value}}, "shipml.yaml")
        assert str(caught.value).startswith(f"shipml.yaml is invalid: limits.{field}: ")
        assert message in str(caught.value)
