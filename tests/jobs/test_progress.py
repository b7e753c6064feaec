"""Progress: a bar on a terminal, plain lines in logs, nothing with --quiet; the summary counts every row."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shipml
from shipml.jobs import predict_file
from shipml.jobs.progress import MIN_RATE_SPAN_S, RATE_WINDOW_S, Progress, duration
from tests.jobs.conftest import Saved, numeric_frame

LINE = re.compile(r"[\d,]+/[\d,]+ rows \(\d+\.\d%\)( [\d,]+ rows/s( ETA [\d:]+)?)? elapsed \d+:\d\d")


def cli(registry: shipml.Registry, *args: str) -> list[str]:
    return [sys.executable, "-m", "shipml.cli", "--registry", str(registry.root), *args]


def test_plain_lines_for_logs() -> None:
    stream = io.StringIO()
    bar = Progress(1000, stream=stream, interactive=False, interval=0.0)
    bar.start("3 parts")
    for _ in range(4):
        bar.advance(250)
    bar.finish()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "predict: 3 parts"
    assert all(LINE.search(line) for line in lines[1:])
    assert lines[-1].startswith("predict: done 1,000/1,000 rows (100.0%)")
    assert "\r" not in stream.getvalue()


def test_plain_lines_are_spaced_by_the_interval() -> None:
    stream = io.StringIO()
    bar = Progress(1000, stream=stream, interactive=False, interval=3600.0)
    for _ in range(10):
        bar.advance(100)
    bar.finish()
    assert len(stream.getvalue().splitlines()) == 2  # the first update, then the final line


def test_bar_on_a_terminal_redraws_in_place() -> None:
    stream = io.StringIO()
    bar = Progress(400, stream=stream, interactive=True)
    bar.advance(100)
    bar.advance(300)  # within the redraw interval: not drawn
    bar.finish()
    text = stream.getvalue()
    assert text.startswith("\rpredict [######------------------] 100/400 rows (25.0%)")
    assert text.endswith("\n") and "[########################] 400/400" in text
    assert "rows/s" in text  # the final line's overall rate (no ETA: the redraws came within a second)


def test_quiet_writes_nothing() -> None:
    stream = io.StringIO()
    bar = Progress(10, stream=stream, quiet=True, interval=0.0)
    bar.start("x")
    bar.advance(10)
    bar.finish()
    assert stream.getvalue() == ""


def test_library_reports_to_the_given_stream(lgb_model: Saved, tmp_path: Path) -> None:
    numeric_frame(500).to_parquet(tmp_path / "in.parquet", row_group_size=100)
    stream = io.StringIO()
    predict_file("lgb", tmp_path / "in.parquet", tmp_path / "o.parquet", registry=lgb_model.registry,
                 part_rows=100, batch_size=50, workers=1, progress=stream, progress_interval=0.0)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("predict: lgb:1.0.0 on 1 file(s), 5 part(s), engine local x1")
    assert len(lines) >= 10  # one line per batch with a zero interval
    assert lines[-1].startswith("predict: done 500/500 rows")


def test_cli_in_a_log_prints_plain_lines_and_the_summary(lgb_model: Saved, tmp_path: Path) -> None:
    numeric_frame(300).to_csv(tmp_path / "in.csv", index=False)
    run = subprocess.run(cli(lgb_model.registry, "predict", "lgb", str(tmp_path / "in.csv"), "-o",
                             str(tmp_path / "o.parquet"), "--workers", "1"),
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stderr
    assert re.search(r"^predict: done 300/300 rows \(100\.0%\)", run.stderr, re.MULTILINE)
    assert "read 300 rows, scored 300, rejected 0" in run.stdout


def test_cli_quiet(lgb_model: Saved, tmp_path: Path) -> None:
    numeric_frame(300).to_csv(tmp_path / "in.csv", index=False)
    run = subprocess.run(cli(lgb_model.registry, "predict", "lgb", str(tmp_path / "in.csv"), "-o",
                             str(tmp_path / "o.parquet"), "--workers", "1", "--quiet"),
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert (run.stdout, run.stderr) == ("", "")
    assert (tmp_path / "o.parquet").is_file()


def test_cli_error_is_one_line(lgb_model: Saved, tmp_path: Path) -> None:
    run = subprocess.run(cli(lgb_model.registry, "predict", "lgb", str(tmp_path / "nope.csv"), "-o",
                             str(tmp_path / "o.parquet")), capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [f"error: no such input file or directory: {tmp_path / 'nope.csv'}"]


@pytest.mark.slow
def test_cli_on_a_terminal_draws_a_bar(lgb_model: Saved, tmp_path: Path) -> None:
    numeric_frame(20_000).to_parquet(tmp_path / "in.parquet", row_group_size=1000)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(cli(lgb_model.registry, "predict", "lgb", str(tmp_path / "in.parquet"), "-o",
                                    str(tmp_path / "o.parquet"), "--workers", "1", "--batch-size", "500"),
                                stdout=subprocess.DEVNULL, stderr=follower)
        os.close(follower)
        follower = -1
        chunks: list[bytes] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closes when the process exits
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=60) == 0
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    text = b"".join(chunks).decode()
    assert "\rpredict [" in text
    assert re.search(r"\] 20,000/20,000 rows \(100\.0%\) [\d,]+ rows/s elapsed", text)


# -- the rate and ETA estimator (issue 12, item 17) ---------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_no_eta_on_the_first_line_after_a_slow_start() -> None:
    """The reported case: workers take 10 s to start, then one batch arrives: no ETA from that (it was 71 h)."""
    clock = Clock()
    stream = io.StringIO()
    bar = Progress(500_000_000, stream=stream, interactive=False, interval=0.0, clock=clock)
    bar.start("1 file(s)")
    clock.now = 10.0
    bar.advance(16_384)
    first = stream.getvalue().splitlines()[1]
    assert "ETA" not in first and "rows/s" not in first, first
    assert first == "predict: 16,384/500,000,000 rows (0.0%) elapsed 0:10"
    assert bar.eta_seconds() is None and bar.rate() is None


@settings(max_examples=40, deadline=None)
@given(startup=st.floats(0, 120), rate=st.floats(100, 2e6), batch=st.integers(1, 100_000),
       total_batches=st.integers(20, 2000), seen=st.integers(2, 19))
def test_the_eta_follows_the_steady_rate_whatever_the_start_up(startup: float, rate: float, batch: int,
                                                               total_batches: int, seen: int) -> None:
    """Batches arrive at a steady ``rate`` after a ``startup`` delay: once a rate is known (over at least a
    second of arrivals) the ETA is the remaining rows at that rate, not at the rate diluted by the start-up."""
    clock = Clock()
    bar = Progress(batch * total_batches, stream=io.StringIO(), interactive=False, interval=0.0, clock=clock)
    bar.start("x")
    for k in range(1, seen + 1):
        clock.now = startup + k * batch / rate
        bar.advance(batch)
        span = (k - 1) * batch / rate
        if span < MIN_RATE_SPAN_S:
            assert bar.eta_seconds() is None
    span = (seen - 1) * batch / rate
    eta = bar.eta_seconds()
    if span < MIN_RATE_SPAN_S:
        assert eta is None
        return
    assert eta is not None
    truth = batch * (total_batches - seen) / rate
    assert eta == pytest.approx(truth, rel=1e-6, abs=1e-6)
    assert f"ETA {duration(eta)} " in bar.line()


def test_the_rate_follows_a_change_of_pace() -> None:
    """The rate is measured over the last RATE_WINDOW_S seconds: a job that speeds up gets a shorter ETA."""
    clock = Clock()
    bar = Progress(10_000_000, stream=io.StringIO(), interactive=False, interval=0.0, clock=clock)
    bar.start("x")
    for _ in range(100):  # 1,000 rows/s for 100 s
        clock.now += 1.0
        bar.advance(1_000)
    assert bar.rate() == pytest.approx(1_000)
    for _ in range(2 * int(RATE_WINDOW_S)):  # then 10,000 rows/s
        clock.now += 1.0
        bar.advance(10_000)
    assert bar.rate() == pytest.approx(10_000)


def test_the_final_line_gives_the_overall_rate_and_no_eta() -> None:
    clock = Clock()
    stream = io.StringIO()
    bar = Progress(3_000, stream=stream, interactive=False, interval=0.0, clock=clock)
    bar.start("x")
    for t in (5.0, 6.0, 7.0):
        clock.now = t
        bar.advance(1_000)
    bar.finish()
    assert stream.getvalue().splitlines()[-1] == "predict: done 3,000/3,000 rows (100.0%) 429 rows/s elapsed 0:07"
