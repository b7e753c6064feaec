"""``shipml loadtest`` and a generated locustfile against a real ``shipml serve`` process on 127.0.0.1."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from shipml.deploy.locustfile import render_locustfile
from shipml.loadtest import run_loadtest
from tests.e2e.server_process import Server, start

pytestmark = pytest.mark.slow

LOCUST = Path(sys.executable).parent / "locust"


@pytest.fixture(scope="module")
def server(churn_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start(churn_registry / "registry", tmp_path_factory.mktemp("serve"),
              endpoints=[{"name": "churn", "models": ["churn"]}], server={"access_log": False})
    yield s
    s.stop()


@pytest.mark.parametrize("protocol", ["simple", "v1", "v2"])
def test_every_protocol_passes_its_slo_against_a_real_server(server: Server, protocol: str) -> None:
    report = run_loadtest(server.url, model="churn", protocol=protocol, rate=40, duration="1s", rows=2,  # type: ignore[arg-type]
                          slo="errors<0.1%,p99<5s")
    assert report.statuses == {"200": 40}, report.summary()
    assert report.passed and report.run.payloads == 64
    assert report.latency.p50 is not None and report.latency.p50 > 0


def test_bodies_from_the_registry_and_closed_loop(server: Server, churn_registry: Path) -> None:
    report = run_loadtest(server.url, ref="churn", registry=churn_registry / "registry", concurrency=4,
                          duration="1s", slo="errors<0.1%")
    assert report.issued > 4 and report.ok == report.issued and report.passed


def test_cli_json_against_a_real_server(server: Server, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "shipml.cli", "loadtest", server.url, "--rate", "30",
                           "--duration", "1s", "--slo", "errors<0.1%", "--json", "--html", str(page)],
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    data = orjson.loads(done.stdout)
    assert data["run"]["model"] == "churn" and data["statuses"] == {"200": 30}
    assert b"done 30" in done.stderr and "<svg" in page.read_text()


def test_generated_locustfile_runs_headless_without_failures(server: Server, churn_registry: Path,
                                                            tmp_path: Path) -> None:
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(render_locustfile("churn", churn_registry / "registry", rows=2))
    prefix = tmp_path / "stats"
    done = subprocess.run([str(LOCUST), "-f", str(locustfile), "--headless", "-u", "5", "-r", "5", "-t", "3s",
                           "--host", server.url, "--only-summary", "--csv", str(prefix)],
                          capture_output=True, timeout=120, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 10 and int(total["Failure Count"]) == 0
    assert "/models/churn/predict" in rows
