"""Several worker processes behind one port (uvicorn: one shared socket; granian: one SO_REUSEPORT socket each):
each scrape of /metrics reaches one worker, and must still count the requests every worker served."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import numeric_data
from tests.e2e.server_process import start

pytestmark = pytest.mark.slow


def predict_count(text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("shipml_requests_total{") and 'route="predict"' in line and 'code="200"' in line)


def test_metrics_add_up_over_workers(served_registry: Path, tmp_path: Path, http_backend: str) -> None:
    server = start(served_registry, tmp_path, http=http_backend, server={"workers": 2})
    body = {"instances": numeric_data().head(2).to_dict("records")}
    try:
        workers: set[str] = set()
        sent = 0
        while len(workers) < 2 and sent < 400:  # a new connection each time: the kernel spreads them
            answer = httpx.post(server.url + "/predict", json=body)
            assert answer.status_code == 200
            workers.add(answer.json()["request_id"].split("-")[0])  # request ids start with the worker's pid
            sent += 1
        assert len(workers) == 2, "one worker served every connection"
        for _ in range(6):
            text = httpx.get(server.url + "/metrics").text
            assert predict_count(text) == sent
            rows = [line for line in text.splitlines() if line.startswith("shipml_rows_predicted_total{")]
            assert sum(float(line.rsplit(" ", 1)[1]) for line in rows) == 2 * sent
            assert "shipml_ready 1.0" in text
    finally:
        assert server.stop() == 0
