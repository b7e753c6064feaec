"""A real ``shipml serve`` process whose registry is in S3 (a real moto server on 127.0.0.1): it loads through
the local cache, serves, and follows an alias moved by another process (``shipml alias`` on the same bucket)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shipml.registry import Registry
from tests.e2e import release_models as rm
from tests.e2e.server_process import start
from tests.s3_support import S3Server


@pytest.fixture
def s3_uri(s3: S3Server) -> str:
    uri = f"s3://{s3.new_bucket()}/team"
    rm.good(uri, "1.0.0", 1)  # type: ignore[arg-type]
    rm.good(uri, "2.0.0", 2)  # type: ignore[arg-type]
    Registry(uri).set_alias(rm.NAME, "production", "1.0.0", reason="first release")
    return uri


def answer(url: str) -> tuple[str | None, int]:
    found = httpx.post(url + "/predict", json=rm.BODY, timeout=10)
    assert found.status_code == 200, found.text
    return found.headers.get("x-shipml-version"), rm.shift_of(found.json()["predictions"][0])


@pytest.mark.slow
def test_a_server_started_from_s3_serves_and_follows_an_alias_move(s3_uri: str, tmp_path: Path) -> None:
    server = start(s3_uri, tmp_path, endpoints=[{"name": "churn", "models": ["churn@production"]}],
                   server={"follow_interval_s": 0.5})
    try:
        assert answer(server.url) == ("1.0.0", 1)
        moved = subprocess.run([sys.executable, "-m", "shipml.cli", "--registry", s3_uri, "alias", rm.NAME,
                                "production", "2.0.0", "--reason", "from another process"],
                               capture_output=True, text=True, timeout=120, check=False)
        assert moved.returncode == 0, moved.stderr
        deadline = time.monotonic() + 20
        while answer(server.url)[0] != "2.0.0":
            assert time.monotonic() < deadline, "the server never followed the alias move"
            time.sleep(0.1)
        assert answer(server.url) == ("2.0.0", 2)
    finally:
        assert server.stop() == 0
    history = Registry(s3_uri).alias_history(rm.NAME)
    assert [(m.from_version, m.to_version) for m in history] == [(None, "1.0.0"), ("1.0.0", "2.0.0")]
