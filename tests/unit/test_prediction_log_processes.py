"""The prediction log across real processes: ``kill -9`` of a process writing at a high rate leaves only
readable Parquet holding whole batches, at most about one flush interval behind; two processes writing one
directory never share a file, and the reader reads both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from shipml.monitoring.logread import log_files, read_log

FLUSH_S = 0.2

#: A writer process: batches of BATCH rows with request ids "<tag>-<k>", submitted in a loop bounded in count
#: and time; each accepted batch is reported on stdout as "<k> <time>" before the next one is made.
WRITER = r"""
import sys, time
import numpy as np
from shipml.monitoring.log import LogBatch, PredictionLog
from shipml.package.signature import ColumnSpec, OutputSpec, Signature

directory, tag, count, seconds, flush, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), \
    float(sys.argv[5]), int(sys.argv[6])
sig = Signature(inputs=[ColumnSpec(name="x", dtype="float", pandas_dtype="float64"),
                        ColumnSpec(name="s", dtype="string", pandas_dtype="object")],
                input_kind="dataframe", outputs=OutputSpec(task="classification", classes=[0, 1], probabilities=True))
log = PredictionLog(directory, flush_interval_s=flush, max_file_rows=5000, max_queue_rows=200_000)
x = np.arange(rows, dtype=np.float64)
s = np.array([f"v{i}" for i in range(rows)], dtype=object)
p = np.tile([[0.25, 0.75]], (rows, 1))
y = np.ones(rows, dtype=np.int64)
end = time.monotonic() + seconds
print("ready", flush=True)
for k in range(count):
    if time.monotonic() > end:
        break
    now = time.time()
    batch = LogBatch(now, "m", "1.0.0", {"x": x, "s": s}, sig, y, p, [0, 1], [f"{tag}-{k}"], ["m"], ["stable"],
                     [(0, rows)], [0.001])
    if log.submit(batch):
        sys.stdout.write(f"{k} {now!r}\n")
        sys.stdout.flush()
    time.sleep(0.0005)
log.close()
print("done", flush=True)
"""


def start_writer(directory: Path, tag: str, count: int, seconds: float, rows: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(directory), tag, str(count), str(seconds),
                             str(FLUSH_S), str(rows)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())


@pytest.mark.slow
def test_kill_9_leaves_only_readable_whole_batches_at_most_a_flush_interval_behind(tmp_path: Path) -> None:
    rows = 20
    proc = start_writer(tmp_path, "w", count=200_000, seconds=60, rows=rows)
    accepted: dict[str, float] = {}
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (len(lines) < 3000 or len(log_files(tmp_path)) < 3):
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    killed_at = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    reader.join(timeout=30)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    for line in lines:
        if line in ("ready", "done"):
            continue
        k, stamp = line.split()
        accepted[f"w-{k}"] = float(stamp)
    assert len(accepted) >= 3000

    files = sorted(tmp_path.rglob("*.parquet"))
    committed = [f for f in files if not f.name.startswith(".")]
    assert committed
    for path in committed:  # every committed file opens and holds whole batches
        table = pq.read_table(path)
        per_request = Counter(table.column("request_id").to_pylist())
        assert set(per_request.values()) == {rows}, path
    present = Counter(read_log(tmp_path).column("request_id").to_pylist())
    assert set(present.values()) == {rows}
    assert set(present) <= set(accepted)  # nothing that was not submitted
    # everything submitted more than one flush interval (plus the time to write one flush, generously bounded
    # on a busy machine) before the kill is there
    margin = FLUSH_S + 2.0
    missing = [rid for rid, t in accepted.items() if t < killed_at - margin and rid not in present]
    assert not missing, (len(missing), len(accepted), len(present))


@pytest.mark.slow
def test_two_processes_writing_one_directory_never_share_a_file(tmp_path: Path) -> None:
    procs = {tag: start_writer(tmp_path, tag, count=300, seconds=30, rows=7) for tag in ("a", "b")}
    outputs = {}
    for tag, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs[tag] = [line for line in out.splitlines() if line not in ("ready", "done")]
    files = log_files(tmp_path)
    pids = {p.pid for p in procs.values()}
    by_pid: dict[int, set[str]] = {}
    for path in files:
        pid = int(path.stem.split("-")[2])
        assert pid in pids, path.name
        tags = {rid.split("-")[0] for rid in pq.read_table(path).column("request_id").to_pylist()}
        assert len(tags) == 1, (path.name, tags)  # one writer per file
        by_pid.setdefault(pid, set()).update(tags)
    assert len(by_pid) == 2 and all(len(t) == 1 for t in by_pid.values())
    table = read_log(tmp_path)
    ids = Counter(table.column("request_id").to_pylist())
    want = {f"{tag}-{line.split()[0]}" for tag, lines in outputs.items() for line in lines}
    assert set(ids) == want and set(ids.values()) == {7}
