"""A killed job re-run with the same arguments skips finished parts: no duplicate, no missing row, and never a
half-written file under the final name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import shipml
from shipml.jobs import predict_file, workdir
from tests.jobs.conftest import Saved, numeric_frame

KILL_WAIT = 60.0  # seconds to wait for the first parts before giving up


def cli(registry: shipml.Registry, *args: str) -> list[str]:
    return [sys.executable, "-m", "shipml.cli", "--registry", str(registry.root), *args]


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_killed_run_resumes_without_duplicates_or_gaps(lgb_model: Saved, tmp_path: Path, workers: int) -> None:
    rows = 600_000
    frame = numeric_frame(rows)
    frame.to_parquet(tmp_path / "in.parquet", index=False, row_group_size=100_000)
    out = tmp_path / "out.csv"
    args = cli(lgb_model.registry, "predict", "lgb", str(tmp_path / "in.parquet"), "-o", str(out),
               "--keep-columns", "id", "--proba", "--part-rows", "5000", "--batch-size", "1000",
               "--workers", str(workers))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + KILL_WAIT
        done: list[Path] = []
        while time.monotonic() < deadline and proc.poll() is None:
            done = list(tmp_path.glob(".out.csv.shipml-*/part-*.json"))
            if len(done) >= 5:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the job finished before it could be killed: make the input bigger"
        assert len(done) >= 5
        pool = children(proc.pid)
        assert len(pool) >= (workers if workers > 1 else 0)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    for _ in range(100):  # the workers die with the job (parent-death signal): no orphan keeps writing parts
        if not any(alive(p) for p in pool):
            break
        time.sleep(0.05)
    assert not any(alive(p) for p in pool)
    assert not out.exists(), "no output under the final name before the job is done"
    assert not (tmp_path / "out.rejects.csv").exists()
    work = next(tmp_path.glob(".out.csv.shipml-*"))
    finished_before = len(workdir.finished(work))
    assert 5 <= finished_before < 120

    rerun = subprocess.run([*args[:5], "--json", *args[5:]], capture_output=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr.decode()
    report = json.loads(rerun.stdout)
    assert report["parts_total"] == 120
    assert report["parts_skipped"] >= finished_before
    assert report["rows_read"] == report["rows_scored"] == rows
    got = pd.read_csv(out)
    np.testing.assert_array_equal(got["id"].to_numpy(), np.arange(rows))  # each row once, in order
    want = lgb_model.model.predict_proba(frame[lgb_model.features])[:, 1]  # type: ignore[attr-defined]
    np.testing.assert_allclose(got["proba_1"].to_numpy(), want, rtol=1e-9)
    assert not work.exists(), "the work directory goes once the output is in place"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_second_run_of_the_same_job_is_refused_while_the_first_runs(lgb_model: Saved, tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    numeric_frame(100).to_parquet(source)
    out = tmp_path / "out.parquet"
    predict_file("lgb", source, out, registry=lgb_model.registry, workers=1, quiet=True)
    works = list(tmp_path.glob(".out.parquet.shipml-*"))
    assert works == []
    # Hold the lock of the job's work directory as a running job would.
    from shipml.jobs import _job_key, sources

    manifest = lgb_model.registry.get("lgb").manifest
    key = _job_key(manifest, sources.list_inputs(source), (), False, 500_000, shipml.InputPolicy())
    with workdir.locked(workdir.work_dir_for(out, key)), pytest.raises(shipml.ConflictError, match="in progress"):
        predict_file("lgb", source, out, registry=lgb_model.registry, workers=1, quiet=True)


def test_parts_left_by_an_earlier_run_are_reused(lgb_model: Saved, tmp_path: Path) -> None:
    """A part already in the work directory is not scored again (its recorded result is trusted)."""
    source = tmp_path / "in.parquet"
    numeric_frame(1000).to_parquet(source, row_group_size=250)
    out = tmp_path / "out.parquet"
    first = predict_file("lgb", source, out, registry=lgb_model.registry, part_rows=250, workers=1, quiet=True)
    assert first.parts_skipped == 0 and first.parts_total == 4
    out.unlink()
    # Re-create the situation of a run killed after two parts: run, then keep only parts 0 and 1 in the work dir.
    from shipml.jobs import _job_key, sources

    manifest = lgb_model.registry.get("lgb").manifest
    key = _job_key(manifest, sources.list_inputs(source), (), False, 250, shipml.InputPolicy())
    work = workdir.work_dir_for(out, key)
    work.mkdir()
    stale = work / "part-000003.arrow.123.tmp"
    stale.write_bytes(b"half")
    from shipml.jobs.scoring import forget, score_part
    from shipml.jobs.spec import JobSpec

    job = JobSpec(str(lgb_model.registry.get("lgb").path), "lgb:1.0.0", key, str(work))
    parts = sources.plan_parts(sources.list_inputs(source), 250)
    for part in parts[:2]:
        score_part(job, part)
    forget()
    second = predict_file("lgb", source, out, registry=lgb_model.registry, part_rows=250, workers=1, quiet=True)
    assert (second.parts_skipped, second.rows_read) == (2, 1000)
    assert pd.read_parquet(out).shape == (1000, 1)
    assert not work.exists()
