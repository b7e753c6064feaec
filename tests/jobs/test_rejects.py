"""Every row ends up scored or rejected with its reason; counts add up and order is kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner

from shipml.cli import cli
from shipml.jobs import predict_file
from tests.jobs.conftest import Saved, mixed_frame, numeric_frame, read, write


def test_rejected_rows_carry_row_column_rule_and_reason(pipeline_model: Saved, tmp_path: Path) -> None:
    frame = mixed_frame(1000).astype({"age": object, "income": object})
    frame.loc[10, "income"] = None            # null where training had none
    frame.loc[250, "state"] = "ZZ"            # a category training never saw
    frame.loc[251, "age"] = "forty"           # not a number
    frame.loc[777, ["age", "state"]] = [None, "QQ"]   # two problems in one row
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    report = predict_file("pipe", source, tmp_path / "out.parquet", registry=pipeline_model.registry,
                          keep_columns=["id"], part_rows=120, batch_size=50, workers=1, quiet=True)
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (1000, 996, 4)
    out = pd.read_parquet(tmp_path / "out.parquet")
    bad_ids = {"r00010", "r00250", "r00251", "r00777"}
    assert out["id"].tolist() == [i for i in frame["id"] if i not in bad_ids]  # order kept
    rejects = pd.read_parquet(report.rejects)
    assert rejects["_row"].tolist() == [10, 250, 251, 777]  # row numbers within the file, in order
    assert rejects["id"].tolist() == ["r00010", "r00250", "r00251", "r00777"]
    assert rejects["_column"].tolist() == ["income", "state", "age", "age; state"]
    assert rejects["_rule"].tolist() == ["null", "unseen_category", "type", "null; unseen_category"]
    assert "got 'forty'" in rejects["_reason"][2]
    assert rejects.loc[1, "state"] == "ZZ"  # the row's own values come along
    assert set(rejects["_file"]) == {str(source)}


def test_rows_that_cannot_be_parsed_are_rejected_too(lgb_model: Saved, tmp_path: Path) -> None:
    frame = numeric_frame(300)
    text = frame.to_csv(index=False).splitlines()
    text[51] = "50,1.0,2.0"                      # data row 50: too few fields
    text[101] = "100,abc,0.1,0.2,0.3"            # data row 100: not a number
    csv = tmp_path / "in.csv"
    csv.write_text("\n".join(text) + "\n")
    report = predict_file("lgb", csv, tmp_path / "out.csv", registry=lgb_model.registry, keep_columns=["id"],
                          part_rows=40, workers=1, quiet=True)
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (300, 298, 2)
    rejects = pd.read_csv(report.rejects)
    assert rejects["_row"].tolist() == [50, 100]
    assert rejects["_rule"].tolist() == ["parse", "type"]
    assert "expected 5 fields, found 3" in rejects["_reason"][0]
    assert pd.read_csv(tmp_path / "out.csv")["id"].tolist() == [i for i in range(300) if i not in (50, 100)]

    lines = frame.to_json(orient="records", lines=True).splitlines()
    lines[3] = "{not json"
    lines[4] = '{"id": 4, "x0": "high", "x1": 0.1, "x2": 0.2, "x3": 0.3}'
    lines[5] = '{"id": 5, "x1": 0.1, "x2": 0.2, "x3": 0.3}'
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(lines) + "\n\n")
    report = predict_file("lgb", jsonl, tmp_path / "out.jsonl", registry=lgb_model.registry, keep_columns=["id"],
                          part_rows=40, workers=1, quiet=True)
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (300, 297, 3)
    rejects = read(report.rejects)
    assert rejects["_row"].tolist() == [3, 4, 5]
    assert rejects["_rule"].tolist() == ["parse", "type", "null"]


def test_all_rows_rejected_still_gives_both_files(lgb_model: Saved, tmp_path: Path) -> None:
    frame = numeric_frame(50)
    frame["x2"] = np.nan
    source = write(frame, tmp_path / "in.parquet")
    report = predict_file("lgb", source, tmp_path / "out.parquet", registry=lgb_model.registry,
                          keep_columns=["id"], proba=True, workers=1, quiet=True)
    assert (report.rows_scored, report.rows_rejected) == (0, 50)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out.empty and out.columns.tolist() == ["id", "prediction", "proba_0", "proba_1"]
    assert pd.read_parquet(report.rejects)["_row"].tolist() == list(range(50))


def test_row_numbers_restart_in_each_file(lgb_model: Saved, tmp_path: Path) -> None:
    frame = numeric_frame(200)
    frame.loc[[5, 150], "x1"] = np.nan
    write(frame.iloc[:100], tmp_path / "a.csv")
    write(frame.iloc[100:], tmp_path / "b.csv")
    report = predict_file("lgb", [tmp_path / "a.csv", tmp_path / "b.csv"], tmp_path / "out.parquet",
                          registry=lgb_model.registry, part_rows=30, workers=1, quiet=True)
    rejects = pd.read_parquet(report.rejects)
    assert rejects["_row"].tolist() == [5, 50]
    assert [Path(f).name for f in rejects["_file"]] == ["a.csv", "b.csv"]
    assert report.rows_read == report.rows_scored + report.rows_rejected == 200


def test_no_rejects_file_when_no_row_is_rejected(lgb_model: Saved, tmp_path: Path) -> None:
    """(issue 12, item 17) No empty rejects file; the summary says none was written. A rejects file an earlier
    run left at that path goes too, so that what is on disk describes this run."""
    source = write(numeric_frame(200), tmp_path / "in.csv")
    stale = tmp_path / "out.rejects.csv"
    stale.write_text('"x0","_row"\n"abc",3\n')
    report = predict_file("lgb", source, tmp_path / "out.csv", registry=lgb_model.registry, part_rows=70,
                          workers=1, quiet=True)
    assert (report.rows_scored, report.rows_rejected) == (200, 0)
    assert report.rejects is None
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "registry") == ["in.csv", "out.csv"]
    assert report.to_dict()["rejects"] is None
    assert report.summary().splitlines()[-1] == "rejects: none written (no row was rejected)"

    result = CliRunner().invoke(cli, ["predict", "lgb", str(source), "-o", str(tmp_path / "o2.parquet"),
                                      "--registry", str(lgb_model.registry.root), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "rejects: none written (no row was rejected)" in result.stdout
    assert not (tmp_path / "o2.rejects.parquet").exists()


def test_a_rejects_file_only_when_rows_are_rejected(lgb_model: Saved, tmp_path: Path) -> None:
    frame = numeric_frame(200).astype({"x1": object})
    frame.loc[7, "x1"] = "oops"
    source = write(frame, tmp_path / "in.csv")
    report = predict_file("lgb", source, tmp_path / "out.csv", registry=lgb_model.registry, workers=1, quiet=True)
    assert report.rejects == tmp_path / "out.rejects.csv"
    assert pd.read_csv(report.rejects)["_row"].tolist() == [7]
    assert report.summary().splitlines()[-1] == f"rejects: {tmp_path / 'out.rejects.csv'} (1 row)"


def test_json_lines_with_nan_and_infinity_read_as_the_server_reads_them(lgb_model: Saved, tmp_path: Path) -> None:
    """Python's json writes NaN, Infinity and -Infinity: a JSON-lines file of such rows is read as the server
    reads a body (NaN is a missing value; an infinity is a float), not rejected as invalid JSON - also when a
    broken line sends its part down the line-by-line path."""
    frame = numeric_frame(50)
    lines = frame.to_json(orient="records", lines=True).splitlines()
    lines[3] = "{not json"
    lines[7] = '{"id": 7, "x0": NaN, "x1": 0.1, "x2": 0.2, "x3": 0.3}'
    lines[8] = '{"id": 8, "x0": Infinity, "x1": -Infinity, "x2": 0.2, "x3": 0.3}'
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    report = predict_file("lgb", jsonl, tmp_path / "out.parquet", registry=lgb_model.registry, keep_columns=["id"],
                          workers=1, quiet=True)
    assert report.rows_read == 50
    rejects = read(report.rejects)
    assert rejects[rejects["_rule"] == "parse"]["_row"].tolist() == [3]  # only the broken line is "invalid JSON"
    scored = set(pd.read_parquet(tmp_path / "out.parquet")["id"])
    assert 8 in scored  # infinities are floats (out of the training range: a warning, not a rejection)
