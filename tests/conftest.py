from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import shipml
from tests.cli.gate_models import build_registry
from tests.s3_support import S3Server, moto_server


@pytest.fixture
def registry(tmp_path: Path) -> shipml.Registry:
    return shipml.Registry(tmp_path / "registry")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compile_cache: Path) -> None:
    """No test ever touches the user's ~/.shipml, nor their caches (compiled models, object registries)."""
    monkeypatch.setenv("SHIPML_HOME", str(tmp_path / "home-registry"))
    monkeypatch.setenv("SHIPML_COMPILE_CACHE", str(compile_cache))
    monkeypatch.setenv("SHIPML_CACHE", str(tmp_path / "shipml-cache"))


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of compiled models for the session (servers started by tests inherit it)."""
    return tmp_path_factory.mktemp("compiled")


@pytest.fixture(scope="session")
def churn_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The churn registry and labelled data of tests/cli/gate_models.py, built once per session."""
    root = tmp_path_factory.mktemp("churn")
    build_registry(root)
    return root


@pytest.fixture
def workdir(churn_registry: Path, tmp_path: Path) -> Path:
    """A private copy of the churn registry and its data, so each test may write to it."""
    shutil.copytree(churn_registry, tmp_path / "w")
    return tmp_path / "w"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-protocol server (moto) on 127.0.0.1, started once per session and stopped at its end."""
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The S3 server, with its endpoint and test credentials in this test's environment (as a user sets them)."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    return s3_server
