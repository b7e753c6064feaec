"""Each input format into each output format, directories and globs, pass-through and probability columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import shipml
from shipml.jobs import predict_file
from tests.jobs.conftest import Saved, mixed_frame, numeric_frame, read, write

FORMATS = ["parquet", "csv", "jsonl"]


def expected(saved: Saved, source: Path) -> pd.DataFrame:
    """What the model itself says about the rows as they are stored in ``source``."""
    rows = read(source)
    proba = saved.model.predict_proba(rows[saved.features])  # type: ignore[attr-defined]
    return pd.DataFrame({"id": rows["id"].astype(str), "prediction": proba.argmax(axis=1),
                         "proba_0": proba[:, 0], "proba_1": proba[:, 1]})


@pytest.mark.parametrize("out_format", FORMATS)
@pytest.mark.parametrize("in_format", FORMATS)
def test_every_input_format_into_every_output_format(lgb_model: Saved, tmp_path: Path, in_format: str,
                                                     out_format: str) -> None:
    source = write(numeric_frame(1000), tmp_path / f"in.{in_format}")
    out = tmp_path / f"out.{out_format}"
    report = predict_file("lgb", source, out, registry=lgb_model.registry, keep_columns=["id"], proba=True,
                          part_rows=350, batch_size=100, workers=1, quiet=True)
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (1000, 1000, 0)
    assert report.parts_total >= 3
    got = read(out)
    assert list(got.columns) == ["id", "prediction", "proba_0", "proba_1"]
    want = expected(lgb_model, source)
    assert got["id"].astype(str).tolist() == want["id"].tolist()  # same rows, same order
    np.testing.assert_array_equal(got["prediction"].to_numpy(), want["prediction"].to_numpy())
    np.testing.assert_allclose(got["proba_1"].to_numpy(), want["proba_1"].to_numpy(), rtol=1e-12)
    assert report.rejects is None and not (tmp_path / f"out.rejects.{out_format}").exists()
    assert not list(tmp_path.glob(".out*")), "work directory and temporary files are removed"


def test_output_format_defaults_to_parquet(lgb_model: Saved, tmp_path: Path) -> None:
    source = write(numeric_frame(50), tmp_path / "in.csv")
    report = predict_file("lgb", source, tmp_path / "scores.out", registry=lgb_model.registry, workers=1,
                          quiet=True)
    assert report.output_format == "parquet"
    assert pq.read_table(tmp_path / "scores.out").column_names == ["prediction"]
    assert report.rejects is None  # nothing rejected: no rejects file


def test_string_columns_of_a_pipeline_stay_strings(pipeline_model: Saved, tmp_path: Path) -> None:
    frame = mixed_frame(600)
    frame.loc[::7, "state"] = "NY"
    source = write(frame, tmp_path / "in.csv")
    report = predict_file("pipe", source, tmp_path / "out.jsonl", registry=pipeline_model.registry,
                          keep_columns=["id", "state"], proba=True, part_rows=200, workers=1, quiet=True)
    assert report.rows_scored == 600
    got = read(tmp_path / "out.jsonl")
    assert got["id"].tolist() == frame["id"].tolist()  # "r00001" stays text
    assert got["state"].tolist() == frame["state"].tolist()
    model = pipeline_model.model
    np.testing.assert_array_equal(got["prediction"], model.predict(frame[pipeline_model.features]))  # type: ignore[attr-defined]
    np.testing.assert_allclose(got["proba_1"], model.predict_proba(frame[pipeline_model.features])[:, 1])  # type: ignore[attr-defined]


def test_directory_of_mixed_formats_in_file_name_order(lgb_model: Saved, tmp_path: Path) -> None:
    frame = numeric_frame(900)
    folder = tmp_path / "inputs"
    folder.mkdir()
    write(frame.iloc[:300], folder / "a.parquet")
    write(frame.iloc[300:600], folder / "b.csv")
    write(frame.iloc[600:], folder / "c.jsonl")
    (folder / "_SUCCESS").write_text("")  # markers and hidden files are not inputs
    (folder / ".hidden.csv").write_text("x\n1\n")
    report = predict_file("lgb", folder, tmp_path / "out.parquet", registry=lgb_model.registry,
                          keep_columns=["id"], part_rows=128, workers=1, quiet=True)
    assert report.rows_read == 900
    got = pd.read_parquet(tmp_path / "out.parquet")
    assert got["id"].astype(int).tolist() == list(range(900))


def test_glob_input(lgb_model: Saved, tmp_path: Path) -> None:
    frame = numeric_frame(400)
    for i in range(4):
        write(frame.iloc[i * 100:(i + 1) * 100], tmp_path / f"day-{i}.parquet")
    write(frame, tmp_path / "other.parquet")
    report = predict_file("lgb", str(tmp_path / "day-*.parquet"), tmp_path / "out.csv",
                          registry=lgb_model.registry, keep_columns=["id", "x0"], workers=1, quiet=True)
    assert report.rows_read == 400
    got = pd.read_csv(tmp_path / "out.csv")
    assert got.columns.tolist() == ["id", "x0", "prediction"]
    assert got["id"].tolist() == list(range(400))
    np.testing.assert_allclose(got["x0"], frame["x0"])


def test_without_proba_only_predictions(lgb_model: Saved, tmp_path: Path) -> None:
    source = write(numeric_frame(100), tmp_path / "in.parquet")
    predict_file("lgb", source, tmp_path / "out.parquet", registry=lgb_model.registry, workers=1, quiet=True)
    assert pq.read_table(tmp_path / "out.parquet").column_names == ["prediction"]


def test_two_workers_give_the_same_rows_in_the_same_order(lgb_model: Saved, tmp_path: Path) -> None:
    source = write(numeric_frame(3000), tmp_path / "in.parquet")
    one = predict_file("lgb", source, tmp_path / "one.parquet", registry=lgb_model.registry, keep_columns=["id"],
                       proba=True, part_rows=250, workers=1, quiet=True)
    two = predict_file("lgb", source, tmp_path / "two.parquet", registry=lgb_model.registry, keep_columns=["id"],
                       proba=True, part_rows=250, workers=2, quiet=True)
    assert two.parts_total == 20  # 10 row groups of 300 rows, each cut in two parts of 150
    assert len(two.workers_seen) == 2
    assert two.max_model_loads == 1  # once per worker, not once per part
    assert one.rows_scored == two.rows_scored == 3000
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet"),
                                  pd.read_parquet(tmp_path / "two.parquet"))


def test_refusals(lgb_model: Saved, tmp_path: Path) -> None:
    reg = lgb_model.registry
    source = write(numeric_frame(20), tmp_path / "in.csv")
    with pytest.raises(shipml.SchemaError, match="no column 'x3'"):
        predict_file("lgb", write(numeric_frame(20).drop(columns="x3"), tmp_path / "short.csv"),
                     tmp_path / "o.parquet", registry=reg, quiet=True)
    with pytest.raises(shipml.SchemaError, match="no column 'account'"):
        predict_file("lgb", source, tmp_path / "o.parquet", registry=reg, keep_columns=["account"], quiet=True)
    with pytest.raises(shipml.SchemaError, match="clash"):
        predict_file("lgb", source, tmp_path / "o.parquet", registry=reg, keep_columns=["prediction"],
                     quiet=True)
    with pytest.raises(shipml.ConflictError, match="one of the inputs"):
        predict_file("lgb", source, source, registry=reg, quiet=True)
    with pytest.raises(shipml.NotFoundError):
        predict_file("lgb", tmp_path / "missing.csv", tmp_path / "o.parquet", registry=reg, quiet=True)
    (tmp_path / "in.txt").write_text("x0\n1\n")
    with pytest.raises(shipml.SchemaError, match="extension"):
        predict_file("lgb", tmp_path / "in.txt", tmp_path / "o.parquet", registry=reg, quiet=True)
    assert not (tmp_path / "o.parquet").exists()


def test_regressor_refuses_proba(registry: shipml.Registry, tmp_path: Path) -> None:
    import lightgbm as lgb

    X = numeric_frame(200).drop(columns="id")
    registry.save(lgb.LGBMRegressor(n_estimators=5, verbose=-1).fit(X, X["x0"] * 2), "reg", sample=X)
    source = write(numeric_frame(30), tmp_path / "in.parquet")
    with pytest.raises(shipml.SchemaError, match="no probabilities"):
        predict_file("reg", source, tmp_path / "o.parquet", registry=registry, proba=True, quiet=True)
    report = predict_file("reg", source, tmp_path / "o.parquet", registry=registry, workers=1, quiet=True)
    assert pq.read_table(tmp_path / "o.parquet").schema.field("prediction").type == "double"
    assert report.rows_scored == 30


def test_empty_input_gives_empty_files_with_columns(lgb_model: Saved, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,x0,x1,x2,x3\n")
    report = predict_file("lgb", source, tmp_path / "out.csv", registry=lgb_model.registry, keep_columns=["id"],
                          proba=True, workers=1, quiet=True)
    assert (report.rows_read, report.parts_total) == (0, 0)
    assert (tmp_path / "out.csv").read_text().splitlines() == ['"id","prediction","proba_0","proba_1"']
    assert report.rejects is None and not (tmp_path / "out.rejects.csv").exists()  # nothing rejected


def test_pass_through_column_of_different_types_becomes_text(lgb_model: Saved, tmp_path: Path) -> None:
    frame = numeric_frame(20)
    write(frame.iloc[:10], tmp_path / "a.jsonl")
    other = frame.iloc[10:].astype({"id": str})
    other["id"] = "k" + other["id"]
    write(other, tmp_path / "b.jsonl")
    report = predict_file("lgb", [tmp_path / "a.jsonl", tmp_path / "b.jsonl"], tmp_path / "out.parquet",
                          registry=lgb_model.registry, keep_columns=["id"], workers=1, quiet=True)
    got = pd.read_parquet(report.output)["id"].tolist()
    assert got == [str(i) for i in range(10)] + [f"k{i}" for i in range(10, 20)]
