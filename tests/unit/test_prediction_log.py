"""The prediction log against real files: every submitted row comes back with its request id, row and types;
drops are counted (queue full, write errors) and never raise; temporary and damaged files are skipped."""

from __future__ import annotations

import datetime as dt
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipml.monitoring.log import LogBatch, PredictionLog, class_text, part_name
from shipml.monitoring.logread import find_predictions, log_files, log_models, read_log
from shipml.package.signature import ColumnSpec, OutputSpec, Signature

DTYPES = ["int", "float", "string", "bool", "datetime"]
PANDAS = {"int": "int64", "float": "float64", "string": "object", "bool": "bool", "datetime": "datetime64[ns]"}
MOMENTS = st.datetimes(min_value=dt.datetime(1700, 1, 1), max_value=dt.datetime(2250, 1, 1))


def signature(columns: list[tuple[str, str]], task: str = "classification", classes: list[Any] | None = None,
              proba: bool = False) -> Signature:
    return Signature(
        inputs=[ColumnSpec(name=n, dtype=d, pandas_dtype=PANDAS[d], nullable=True) for n, d in columns],  # type: ignore[arg-type]
        input_kind="dataframe",
        outputs=OutputSpec(task=task, classes=classes, probabilities=proba),  # type: ignore[arg-type]
    )


def cell(dtype: str) -> st.SearchStrategy[Any]:
    """A checked-table value of one input (None: null)."""
    if dtype == "int":
        return st.one_of(st.none(), st.integers(-(2**53), 2**53))
    if dtype == "float":
        return st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
    if dtype == "string":
        return st.one_of(st.none(), st.text(max_size=8))
    if dtype == "bool":
        return st.booleans()
    return st.one_of(st.none(), MOMENTS)


def column(dtype: str, values: list[Any]) -> np.ndarray:
    """Values as ``check`` makes them (see package/validation.py)."""
    if dtype in ("int", "float"):
        return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    if dtype == "string":
        return np.array(values, dtype=object)
    if dtype == "bool":
        return np.array(values, dtype=bool)
    return np.array([np.datetime64("NaT") if v is None else np.datetime64(v, "ns") for v in values],
                    dtype="datetime64[ns]")


CLASS_SETS = st.one_of(
    st.lists(st.integers(-1000, 1000), min_size=2, max_size=4, unique=True),
    st.lists(st.text(min_size=1, max_size=5), min_size=2, max_size=4, unique=True),
    st.just([False, True]),
    st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.5, -3.0]), min_size=2, max_size=4, unique=True),
)


@st.composite
def logged_batches(draw: st.DrawFn) -> tuple[Signature, list[LogBatch], dict[tuple[str, int], dict[str, Any]]]:
    names = draw(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=4, unique=True))
    columns = [(n, draw(st.sampled_from(DTYPES))) for n in names]
    task = draw(st.sampled_from(["classification", "regression"]))
    classes = draw(CLASS_SETS) if task == "classification" else None
    proba = task == "classification" and draw(st.booleans())
    sig = signature(columns, task, classes, proba)
    ids = iter(draw(st.lists(st.text(min_size=1, max_size=10), min_size=12, max_size=12, unique=True)))
    expected: dict[tuple[str, int], dict[str, Any]] = {}
    batches = []
    for b in range(draw(st.integers(1, 3))):
        sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
        n = sum(sizes)
        values = {name: draw(st.lists(cell(d), min_size=n, max_size=n)) for name, d in columns}
        if classes is not None:
            predictions = draw(st.lists(st.sampled_from(classes), min_size=n, max_size=n))
            pred_array = np.array(predictions, dtype=object if isinstance(classes[0], str) else None)
        else:
            predictions = draw(st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n))
            pred_array = np.array(predictions, dtype=np.float64)
        probabilities = np.random.default_rng(b).dirichlet(np.ones(len(classes)), size=n) \
            if proba and classes else None
        request_ids = [next(ids) for _ in sizes]
        spans, start = [], 0
        for size in sizes:
            spans.append((start, start + size))
            start += size
        latency = [0.001 * (j + 1) for j in range(len(sizes))]
        arrays = draw(st.booleans())  # the monitor's forms: spans as an (n, 2) array, ids a tuple, latency an array
        batches.append(LogBatch(
            time=1_700_000_000.0 + b, model="churn", version="1.2.0",
            inputs={name: column(d, values[name]) for name, d in columns}, signature=sig,
            predictions=pred_array, probabilities=probabilities, classes=classes,
            request_ids=tuple(request_ids) if arrays else request_ids,
            endpoints=[f"ep{j}" for j in range(len(sizes))], variants=["stable"] * len(sizes),
            spans=np.array(spans, dtype=np.int64) if arrays else spans,
            latency_s=np.array(latency) if arrays else latency))
        for j, (lo, hi) in enumerate(spans):
            for i in range(lo, hi):
                expected[(request_ids[j], i - lo)] = {
                    "inputs": {name: values[name][i] for name, _ in columns}, "prediction": predictions[i],
                    "proba": None if probabilities is None else probabilities[i].tolist(),
                    "endpoint": f"ep{j}", "latency_ms": latency[j] * 1000, "time": 1_700_000_000.0 + b,
                }
    return sig, batches, expected


def same_input(dtype: str, got: Any, want: Any) -> bool:
    if dtype in ("int", "float"):
        if want is None or (isinstance(want, float) and math.isnan(want)):
            return got is None  # null and NaN are both null in the checked table, and in the log
        return bool(got == float(want))
    if dtype == "datetime":
        if want is None:
            return got is None
        return bool(got.replace(tzinfo=None) == want) if isinstance(got, dt.datetime) else \
            bool(np.datetime64(got.value, "ns") == np.datetime64(want, "ns"))
    return bool(got == want)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logged_batches())
def test_every_submitted_row_comes_back_with_its_request_id_row_and_types(
        case: tuple[Signature, list[LogBatch], dict[tuple[str, int], dict[str, Any]]]) -> None:
    sig, batches, expected = case
    with tempfile.TemporaryDirectory() as tmp:
        log = PredictionLog(tmp, flush_interval_s=0.05)
        assert all(log.submit(b) for b in batches)
        assert log.flush(timeout_s=30)
        log.close()
        table = read_log(tmp)
        assert table.num_rows == len(expected)
        dtypes = {c.name: c.dtype for c in sig.inputs}
        expected_types = {"int": pa.float64(), "float": pa.float64(), "string": pa.string(), "bool": pa.bool_(),
                          "datetime": pa.timestamp("ns", tz="UTC")}
        for name, kind in dtypes.items():
            assert table.schema.field(f"input.{name}").type == expected_types[kind]
        assert table.schema.field("row").type == pa.int32()
        assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
        classes = sig.outputs.classes
        if classes is not None:
            kind = table.schema.field("prediction").type
            want = {int: pa.types.is_integer, str: pa.types.is_string, bool: pa.types.is_boolean,
                    float: pa.types.is_floating}[type(classes[0])]
            assert want(kind), kind
        seen = set()
        for record in table.to_pylist():
            key = (record["request_id"], record["row"])
            assert key not in seen
            seen.add(key)
            want_row = expected[key]
            for name, kind in dtypes.items():
                assert same_input(kind, record[f"input.{name}"], want_row["inputs"][name]), (name, record)
            assert record["prediction"] == want_row["prediction"]
            assert type(record["prediction"]) is type(want_row["prediction"])
            assert record["endpoint"] == want_row["endpoint"] and record["variant"] == "stable"
            assert record["model"] == "churn" and record["version"] == "1.2.0"
            assert record["latency_ms"] == pytest.approx(want_row["latency_ms"])
            assert record["time"].timestamp() == pytest.approx(want_row["time"])
            if want_row["proba"] is not None:
                got = [record[f"proba.{class_text(c)}"] for c in classes or []]
                assert got == pytest.approx(want_row["proba"])
            else:
                assert not any(c.startswith("proba.") for c in table.column_names)
        assert seen == set(expected)
        files = log_files(tmp)
        assert files and all(f.name.startswith("part-") for f in files)
        meta = pq.read_schema(files[0]).metadata
        assert Signature.model_validate_json(meta[b"shipml.signature"]) == sig
        assert meta[b"shipml.model"] == b"churn" and meta[b"shipml.version"] == b"1.2.0"
        assert log_models(tmp) == {"churn": ["1.2.0"]}


def simple_batch(request_id: str, n: int, t: float | None = None, model: str = "m",
                 version: str = "1.0.0") -> LogBatch:
    sig = signature([("x", "float")], "regression")
    return LogBatch(time=time.time() if t is None else t, model=model, version=version,
                    inputs={"x": np.arange(n, dtype=np.float64)}, signature=sig,
                    predictions=np.arange(n, dtype=np.float64) * 2, probabilities=None, classes=None,
                    request_ids=[request_id], endpoints=["m"], variants=["stable"], spans=[(0, n)],
                    latency_s=[0.001])


class Drops:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, str]] = []

    def __call__(self, model: str, version: str, rows: int, reason: str) -> None:
        self.calls.append((model, version, rows, reason))

    def rows(self, reason: str) -> int:
        return sum(c[2] for c in self.calls if c[3] == reason)


def test_a_full_queue_drops_the_batch_and_counts_it_without_blocking(tmp_path: Path) -> None:
    drops = Drops()
    log = PredictionLog(tmp_path, flush_interval_s=3600, max_file_rows=10_000, max_queue_rows=25,
                        on_dropped=drops)
    assert log.submit(simple_batch("a", 10)) and log.submit(simple_batch("b", 10))
    assert not log.submit(simple_batch("c", 10))  # 30 > 25
    assert log.submit(simple_batch("d", 5))  # exactly 25
    assert drops.calls == [("m", "1.0.0", 10, "queue_full")]
    assert log.queued_rows == 25
    assert log.flush(timeout_s=30)
    log.close()
    assert sorted(set(read_log(tmp_path).column("request_id").to_pylist())) == ["a", "b", "d"]


@pytest.mark.parametrize("arrays", [False, True])
def test_sampled_spans_log_only_their_rows(tmp_path: Path, arrays: bool) -> None:
    sig = signature([("x", "float")], "regression")
    spans = [(0, 2), (4, 6)]
    batch = LogBatch(time=time.time(), model="m", version="1.0.0", inputs={"x": np.arange(6.0)}, signature=sig,
                     predictions=np.arange(6.0) * 10, probabilities=None, classes=None, request_ids=["a", "c"],
                     endpoints=["m", "m"], variants=["stable", "canary"],
                     spans=np.array(spans) if arrays else spans, latency_s=[0.1, 0.2])
    assert batch.n_rows == 4
    log = PredictionLog(tmp_path, flush_interval_s=0.05)
    log.submit(batch)
    log.close()
    rows = read_log(tmp_path, columns=["request_id", "row", "input.x", "prediction", "variant"]).to_pylist()
    assert [(r["request_id"], r["row"], r["input.x"], r["prediction"], r["variant"]) for r in rows] == [
        ("a", 0, 0.0, 0.0, "stable"), ("a", 1, 1.0, 10.0, "stable"), ("c", 0, 4.0, 40.0, "canary"),
        ("c", 1, 5.0, 50.0, "canary")]


def test_an_unwritable_directory_drops_with_write_error_then_recovers(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The tests run as root (chmod does not stop root): the log directory is under a regular file, where no
    directory can be made. Later, with a real directory there, batches are written again."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    directory = blocker / "log"
    drops = Drops()
    written: list[int] = []
    log = PredictionLog(directory, flush_interval_s=0.05, on_dropped=drops,
                        on_written=lambda m, v, n: written.append(n))
    with caplog.at_level(logging.ERROR, logger="shipml.monitoring"):
        for i in range(5):
            assert log.submit(simple_batch(f"lost{i}", 3))  # never raises, never blocks
            assert log.flush(timeout_s=30)
    assert drops.rows("write_error") == 15 and not written
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1  # one line, not five
    assert log._thread.is_alive()
    blocker.unlink()
    blocker.mkdir()
    assert log.submit(simple_batch("kept", 4))
    assert log.flush(timeout_s=30)
    log.close()
    assert written == [4]
    assert read_log(directory).column("request_id").to_pylist() == ["kept"] * 4


def test_temp_files_and_a_damaged_file_are_skipped_with_a_warning(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    log = PredictionLog(tmp_path, flush_interval_s=0.05)
    log.submit(simple_batch("good", 3))
    log.close()
    folder = log_files(tmp_path)[0].parent
    (folder / f".{part_name()}.tmp").write_bytes(b"PAR1 half a file")
    damaged = folder / part_name()
    damaged.write_bytes(b"PAR1 this is not parquet PAR1")
    (folder / "notes.txt").write_text("not a log file")
    with caplog.at_level(logging.WARNING, logger="shipml.monitoring"):
        table = read_log(tmp_path)
        found = find_predictions(tmp_path, "m", ["good"])
    assert table.column("request_id").to_pylist() == ["good"] * 3
    assert found.num_rows == 3
    warned = [r.getMessage() for r in caplog.records]
    assert any(damaged.name in m for m in warned), warned
    assert not any(".tmp" in m for m in warned)


def test_read_log_filters_by_model_version_and_time(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_interval_s=0.05)
    log.submit(simple_batch("old", 2, t=1_700_000_000.0, version="1.0.0"))
    log.submit(simple_batch("new", 2, t=1_700_000_100.0, version="1.1.0"))
    log.submit(simple_batch("other", 1, t=1_700_000_050.0, model="n"))
    log.close()
    assert log_models(tmp_path) == {"m": ["1.0.0", "1.1.0"], "n": ["1.0.0"]}
    ids = lambda t: t.column("request_id").to_pylist()  # noqa: E731
    assert ids(read_log(tmp_path)) == ["old", "old", "other", "new", "new"]
    assert ids(read_log(tmp_path, model="m", version="1.1.0")) == ["new", "new"]
    assert ids(read_log(tmp_path, since=1_700_000_050.0)) == ["other", "new", "new"]
    assert ids(read_log(tmp_path, until=dt.datetime.fromtimestamp(1_700_000_050, dt.UTC))) == ["old", "old"]
    assert read_log(tmp_path / "nothing").num_rows == 0
    assert read_log(tmp_path, columns=["request_id", "missing"]).column_names == ["request_id", "missing"]
    assert find_predictions(tmp_path, "m", ["new", "absent"]).column("request_id").to_pylist() == ["new"] * 2


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30), st.integers(1, 100))
def test_queued_rows_never_exceed_the_bound(sizes: list[int], bound: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        drops = Drops()
        log = PredictionLog(tmp, flush_interval_s=3600, max_file_rows=10**6, max_queue_rows=bound,
                            on_dropped=drops)
        accepted = 0
        for i, n in enumerate(sizes):
            if log.submit(simple_batch(str(i), n)):
                accepted += n
            assert log.queued_rows <= bound
        assert accepted + drops.rows("queue_full") == sum(sizes)
        log.close()
        assert read_log(tmp).num_rows == accepted


def test_names_that_are_not_plain_cannot_leave_the_directory(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "log", flush_interval_s=0.05)
    log.submit(simple_batch("x", 1, model="../../escape", version="1.0.0"))
    log.close()
    assert not (tmp_path / "escape").exists()
    files = list((tmp_path / "log").rglob("*.parquet"))
    assert len(files) == 1 and files[0].is_relative_to(tmp_path / "log")
    assert read_log(tmp_path / "log").column("model").to_pylist() == ["../../escape"]


def test_submit_after_close_is_refused_not_raised(tmp_path: Path) -> None:
    drops = Drops()
    log = PredictionLog(tmp_path, flush_interval_s=0.05, on_dropped=drops)
    log.close()
    assert log.submit(simple_batch("late", 2)) is False
    assert drops.calls == [("m", "1.0.0", 2, "closed")]
