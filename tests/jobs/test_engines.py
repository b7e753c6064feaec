"""Ray (on a real two-node cluster on loopback) and Dask (a real local cluster) give the same rows as the local
engine, and load the model once per worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shipml.jobs import predict_file
from tests.jobs.conftest import Saved, mixed_frame, numeric_frame
from tests.ray_cluster import two_node_cluster

pytestmark = [
    pytest.mark.slow,
    # Ray Data's own DataContext sets a deprecated field of itself when it is created (ray 2.60).
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
]

HEAD_IP, NODE_IP = "127.0.0.22", "127.0.0.23"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    yield from two_node_cluster(HEAD_IP, NODE_IP)


def _inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    frame = numeric_frame(4000)
    frame.loc[[17, 2500], "x3"] = float("nan")
    frame.iloc[:2500].to_parquet(folder / "a.parquet", row_group_size=500)
    frame.iloc[2500:].to_csv(folder / "b.csv", index=False)
    return folder


def _local(saved: Saved, folder: Path, tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    report = predict_file("lgb", folder, tmp_path / "local.parquet", registry=saved.registry, keep_columns=["id"],
                          proba=True, part_rows=250, workers=1, quiet=True)
    return pd.read_parquet(report.output), pd.read_parquet(report.rejects)


def test_ray_engine_gives_the_local_rows(lgb_model: Saved, tmp_path: Path, ray_cluster: str) -> None:
    folder = _inputs(tmp_path)
    want, want_rejects = _local(lgb_model, folder, tmp_path)
    report = predict_file("lgb", folder, tmp_path / "ray.parquet", registry=lgb_model.registry,
                          keep_columns=["id"], proba=True, part_rows=250, engine="ray", address=ray_cluster,
                          workers=2, quiet=True)
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (4000, 3998, 2)
    assert report.parts_total > 2 * len(report.workers_seen)
    assert len(report.workers_seen) == 2
    assert report.max_model_loads == 1  # once per actor, whatever the number of parts it scored
    pd.testing.assert_frame_equal(pd.read_parquet(report.output), want)
    pd.testing.assert_frame_equal(pd.read_parquet(report.rejects), want_rejects)


def test_ray_engine_with_string_columns(pipeline_model: Saved, tmp_path: Path, ray_cluster: str) -> None:
    frame = mixed_frame(900)
    frame.to_csv(tmp_path / "in.csv", index=False)
    common: dict[str, Any] = {"registry": pipeline_model.registry, "keep_columns": ["id"], "proba": True,
                              "part_rows": 200, "quiet": True}
    local = predict_file("pipe", tmp_path / "in.csv", tmp_path / "local.jsonl", workers=1, **common)
    ray = predict_file("pipe", tmp_path / "in.csv", tmp_path / "ray.jsonl", engine="ray", address=ray_cluster,
                       **common)
    assert ray.rows_scored == local.rows_scored == 900
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()


def test_dask_engine_gives_the_local_rows(lgb_model: Saved, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    folder = _inputs(tmp_path)
    want, want_rejects = _local(lgb_model, folder, tmp_path)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        report = predict_file("lgb", folder, tmp_path / "dask.parquet", registry=lgb_model.registry,
                              keep_columns=["id"], proba=True, part_rows=250, engine="dask",
                              address=cluster.scheduler_address, quiet=True)
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (4000, 3998, 2)
    assert len(report.workers_seen) == 2
    assert report.max_model_loads == 1  # once per worker process, not once per part
    pd.testing.assert_frame_equal(pd.read_parquet(report.output), want)
    pd.testing.assert_frame_equal(pd.read_parquet(report.rejects), want_rejects)


def test_dask_engine_starts_its_own_local_cluster(lgb_model: Saved, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    numeric_frame(1000).to_csv(tmp_path / "in.csv", index=False)
    common: dict[str, Any] = {"registry": lgb_model.registry, "keep_columns": ["id"], "part_rows": 200, "quiet": True}
    predict_file("lgb", tmp_path / "in.csv", tmp_path / "local.csv", workers=1, **common)
    report = predict_file("lgb", tmp_path / "in.csv", tmp_path / "dask.csv", engine="dask", workers=2, **common)
    assert report.rows_scored == 1000
    assert (tmp_path / "dask.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
