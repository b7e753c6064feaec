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


def test_http_backend_defaults_to_granian_and_takes_uvicorn() -> None:
    assert parse_spec({"endpoints": ENDPOINTS}).server.http == "granian"
    assert parse_spec({"endpoints": ENDPOINTS, "server": {"http": "uvicorn"}}).server.http == "uvicorn"


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
