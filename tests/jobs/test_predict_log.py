"""``shipml predict --log DIR``: every scored row is in the prediction log, written by the process that scored
it, with the job's id as request id and the row's position in the input; rejected rows are not logged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from shipml.cli import cli
from shipml.jobs import predict_file
from shipml.monitoring.logread import log_files, read_log
from tests.jobs.conftest import Saved, numeric_frame

pytestmark = pytest.mark.slow


def _inputs(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """A Parquet file then a CSV file with blank lines in it; ids are the rows' positions in the input; two rows
    have a null the model never saw (rejected)."""
    folder = tmp_path / "in"
    folder.mkdir()
    frame = numeric_frame(1200)
    frame.loc[[17, 900], "x3"] = float("nan")
    frame.iloc[:700].to_parquet(folder / "a.parquet", row_group_size=200)
    text = frame.iloc[700:].to_csv(index=False).splitlines()
    text.insert(50, "")  # blank lines are not rows (as for the rejects' _row)
    text.insert(300, "")
    (folder / "b.csv").write_text("\n".join(text) + "\n\n")
    return folder, frame


def _check_log(log_dir: Path, frame: pd.DataFrame, report_id: str, output: Path, saved: Saved) -> pd.DataFrame:
    table = read_log(log_dir)
    logged = table.to_pandas()
    assert set(logged["request_id"]) == {report_id}
    assert set(logged["endpoint"]) == {"batch"} and set(logged["variant"]) == {"batch"}
    assert logged["row"].is_unique
    scored = frame.drop(index=[17, 900])
    assert sorted(logged["row"]) == scored["id"].tolist()  # every scored row, at its position; no rejected one
    by_row = logged.set_index("row").sort_index()
    for name in saved.features:
        np.testing.assert_array_equal(by_row[f"input.{name}"].to_numpy(), scored[name].to_numpy())
    out = pd.read_parquet(output).set_index("id").sort_index()
    np.testing.assert_array_equal(by_row["prediction"].to_numpy(), out["prediction"].to_numpy())
    proba = saved.model.predict_proba(scored[saved.features])  # type: ignore[attr-defined]
    np.testing.assert_allclose(by_row[["proba.0", "proba.1"]].to_numpy(), proba)
    return logged


def test_every_scored_row_is_logged_by_the_worker_that_scored_it(lgb_model: Saved, tmp_path: Path) -> None:
    folder, frame = _inputs(tmp_path)
    report = predict_file("lgb", folder, tmp_path / "out.parquet", registry=lgb_model.registry,
                          keep_columns=["id"], part_rows=150, workers=2, quiet=True, log=tmp_path / "log")
    assert report.rows_scored == 1198 and report.rows_rejected == 2
    assert report.log_request_id is not None and report.log_request_id.startswith("job-")
    _check_log(tmp_path / "log", frame, report.log_request_id, report.output, lgb_model)
    pids = {int(p.stem.split("-")[2]) for p in log_files(tmp_path / "log")}
    assert len(pids) == 2  # each worker process wrote its own files
    for path in log_files(tmp_path / "log"):
        assert pq.read_metadata(path).metadata[b"shipml.model"] == b"lgb"


def test_the_dask_engine_logs_the_same_rows(lgb_model: Saved, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    folder, frame = _inputs(tmp_path)
    report = predict_file("lgb", folder, tmp_path / "out.parquet", registry=lgb_model.registry,
                          keep_columns=["id"], part_rows=300, engine="dask", workers=2, quiet=True,
                          log=tmp_path / "log")
    assert report.log_request_id is not None
    _check_log(tmp_path / "log", frame, report.log_request_id, report.output, lgb_model)


def test_shipml_predict_log_on_the_command_line(lgb_model: Saved, tmp_path: Path) -> None:
    folder, frame = _inputs(tmp_path)
    result = CliRunner().invoke(cli, [
        "predict", "lgb", str(folder), "-o", str(tmp_path / "out.parquet"), "--keep-columns", "id",
        "--part-rows", "400", "--workers", "1", "--log", str(tmp_path / "log"),
        "--registry", str(lgb_model.registry.root), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    import orjson

    data = orjson.loads(result.stdout)
    assert data["log"] == str(tmp_path / "log") and data["log_request_id"].startswith("job-")
    _check_log(tmp_path / "log", frame, data["log_request_id"], tmp_path / "out.parquet", lgb_model)


def test_without_log_nothing_is_logged(lgb_model: Saved, tmp_path: Path) -> None:
    folder, _ = _inputs(tmp_path)
    report = predict_file("lgb", folder, tmp_path / "out.parquet", registry=lgb_model.registry, workers=1,
                          quiet=True)
    assert report.log_request_id is None and report.to_dict()["log"] is None


def test_a_part_counts_as_done_only_once_its_rows_are_in_the_log(lgb_model: Saved, tmp_path: Path) -> None:
    """A killed job resumes after its last finished part: that part's rows must be in the log already (the
    writer's own flush interval here is an hour, so only the part's end can have written them)."""
    from shipml.jobs import scoring, sources
    from shipml.jobs.spec import JobSpec

    folder, frame = _inputs(tmp_path)
    files = sources.list_inputs(folder)
    parts = sources.with_first_rows(files, sources.plan_parts(files, 300))
    version = lgb_model.registry.get("lgb")
    (tmp_path / "work").mkdir()
    job = JobSpec(str(version.path), "lgb:1.0.0", "k", str(tmp_path / "work"), log_dir=str(tmp_path / "log"),
                  log_request_id="job-test", log_flush_s=3600.0)
    try:
        scored = 0
        for result in scoring.run_parts(job, parts):
            scored += result.rows_scored
            assert read_log(tmp_path / "log").num_rows == scored
        assert read_log(tmp_path / "log").num_rows == len(frame) - 2
    finally:
        scoring.forget()
