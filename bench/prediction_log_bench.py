"""The prediction log's two costs: ``PredictionLog.submit`` (paid in the server's worker thread for every batch)
and the writer thread's rows per second (Arrow conversion + zstd Parquet + fsync + rename), for single-row
batches and for 64-row batches of 16 requests. A signature of 8 float inputs and 1 string, a binary classifier
with probabilities.

    .venv/bin/python bench/prediction_log_bench.py              # 200,000 single-row batches, 3,000 of 64 rows
    .venv/bin/python bench/prediction_log_bench.py --calls 50000
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from shipml.monitoring.log import LogBatch, PredictionLog
from shipml.package.signature import ColumnSpec, OutputSpec, Signature

SIGNATURE = Signature(
    inputs=[ColumnSpec(name=f"x{i}", dtype="float", pandas_dtype="float64") for i in range(8)]
    + [ColumnSpec(name="s", dtype="string", pandas_dtype="object")],
    input_kind="dataframe", outputs=OutputSpec(task="classification", classes=[0, 1], probabilities=True))


def batch(n: int, k: int, per_request: int) -> LogBatch:
    requests = max(1, n // per_request)
    spans = [(j * per_request, min(n, (j + 1) * per_request)) for j in range(requests)]
    inputs = {f"x{i}": np.random.default_rng(i).random(n) for i in range(8)}
    inputs["s"] = np.array(["abc"] * n, dtype=object)
    return LogBatch(time.time(), "m", "1.0.0", inputs, SIGNATURE, np.ones(n, dtype=np.int64),
                    np.tile([[0.3, 0.7]], (n, 1)), [0, 1], [f"r{k}-{j}" for j in range(requests)],
                    ["m"] * requests, ["stable"] * requests, spans, [0.001] * requests)


def measure(batches: list[LogBatch], label: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        log = PredictionLog(directory, flush_interval_s=3600, max_queue_rows=10**8, max_file_rows=10**8)
        started = time.perf_counter()
        for b in batches:
            log.submit(b)
        per_call = (time.perf_counter() - started) / len(batches)
        started = time.perf_counter()
        log.flush(timeout_s=3600)
        seconds = time.perf_counter() - started
        log.close()
        rows = log.written_rows
        print(f"{label:<34} submit {per_call * 1e6:6.2f} us/call   writer {rows:>9,} rows in {seconds:6.2f} s"
              f" = {rows / seconds:>9,.0f} rows/s ({log.files_written} file(s))")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000, help="single-row batches")
    parser.add_argument("--big", type=int, default=3_000, help="64-row batches")
    args = parser.parse_args()
    one = batch(1, 0, 1)
    measure([one] * args.calls, f"{args.calls:,} single-row batches")
    measure([batch(64, k, 4) for k in range(args.big)], f"{args.big:,} batches of 64 rows (16 req)")


if __name__ == "__main__":
    main()
