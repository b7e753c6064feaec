"""The monitor's feedback index (monitor.py): a tick's predictions kept as one chunk, looked up by request id
only when feedback comes; the newest prediction of an id wins; the newest ``index_rows`` rows are kept; a
request the model failed is not held; a batch given whole and one given per request hold the same."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shipml
from shipml.errors import InferenceError
from shipml.monitoring.feedback import Label
from shipml.monitoring.monitor import Monitor
from shipml.monitoring.spec import MonitoringSpec
from shipml.package.loaded import LoadedModel
from shipml.package.validation import Table
from shipml.protocol.dataplane import Request
from tests.unit.registry_support import tiny_model


class Counters:
    def __init__(self) -> None:
        self.feedbacks: list[tuple[str, int]] = []

    def logged(self, model: str, version: str, rows: int) -> None: ...

    def dropped(self, model: str, version: str, rows: int, reason: str) -> None: ...

    def feedback(self, model: str, version: str, outcome: str, rows: int) -> None:
        self.feedbacks.append((outcome, rows))

    def webhook(self, outcome: str) -> None: ...


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    reg = shipml.Registry(tmp_path_factory.mktemp("index"))
    fitted, X = tiny_model(3)
    shipml.save_model(fitted, "m", sample=X, registry=reg)
    return reg.load("m")


def monitor(model: LoadedModel, index_rows: int = 100_000) -> Monitor:
    spec = MonitoringSpec.model_validate({"enabled": True, "performance": {"index_rows": index_rows}})
    mon = Monitor(spec, Counters())
    mon.watch(model)
    return mon


def serve(mon: Monitor, model: LoadedModel, requests: list[tuple[str | None, int]], *, whole: bool = True,
          fail: set[str] = frozenset()) -> dict[str | None, np.ndarray]:  # type: ignore[assignment]
    """One batch of ``requests`` (id, rows) predicted and handed to the monitor as the dataplane does; each id's
    predicted labels."""
    rng = np.random.default_rng(len(requests))
    total = sum(rows for _, rows in requests)
    table = Table.from_matrix(rng.normal(size=(total, 3)), model.signature.names)
    out = model.infer(table, proba=True)
    spans, start = [], 0
    for _, rows in requests:
        spans.append((start, start + rows))
        start += rows
    reqs = [Request(None, rows, tag=None if rid is None else (rid, "e", "stable", time.monotonic()))
            for rid, rows in requests]
    results: list[Any] = [InferenceError("no") if rid in fail else (out.predictions[a:b], out.probabilities[a:b])
                          for (rid, _), (a, b) in zip(requests, spans, strict=True)]
    given = (out.predictions, out.probabilities) if whole and not fail else None
    mon.observe(model, table, spans, reqs, results, given)
    mon.catch_up()
    return {rid: out.predictions[a:b] for (rid, _), (a, b) in zip(requests, spans, strict=True)}


def matched(mon: Monitor, model: LoadedModel, labels: dict[str, Any]) -> tuple[int, list[str]]:
    result = mon.feedback([Label(rid, None, target) for rid, target in labels.items()], [model])
    return result.matched, result.unmatched_ids


def test_feedback_finds_predictions_across_ticks_and_the_newest_wins(model: LoadedModel) -> None:
    mon = monitor(model)
    first = serve(mon, model, [("a", 1), ("b", 2), (None, 1)])
    second = serve(mon, model, [("c", 1), ("a", 3)], whole=False)
    assert len(mon._chunks) == 2
    found = mon._find("a")
    assert found is not None and found[2] - found[1] == 3  # the newest (3 rows), not the first (1 row)
    assert mon._find("b") is not None and mon._find("zzz") is None
    assert mon._find("") is None  # the untagged request is not findable, not even by an empty id
    labels = {"a": int(second["a"][0]), "b": int(first["b"][0]), "c": int(second["c"][0]), "zzz": 0}
    assert matched(mon, model, labels) == (3, ["zzz"])
    mon.close()


def test_the_newest_index_rows_are_kept_and_older_chunks_let_go(model: LoadedModel) -> None:
    mon = monitor(model, index_rows=5)
    serve(mon, model, [("old", 4)])
    serve(mon, model, [("mid", 3)])
    serve(mon, model, [("new", 2)])
    assert [list(c.ids) for c in mon._chunks] == [["mid"], ["new"]] and mon._index_rows == 5
    assert mon._find("old") is None and mon._find("mid") is not None
    serve(mon, model, [("huge", 50)])  # larger than the bound alone: still held, the older let go
    assert [list(c.ids) for c in mon._chunks] == [["huge"]]
    mon.close()


def test_a_failed_request_is_not_held_and_the_others_are(model: LoadedModel) -> None:
    mon = monitor(model)
    served = serve(mon, model, [("ok", 2), ("bad", 1), ("ok2", 1)], fail={"bad"})
    assert mon._find("bad") is None
    chunk, lo, hi = mon._find("ok2") or (None, 0, 0)
    assert chunk is not None and list(chunk.predictions[lo:hi]) == list(served["ok2"])
    chunk, lo, hi = mon._find("ok") or (None, 0, 0)
    assert chunk is not None and list(chunk.predictions[lo:hi]) == list(served["ok"])
    mon.close()


def test_whole_and_per_request_batches_hold_the_same(model: LoadedModel, tmp_path: Path) -> None:
    a, b = monitor(model), monitor(model)
    requests = [(f"r{i}", 1 + i % 3) for i in range(20)]
    serve(a, model, requests, whole=True)
    serve(b, model, requests, whole=False)
    for rid, _ in requests:
        ca, lo, hi = a._find(rid) or (None, 0, 0)
        cb, lo2, hi2 = b._find(rid) or (None, 0, 0)
        assert ca is not None and cb is not None and (lo, hi) == (lo2, hi2)
        assert np.array_equal(ca.predictions[lo:hi], cb.predictions[lo2:hi2])
        assert ca.probabilities is not None and cb.probabilities is not None
        assert np.array_equal(ca.probabilities[lo:hi], cb.probabilities[lo2:hi2])
    a.close()
    b.close()
