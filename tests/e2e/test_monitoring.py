"""Monitoring against real server processes: the prediction log holds exactly the rows served, a kill -9 leaves
only readable Parquet, an unwritable log never fails a prediction, drift names the one shifted feature and fires
its alert at a webhook, and feedback gives live accuracy equal to the offline accuracy on the same rows."""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import shipml
from shipml.monitoring.logread import read_log
from tests.e2e.server_process import Server, start
from tests.json_strategies import json_values

pytestmark = pytest.mark.slow

FEATURES = ["age", "income", "score", "plan"]


def population(rows: int, seed: int, *, shift_income: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.normal(40, 10, rows).round(1),
        "income": rng.normal(50, 15, rows).round(2) + shift_income,
        "score": rng.uniform(0, 1, rows).round(4),
        "plan": rng.choice(["basic", "plus", "pro"], rows, p=[0.5, 0.3, 0.2]),
    })


def labels_of(frame: pd.DataFrame, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logit = 0.08 * (frame["age"] - 40) - 0.05 * (frame["income"] - 50) + 2 * (frame["score"] - 0.5)
    return (rng.random(len(frame)) < 1 / (1 + np.exp(-logit))).astype(int)


@pytest.fixture(scope="module")
def watched_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("watched")
    train = population(3000, 0)
    pipeline = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), ["age", "income", "score"]),
                           ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"])]),
        LogisticRegression(max_iter=500))
    shipml.save_model(pipeline.fit(train, labels_of(train, 0)), "risk", sample=train, registry=root)
    return root


def serve(registry: Path, tmp_path: Path, monitoring: dict[str, Any], **overrides: Any) -> Server:
    return start(registry, tmp_path, [{"name": "risk", "models": ["risk"]}], monitoring=monitoring, **overrides)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict("records")  # type: ignore[return-value]


def post_rows(server: Server, frame: pd.DataFrame, per_request: int = 1,
              client: httpx.Client | None = None) -> list[dict[str, Any]]:
    """Predict the frame's rows, ``per_request`` rows per request; the answers, in order."""
    answers = []
    with client or httpx.Client(timeout=10) as http:
        for start_row in range(0, len(frame), per_request):
            body = {"instances": records(frame.iloc[start_row:start_row + per_request])}
            answer = http.post(server.url + "/models/risk/predict", json=body)
            assert answer.status_code == 200, answer.text
            answers.append(answer.json())
    return answers


def logged(log_dir: Path) -> pd.DataFrame:
    return read_log(log_dir, model="risk").to_pandas()


def test_the_log_holds_exactly_the_rows_served(watched_registry: Path, tmp_path: Path, http_backend: str) -> None:
    log_dir = tmp_path / "log"
    server = serve(watched_registry, tmp_path, {"log": {"dir": str(log_dir), "flush_interval_s": 0.2}},
                   http=http_backend)
    frame = population(60, 1)
    try:
        single = post_rows(server, frame.iloc[:30])
        multi = post_rows(server, frame.iloc[30:], per_request=10)
        with httpx.Client() as http:  # a refused request is not a served prediction
            bad = http.post(server.url + "/models/risk/predict", json={"instances": [{"age": "old"}]})
            assert bad.status_code == 422
            mine = http.post(server.url + "/models/risk/predict", json={"instances": records(frame.iloc[:1])},
                             headers={"x-request-id": "client-chosen-id"})
            assert mine.status_code == 200
    finally:
        assert server.stop() == 0  # a graceful stop writes out what is pending
    log = logged(log_dir)
    served = {a["request_id"]: a for a in [*single, *multi, mine.json()]}
    assert set(log["request_id"]) == set(served)
    assert len(log) == 61
    for request_id, group in log.groupby("request_id"):
        answer = served[str(request_id)]
        rows = group.sort_values("row")
        assert rows["row"].tolist() == list(range(len(answer["predictions"])))
        assert rows["prediction"].tolist() == answer["predictions"]
        assert np.allclose(rows[[f"proba.{c}" for c in answer["classes"]]].to_numpy(), answer["probabilities"])
        assert set(rows["endpoint"]) == {"risk"} and set(rows["variant"]) == {"stable"}
        assert set(rows["version"]) == {answer["version"]}
    by_id = log.set_index(["request_id", "row"]).sort_index()
    first = by_id.loc[(single[0]["request_id"], 0)]
    assert first["input.age"] == frame.iloc[0]["age"] and first["input.plan"] == frame.iloc[0]["plan"]
    assert (log["latency_ms"] > 0).all()


def test_kill_9_leaves_only_readable_parquet(watched_registry: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    server = serve(watched_registry, tmp_path, {"log": {"dir": str(log_dir), "flush_interval_s": 0.1}})
    frame = population(40, 2)
    stop = threading.Event()
    sent: list[str] = []

    def traffic() -> None:
        with httpx.Client(timeout=5) as http:
            deadline = time.monotonic() + 20
            while not stop.is_set() and time.monotonic() < deadline and len(sent) < 5000:
                try:
                    answer = http.post(server.url + "/models/risk/predict", json={"instances": records(frame)})
                except httpx.TransportError:
                    return
                if answer.status_code == 200:
                    sent.append(answer.json()["request_id"])

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while len(list(log_dir.rglob("*.parquet"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
    finally:
        stop.set()
        thread.join(30)
        server.stop()
    files = list(log_dir.rglob("*.parquet"))
    assert len(files) >= 3
    for path in files:
        table = pq.read_table(path)  # every file there is whole
        assert table.num_rows % 40 == 0
    log = logged(log_dir)
    assert set(log["request_id"]) <= set(sent)
    assert len(log) > 0


def test_an_unwritable_log_never_fails_a_prediction(watched_registry: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    server = serve(watched_registry, tmp_path, {"log": {"dir": str(blocker / "log"), "flush_interval_s": 0.1}})
    try:
        post_rows(server, population(30, 3), per_request=3)
        dropped = 0.0
        deadline = time.monotonic() + 10
        while dropped < 30 and time.monotonic() < deadline:
            text = httpx.get(server.url + "/metrics").text
            dropped = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                          if line.startswith("shipml_monitor_dropped_rows_total{") and "write_error" in line)
            time.sleep(0.1)
        assert dropped == 30
        assert httpx.get(server.url + "/readyz").status_code == 200
    finally:
        assert server.stop() == 0


class Receiver(http.server.BaseHTTPRequestHandler):
    events: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        type(self).events.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    events: ClassVar[list[dict[str, Any]]] = []
    handler = type("OwnReceiver", (Receiver,), {"events": events})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/alerts", events
    finally:
        httpd.shutdown()
        httpd.server_close()


def drift_of(server: Server) -> dict[str, Any]:
    answer = httpx.get(server.url + "/models/risk/drift")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_drift_names_the_shifted_feature_and_fires_its_alert(
        watched_registry: Path, tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]) -> None:
    url, events = webhook
    monitoring = {"enabled": True, "drift": {"window_s": 600, "min_rows": 100}, "evaluate_interval_s": 0.3,
                  "alerts": [{"name": "input-drift", "when": "psi > 0.25", "feature": "*"}],
                  "webhook": {"url": url, "retries": 2}}
    server = serve(watched_registry, tmp_path, monitoring)
    try:
        post_rows(server, population(400, 4), per_request=20)
        time.sleep(1.0)  # the monitor takes batches in every 0.05 s, evaluates every 0.3 s
        report = drift_of(server)
        assert report["rows"] == 400
        assert all(f["psi"] < 0.1 for f in report["features"]), report["features"]
        assert events == []
        post_rows(server, population(1200, 5, shift_income=60.0), per_request=20)
        deadline = time.monotonic() + 10
        while not events and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # the last batches reach the window
        report = drift_of(server)
        assert report["rows"] == 1600
        ranked = [f["name"] for f in report["features"]]
        assert ranked[0] == "income"
        income = report["features"][0]
        assert income["psi"] > 0.25 and income["out_of_range_share"] > 0.3
        assert all(f["psi"] < 0.1 for f in report["features"][1:]), report["features"]
        time.sleep(1.0)  # the other features had as many evaluations to fire, and must not have
        assert [(e["alert"], e["feature"], e["state"]) for e in events] == [("input-drift", "income", "firing")]
        assert events[0]["model"] == "risk" and events[0]["value"] > 0.25
        text = httpx.get(server.url + "/metrics").text
        assert 'shipml_drift_psi{feature="income",model="risk",version="1.0.0"}' in text
        active = [line for line in text.splitlines() if line.startswith("shipml_alert_active{")]
        assert len(active) == 1 and 'feature="income"' in active[0] and active[0].endswith(" 1.0")
    finally:
        assert server.stop() == 0


def test_feedback_gives_live_accuracy_equal_to_offline(watched_registry: Path, tmp_path: Path) -> None:
    server = serve(watched_registry, tmp_path, {"enabled": True, "performance": {"window_rows": 5000}})
    frame = population(300, 6)
    truth = labels_of(frame, 6)
    try:
        singles = post_rows(server, frame.iloc[:200])
        multis = post_rows(server, frame.iloc[200:], per_request=25)
        feedback = [{"request_id": a["request_id"], "target": int(truth[i])} for i, a in enumerate(singles)]
        feedback += [{"request_id": a["request_id"], "target": truth[200 + 25 * j: 225 + 25 * j].tolist()}
                     for j, a in enumerate(multis)]
        feedback.append({"request_id": "never-served", "target": 1})
        answer = httpx.post(server.url + "/models/risk/feedback", json=feedback)
        assert answer.status_code == 200, answer.text
        # one label per row: a list target labels each row of its request
        assert answer.json() == {"received": 301, "matched": 300, "unmatched": 1, "unmatched_ids": ["never-served"]}
        performance = httpx.get(server.url + "/models/risk/performance").json()
        predictions = [p for a in [*singles, *multis] for p in a["predictions"]]
        offline = float(np.mean(np.asarray(predictions) == truth))
        assert performance["labelled_rows"] == 300
        assert performance["realised"]["accuracy"] == pytest.approx(offline, abs=1e-12)
        assert 0.5 < performance["estimated"]["accuracy"] <= 1.0
        text = httpx.get(server.url + "/metrics").text
        assert f'shipml_model_performance{{metric="accuracy",model="risk",version="1.0.0"}} {offline}' in text
    finally:
        assert server.stop() == 0


@pytest.fixture(scope="module")
def feedback_server(watched_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fuzz")
    server = serve(watched_registry, tmp, {"log": {"dir": str(tmp / "log")}})
    try:
        yield server
    finally:
        server.stop()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=json_values)
def test_any_feedback_body_gets_a_clear_answer(feedback_server: Server, payload: Any) -> None:
    answer = httpx.post(feedback_server.url + "/models/risk/feedback", content=json.dumps(payload),
                        headers={"content-type": "application/json"})
    assert answer.status_code in (200, 400, 413, 422), answer.text
    assert "error" in answer.json() or "matched" in answer.json()


def test_workers_share_drift_and_join_feedback_across_processes(watched_registry: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    server = serve(watched_registry, tmp_path, {"log": {"dir": str(log_dir), "flush_interval_s": 0.1},
                                                "evaluate_interval_s": 0.2}, server={"workers": 2})
    frame = population(200, 7)
    try:
        answers = []
        for i in range(len(frame)):  # a new connection each time: the kernel spreads them over the workers
            answers += post_rows(server, frame.iloc[i:i + 1])
        pids = {a["request_id"].split("-")[0] for a in answers}
        assert len(pids) == 2, "one worker served every connection"
        time.sleep(1.0)
        for _ in range(4):  # whichever worker answers counts every worker's rows
            assert drift_of(server)["rows"] == 200
        truth = labels_of(frame, 7)
        feedback = [{"request_id": a["request_id"], "target": int(t)} for a, t in zip(answers, truth, strict=True)]
        answer = httpx.post(server.url + "/models/risk/feedback", json=feedback)
        assert answer.json()["matched"] == 200, answer.text
    finally:
        assert server.stop() == 0
    files = list(log_dir.rglob("*.parquet"))
    assert len({f.name.split("-")[2] for f in files}) == 2  # each worker writes its own files
    assert len(logged(log_dir)) == 200
