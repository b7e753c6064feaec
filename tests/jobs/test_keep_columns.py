"""``--keep-columns`` keeps each column's type (issue 12, item 17): an integer id stays an integer, in Parquet and
CSV output, from Parquet and CSV input, over any number of parts.

Hypothesis draws the kept column's type (int, float with NaN, bool, string, datetime) and values, the input and
output formats, and the part size (so that parts may disagree on what their slice of a CSV column looks like).
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shipml
from shipml.jobs import predict_file
from tests.jobs.conftest import Saved, mixed_frame

FEATURES = ["x0", "x1", "x2", "x3"]
KINDS = ["int", "int_null", "float_nan", "bool", "string", "datetime"]
NULL_WORDS = {"na", "nan", "null", "n/a", "none", "<na>", "true", "false", "#n/a", "-nan", "-na", "nat"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> shipml.Registry:
    reg = shipml.Registry(tmp_path_factory.mktemp("keep") / "registry")
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(300, 4)), columns=FEATURES)
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1},
                        lgb.Dataset(X, (X["x0"] > 0).astype(int)), 5)
    reg.save(booster, "m", sample=X)
    return reg


def values(kind: str, n: int) -> st.SearchStrategy[list[Any]]:
    if kind == "int":
        return st.lists(st.integers(-(2**53), 2**53), min_size=n, max_size=n)
    if kind == "int_null":  # an id column with missing values: some parts may hold only empty cells (the first
        # value is a number: a CSV column of empty cells only says nothing of its type)
        ints = st.integers(-(2**53), 2**53)
        return st.tuples(ints, st.lists(st.one_of(st.none(), ints), min_size=n - 1, max_size=n - 1)).map(
            lambda v: [v[0], *v[1]])
    if kind == "float_nan":
        floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.just(math.nan))
        return st.lists(floats, min_size=n, max_size=n).map(lambda v: [math.nan, *v[1:]])
    if kind == "bool":
        return st.lists(st.booleans(), min_size=n, max_size=n)
    if kind == "string":  # ids such as "r007", "007" or 'a, "b"'; one starts with a letter so CSV readers see text
        text = st.from_regex(r'[A-Za-z][A-Za-z0-9 ,"_-]{0,8}|0[0-9]{1,6}', fullmatch=True).filter(
            lambda s: s.strip().lower() not in NULL_WORDS and s == s.strip())
        return st.lists(text, min_size=n, max_size=n).map(lambda v: ["r" + v[0], *v[1:]])
    return st.lists(st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)),
                    min_size=n, max_size=n)


def frame_with(kind: str, kept: list[Any]) -> pd.DataFrame:
    n = len(kept)
    rng = np.random.default_rng(n)
    frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=FEATURES)
    if kind == "datetime":
        frame.insert(0, "k", pd.Series(kept, dtype="datetime64[us]"))
    elif kind == "int_null":
        frame.insert(0, "k", pd.Series(kept, dtype="Int64"))
    elif kind == "float_nan":
        frame.insert(0, "k", pd.Series(kept, dtype="float64"))
    else:
        frame.insert(0, "k", kept)
    return frame


def same(got: list[Any], want: list[Any]) -> bool:
    def norm(v: Any) -> Any:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return None
        if isinstance(v, pd.Timestamp):
            return v.to_pydatetime()
        return v

    return [norm(v) for v in got] == [norm(v) for v in want]


EXPECTED_ARROW = {"int": pa.types.is_int64, "int_null": pa.types.is_int64, "float_nan": pa.types.is_float64,
                  "bool": pa.types.is_boolean,
                  "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
                  "datetime": pa.types.is_timestamp}


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_kept_column_keeps_its_type(registry: shipml.Registry, tmp_path_factory: pytest.TempPathFactory,
                                      data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(KINDS), label="kind")
    n = data.draw(st.integers(1, 30), label="rows")
    kept = data.draw(values(kind, n), label="values")
    in_fmt = data.draw(st.sampled_from(["csv", "parquet"]), label="input")
    out_fmt = data.draw(st.sampled_from(["csv", "parquet"]), label="output")
    part_rows = data.draw(st.integers(1, 12), label="part_rows")
    work = tmp_path_factory.mktemp("run")
    frame = frame_with(kind, kept)
    source = work / f"in.{in_fmt}"
    if in_fmt == "csv":
        frame.to_csv(source, index=False)
    else:
        frame.to_parquet(source, index=False, row_group_size=7)
    out = work / f"out.{out_fmt}"
    report = predict_file("m", source, out, registry=registry, keep_columns=["k"], part_rows=part_rows,
                          workers=1, quiet=True)
    assert report.rows_scored == n

    if out_fmt == "parquet":
        column = pq.read_table(out).column("k")
        if in_fmt == "parquet":
            assert column.type == pq.read_schema(source).field("k").type
        assert EXPECTED_ARROW[kind](column.type), column.type
        got = column.to_pylist()
    elif kind == "int_null":  # pandas reads an integer column with empty cells as float: ask Arrow instead
        column = pa.csv.read_csv(out).column("k")
        assert pa.types.is_int64(column.type) or column.null_count == n, column.type
        got = column.to_pylist()
    else:
        read = pd.read_csv(out, keep_default_na=False, na_values=[""])["k"]
        if kind == "datetime":
            got = list(pd.to_datetime(read, format="ISO8601"))
        else:
            assert {"int": pd.api.types.is_integer_dtype, "float_nan": pd.api.types.is_float_dtype,
                    "bool": pd.api.types.is_bool_dtype, "string": pd.api.types.is_string_dtype}[kind](read.dtype), \
                read.dtype
            got = read.tolist()
    assert same(got, list(frame["k"])), (got, list(frame["k"]))


def test_an_integer_id_from_csv_stays_an_integer(registry: shipml.Registry, tmp_path: Path) -> None:
    """The reported case: ``--keep-columns id`` on a CSV gave a string column, quoted in CSV output."""
    frame = frame_with("int", [3, 1, 2, 10**15])
    frame.to_csv(tmp_path / "in.csv", index=False)
    predict_file("m", tmp_path / "in.csv", tmp_path / "out.parquet", registry=registry, keep_columns=["k"],
                 workers=1, quiet=True)
    assert pq.read_schema(tmp_path / "out.parquet").field("k").type == pa.int64()
    predict_file("m", tmp_path / "in.csv", tmp_path / "out.csv", registry=registry, keep_columns=["k"],
                 workers=1, quiet=True)
    assert [line.split(",")[0] for line in (tmp_path / "out.csv").read_text().splitlines()] == \
        ['"k"', "3", "1", "2", str(10**15)]


def test_leading_zeros_keep_a_column_text(registry: shipml.Registry, tmp_path: Path) -> None:
    frame = frame_with("int", [1, 2, 3]).assign(k=["007", "010", "100"])
    frame.to_csv(tmp_path / "in.csv", index=False)
    predict_file("m", tmp_path / "in.csv", tmp_path / "out.parquet", registry=registry, keep_columns=["k"],
                 workers=1, quiet=True)
    assert pq.read_table(tmp_path / "out.parquet").column("k").to_pylist() == ["007", "010", "100"]


@pytest.mark.parametrize("in_fmt", ["csv", "jsonl", "parquet"])
def test_a_kept_model_input_keeps_its_type(pipeline_model: Saved, tmp_path: Path, in_fmt: str) -> None:
    """``age`` is an int input of the model (read as float64 from text for the check) and is kept as an int."""
    frame = mixed_frame(50)
    source = tmp_path / f"in.{in_fmt}"
    if in_fmt == "csv":
        frame.to_csv(source, index=False)
    elif in_fmt == "jsonl":
        frame.to_json(source, orient="records", lines=True)
    else:
        frame.to_parquet(source, index=False)
    predict_file("pipe", source, tmp_path / "out.parquet", registry=pipeline_model.registry,
                 keep_columns=["id", "age", "income"], workers=1, quiet=True)
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema.field("age").type == pa.int64()
    assert out.schema.field("income").type == pa.float64()
    assert pa.types.is_string(out.schema.field("id").type) or pa.types.is_large_string(out.schema.field("id").type)
    assert out.column("age").to_pylist() == frame["age"].tolist()
