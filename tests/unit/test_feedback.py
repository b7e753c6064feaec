"""Feedback against real files: any JSON body is either labels or a 4xx naming the item and the rule; good labels
round-trip through the store and join to logged predictions (multi-row requests, last label wins, unmatched
counted, label types coerced to the classes)."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipml.errors import SchemaError, ShipmlError
from shipml.monitoring.feedback import (
    FeedbackLog,
    Label,
    join,
    labels_table,
    parse_feedback,
    read_feedback,
    read_labels,
)
from shipml.monitoring.log import LogBatch, PredictionLog
from shipml.monitoring.logread import find_predictions, read_log
from shipml.package.signature import ColumnSpec, OutputSpec, Signature
from tests.json_strategies import json_values


def test_parse_feedback_forms() -> None:
    one = parse_feedback({"request_id": "r1", "target": 1})
    assert one == [Label("r1", None, 1)]
    assert parse_feedback([{"request_id": "r1", "target": "yes", "row": 2}]) == [Label("r1", 2, "yes")]
    assert parse_feedback({"feedback": [{"request_id": "r1", "target": [0, 1.5, True]}]}) == [
        Label("r1", 0, 0), Label("r1", 1, 1.5), Label("r1", 2, True)]


@pytest.mark.parametrize(("payload", "index", "rule"), [
    ([{"request_id": "a", "target": 1}, {"target": 1}], 1, "missing"),
    ([{"request_id": 5, "target": 1}], 0, "type"),
    ([{"request_id": "", "target": 1}], 0, "format"),
    ([{"request_id": "x" * 129, "target": 1}], 0, "format"),
    ([{"request_id": "a\nb", "target": 1}], 0, "format"),
    ([{"request_id": "a", "target": None}], 0, "null"),
    ([{"request_id": "a", "target": math.nan}], 0, "finite"),
    ([{"request_id": "a", "target": {"x": 1}}], 0, "type"),
    ([{"request_id": "a", "target": [1, None]}], 0, "null"),
    ([{"request_id": "a", "target": [1], "row": 0}], 0, "list_with_row"),
    ([{"request_id": "a", "target": []}], 0, "empty"),
    ([{"request_id": "a", "target": 1, "row": -1}], 0, "row"),
    ([{"request_id": "a", "target": 1, "row": True}], 0, "row"),
    ([{"request_id": "a", "target": 1, "extra": 2}], 0, "unknown_field"),
    ([{"request_id": "a", "target": 1}, 7], 1, "type"),
    ([{"request_id": "a", "target": 10**400}], 0, "range"),
    ([{"request_id": "a", "target": "\ud800"}], 0, "text"),
])
def test_each_bad_item_is_named_with_its_index_and_rule(payload: Any, index: int, rule: str) -> None:
    with pytest.raises(SchemaError) as caught:
        parse_feedback(payload)
    assert caught.value.status == 422
    assert f"item {index}" in str(caught.value) and f"[{rule}]" in str(caught.value)
    assert any(p.row == index and p.rule == rule for p in caught.value.problems)


@pytest.mark.parametrize("payload", [None, 3, "text", [], {"feedback": {}}, {"feedback": [], "x": 1}])
def test_a_body_of_the_wrong_shape_is_a_bad_request(payload: Any) -> None:
    with pytest.raises(ShipmlError) as caught:
        parse_feedback(payload)
    assert caught.value.status == 400


def test_too_many_items_is_refused() -> None:
    with pytest.raises(ShipmlError) as caught:
        parse_feedback([{"request_id": "a", "target": 1}] * 11, max_items=10)
    assert caught.value.status == 413
    with pytest.raises(ShipmlError):
        parse_feedback([{"request_id": "a", "target": list(range(11))}], max_items=10)


def _is_label(v: Any) -> bool:
    if isinstance(v, bool):
        return True
    if isinstance(v, int):
        try:
            float(v)
        except OverflowError:
            return False
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, str):
        return 0 < len(v) <= 1000
    return False


def _valid_item(item: Any) -> bool:
    if not isinstance(item, dict) or set(item) - {"request_id", "target", "row"}:
        return False
    rid = item.get("request_id")
    if not isinstance(rid, str) or not 1 <= len(rid) <= 128 or not rid.isprintable():
        return False
    row = item.get("row")
    if row is not None and (not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < 2**31):
        return False
    if "target" not in item:
        return False
    target = item["target"]
    if isinstance(target, list):
        return row is None and bool(target) and all(map(_is_label, target))
    return _is_label(target)


items = st.one_of(
    json_values,
    st.fixed_dictionaries({"request_id": json_values, "target": json_values}),
    st.fixed_dictionaries({"request_id": st.text(max_size=5), "target": json_values},
                          optional={"row": json_values, "zz": json_values}),
)
bodies = st.one_of(json_values, items, st.lists(items, max_size=4),
                   st.fixed_dictionaries({"feedback": st.lists(items, max_size=4)}))


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_any_json_body_gives_labels_or_a_4xx_naming_the_item(payload: Any) -> None:
    listed = payload["feedback"] if isinstance(payload, dict) and "feedback" in payload else \
        payload if isinstance(payload, list) else [payload]
    try:
        labels = parse_feedback(payload)
    except ShipmlError as exc:
        error: ShipmlError | None = exc
    else:
        error = None
    if error is not None:
        assert 400 <= error.status < 500
        if isinstance(error, SchemaError):
            assert error.problems and all(p.row is not None and p.rule for p in error.problems)
            first = error.problems[0]
            assert f"item {first.row}" in str(error) and f"[{first.rule}]" in str(error)
            assert not _valid_item(listed[first.row])
        return
    assert all(_valid_item(i) for i in listed)
    assert all(isinstance(label, Label) and label.request_id for label in labels)


# -- round trip through the store and the join ----------------------------------------------------------------

CLASSES = st.one_of(
    st.lists(st.integers(-5, 5), min_size=2, max_size=4, unique=True),
    st.lists(st.text(min_size=1, max_size=4).filter(lambda t: t.strip() == t and t.isprintable()), min_size=2,
             max_size=4, unique=True),
    st.just([False, True]),
)


def log_classifier(directory: str | Path, classes: list[Any], predictions: list[Any], request_ids: list[str],
                   sizes: list[int]) -> None:
    n = sum(sizes)
    sig = Signature(inputs=[ColumnSpec(name="x", dtype="float", pandas_dtype="float64")], input_kind="dataframe",
                    outputs=OutputSpec(task="classification", classes=classes, probabilities=True))
    spans, at = [], 0
    for size in sizes:
        spans.append((at, at + size))
        at += size
    proba = np.tile(np.linspace(0.1, 1.0, len(classes)) / np.linspace(0.1, 1.0, len(classes)).sum(), (n, 1))
    log = PredictionLog(directory, flush_interval_s=0.05)
    log.submit(LogBatch(time.time(), "m", "1.0.0", {"x": np.arange(n, dtype=np.float64)}, sig,
                        np.array(predictions, dtype=object if isinstance(classes[0], str) else None), proba, classes,
                        request_ids, ["m"] * len(sizes), ["stable"] * len(sizes), spans, [0.001] * len(sizes)))
    log.close()


def spelled(value: Any, form: str) -> Any:
    """A class label as a client might send it: as it is, as text, or (numbers) as a float."""
    if form == "text":
        return ("true" if value else "false") if isinstance(value, bool) else str(value)
    if form == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(st.data())
def test_good_labels_round_trip_and_join_to_their_predictions(data: st.DataObject) -> None:
    classes = data.draw(CLASSES)
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=5))
    ids = data.draw(st.lists(st.text(min_size=1, max_size=8).filter(str.isprintable), min_size=len(sizes),
                             max_size=len(sizes), unique=True))
    n = sum(sizes)
    predictions = data.draw(st.lists(st.sampled_from(classes), min_size=n, max_size=n))
    truth = data.draw(st.lists(st.sampled_from(classes), min_size=n, max_size=n))
    form = data.draw(st.sampled_from(["as_is", "text", "float"]))
    payload: list[dict[str, Any]] = []
    at = 0
    for rid, size in zip(ids, sizes, strict=True):
        mine = [spelled(v, form) for v in truth[at:at + size]]
        if data.draw(st.booleans()):
            payload.append({"request_id": rid, "target": mine})
        else:
            payload += [{"request_id": rid, "target": v, "row": i} for i, v in enumerate(mine)]
        at += size
    payload.append({"request_id": "never-logged", "target": spelled(classes[0], form)})
    with tempfile.TemporaryDirectory() as tmp:
        log_classifier(tmp, classes, predictions, ids, sizes)
        labels = parse_feedback({"feedback": payload})
        FeedbackLog(tmp).append("m", labels, time.time())
        stored = read_feedback(tmp, "m")
        assert stored.num_rows == len(labels)
        assert stored.column("request_id").to_pylist() == [label.request_id for label in labels]
        joined = join(find_predictions(tmp, "m", [*ids, "never-logged"]), stored)
        assert joined.matched == n and joined.unmatched == 1 and joined.invalid == 0
        order = {(rid, i): j for j, (rid, i) in enumerate(
            (rid, i) for rid, size in zip(ids, sizes, strict=True) for i in range(size))}
        got = sorted(zip(joined.request_ids, joined.rows, joined.targets, joined.predictions, strict=True),
                     key=lambda t: order[(t[0], t[1])])
        assert [g[2] for g in got] == truth
        assert joined.targets.dtype == joined.predictions.dtype
        assert [g[3] for g in got] == predictions
        assert joined.probabilities is not None and joined.probabilities.shape == (n, len(classes))
        assert joined.classes == classes and joined.task == "classification"


def test_a_multi_row_request_the_last_label_wins_and_types_are_coerced(tmp_path: Path) -> None:
    log_classifier(tmp_path, [0, 1], [0, 1, 1, 0, 1], ["a", "b"], [3, 2])
    fb = FeedbackLog(tmp_path)
    fb.append("m", parse_feedback([{"request_id": "a", "target": [1, 1, 1]}]), 1000.0)
    fb.append("m", parse_feedback([{"request_id": "a", "target": "0", "row": 1},  # later: wins for row 1
                                   {"request_id": "b", "target": True},  # the whole request, as a boolean
                                   {"request_id": "zz", "target": 1},  # never logged
                                   {"request_id": "a", "target": 1, "row": 9}]), 2000.0)  # no such row
    fb.append("m", parse_feedback([{"request_id": "b", "target": 0.0, "row": 0}]), 3000.0)
    joined = join(read_log(tmp_path), read_feedback(tmp_path, "m"))
    got = {(r, int(i)): int(t) for r, i, t in zip(joined.request_ids, joined.rows, joined.targets, strict=True)}
    assert got == {("a", 0): 1, ("a", 1): 0, ("a", 2): 1, ("b", 0): 0, ("b", 1): 1}
    assert joined.unmatched == 2
    assert joined.targets.dtype.kind == "i"
    # a whole-request label received after a row label replaces it
    fb.append("m", parse_feedback([{"request_id": "a", "target": 0}]), 4000.0)
    again = join(read_log(tmp_path), read_feedback(tmp_path, "m"))
    assert {(r, int(i)): int(t) for r, i, t in zip(again.request_ids, again.rows, again.targets, strict=True)
            if r == "a"} == {("a", 0): 0, ("a", 1): 0, ("a", 2): 0}
    assert len(read_feedback(tmp_path, "m", since=3500.0)) == 1


def test_string_and_boolean_classes_match_by_value(tmp_path: Path) -> None:
    log_classifier(tmp_path / "s", ["no", "yes"], ["yes", "no"], ["a", "b"], [1, 1])
    FeedbackLog(tmp_path / "s").append("m", parse_feedback([{"request_id": "a", "target": "yes"},
                                                            {"request_id": "b", "target": "maybe"}]), 1.0)
    joined = join(read_log(tmp_path / "s"), read_feedback(tmp_path / "s", "m"))
    assert sorted(joined.targets.tolist()) == ["maybe", "yes"]  # an unknown class is a wrong answer, kept
    log_classifier(tmp_path / "b", [False, True], [True, False], ["a", "b"], [1, 1])
    FeedbackLog(tmp_path / "b").append("m", parse_feedback([{"request_id": "a", "target": True},
                                                            {"request_id": "b", "target": "false"}]), 1.0)
    joined = join(read_log(tmp_path / "b"), read_feedback(tmp_path / "b", "m"))
    assert dict(zip(joined.request_ids, joined.targets.tolist(), strict=True)) == {"a": True, "b": False}
    # an integer classifier cannot take "maybe": counted as invalid, not matched
    log_classifier(tmp_path / "i", [0, 1], [1, 0], ["a", "b"], [1, 1])
    FeedbackLog(tmp_path / "i").append("m", parse_feedback([{"request_id": "a", "target": "1"},
                                                            {"request_id": "b", "target": "maybe"}]), 1.0)
    joined = join(read_log(tmp_path / "i"), read_feedback(tmp_path / "i", "m"))
    assert joined.targets.tolist() == [1] and joined.invalid == 1


def test_regression_labels_join_as_numbers(tmp_path: Path) -> None:
    sig = Signature(inputs=[ColumnSpec(name="x", dtype="float", pandas_dtype="float64")], input_kind="dataframe",
                    outputs=OutputSpec(task="regression"))
    log = PredictionLog(tmp_path, flush_interval_s=0.05)
    log.submit(LogBatch(time.time(), "m", "1.0.0", {"x": np.zeros(3)}, sig, np.array([1.5, 2.5, 3.5]), None, None,
                        ["r"], ["m"], ["stable"], [(0, 3)], [0.001]))
    log.close()
    FeedbackLog(tmp_path).append("m", parse_feedback({"request_id": "r", "target": [1, "2.5", 4.0]}), 1.0)
    joined = join(read_log(tmp_path), read_feedback(tmp_path, "m"))
    assert joined.task == "regression" and joined.probabilities is None
    assert joined.targets.tolist() == [1.0, 2.5, 4.0] and joined.predictions.tolist() == [1.5, 2.5, 3.5]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_read_labels_from_files(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame({"request_id": ["a", "a", "b"], "row": [0, 1, None], "target": ["1", "0", "yes"]})
    path = tmp_path / f"labels{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.astype({"row": "Int64"}).to_parquet(path)
    table = read_labels(path)
    assert table.column("request_id").to_pylist() == ["a", "a", "b"]
    assert table.column("row").to_pylist() == [0, 1, None]
    assert table.column("target").to_pylist() == ["1", "0", "yes"]
    numbers = table.column("target_num").to_pylist()
    assert numbers[:2] == [1.0, 0.0] and math.isnan(numbers[2])


def test_read_labels_names_what_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,target\na,1\n")
    with pytest.raises(SchemaError, match="no column 'request_id'"):
        read_labels(bad)
    bad.write_text("request_id,target\na,1\n,0\n")
    with pytest.raises(SchemaError, match=r"request_id.*data rows 1"):
        read_labels(bad)
    bad.write_text("request_id,target,row\na,1,x\n")
    with pytest.raises(SchemaError, match="'row'"):
        read_labels(bad)
    with pytest.raises(SchemaError, match=r"name it \.csv or \.parquet"):
        read_labels(tmp_path / "labels.txt")
    numbers = tmp_path / "n.parquet"
    pa.parquet.write_table(pa.table({"request_id": ["a"], "target": [math.inf]}), numbers)  # type: ignore[attr-defined]
    with pytest.raises(SchemaError, match="finite"):
        read_labels(numbers)


def test_labels_table_keeps_each_label_type() -> None:
    table = labels_table([Label("a", None, True), Label("a", 0, 3), Label("b", 1, 2.5), Label("c", None, "x")], 5.0)
    assert table.column("target").to_pylist() == ["true", "3", "2.5", "x"]
    assert table.column("target_kind").to_pylist() == ["bool", "int", "float", "str"]
    assert table.column("target_num").to_pylist()[:3] == [1.0, 3.0, 2.5]
