"""Batch prediction benchmark: ``shipml predict`` (local engine, 1 and 2 workers) against the in-process limit
(whole file in memory, one Booster.predict call, write the result) and a naive pandas loop (read_csv in chunks,
sklearn-wrapper predict_proba), on the same LightGBM model and data, in one run.

    .venv/bin/python bench/batch_bench.py                 # 5M rows, 3 repeats (~15 min on 2 cores)
    .venv/bin/python bench/batch_bench.py --rows 200000 --repeat 1   # a quick check

Data and model are generated into --data-dir (default: a temporary directory, removed at the end). Each
measurement runs in a fresh process; peak RSS is the peak of the sum over the process and its children, sampled
from /proc every 50 ms. Figures are medians over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MODEL = "bench-lgbm"
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- setup --------------------------------------------------------------------------------------------------

def setup(data: Path, rows: int) -> None:
    """The model of the server benchmark (LightGBM binary classifier, 200 trees, 31 leaves, 28 features,
    make_classification 100k rows, random_state=0) and ``rows`` rows to score, as Parquet and CSV."""
    import lightgbm as lgb
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq
    from sklearn.datasets import make_classification

    import shipml

    X, y = make_classification(n_samples=100_000, n_features=28, random_state=0)
    names = [f"f{i}" for i in range(28)]
    model = lgb.LGBMClassifier(n_estimators=200, num_leaves=31, random_state=0, verbose=-1)
    model.fit(X, y)
    registry = shipml.Registry(data / "registry")
    registry.save(model, MODEL, sample=X[:5000])
    (data / "model.pkl").write_bytes(pickle.dumps(model))
    schema = pa.schema([(n, pa.float64()) for n in names])
    chunk = 500_000
    with pq.ParquetWriter(data / "input.parquet", schema) as pw, \
            pa_csv.CSVWriter(str(data / "input.csv"), schema) as cw:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            Xc, _ = make_classification(n_samples=n, n_features=28, random_state=1 + start // chunk)
            table = pa.table(dict(zip(names, np.asarray(Xc).T, strict=True)), schema=schema)
            pw.write_table(table, row_group_size=1 << 20)
            cw.write_table(table)
    # One call with ~5M rows would give default 1Mi-row groups; writing by chunks gives 500k-row groups,
    # which is what a writer flushing every 500k rows (Spark, Dask) produces.


# -- the measured programs (each runs in its own process: `python batch_bench.py run KIND DATA OUT`) ---------

def run_inprocess(data: Path, out: Path, threads: int) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    import shipml

    model = shipml.load_model(f"{MODEL}", registry=data / "registry")
    booster = model.runtime_model.booster  # type: ignore[attr-defined]
    table = pq.read_table(data / "input.parquet")
    X = np.column_stack([table.column(i).to_numpy() for i in range(table.num_columns)])
    del table
    p = booster.predict(X, num_threads=threads)
    proba = np.column_stack([1 - p, p])
    pq.write_table(pa.table({"prediction": proba.argmax(axis=1), "proba_0": proba[:, 0], "proba_1": proba[:, 1]}),
                   out)
    return len(X)


def run_naive(data: Path, out: Path) -> int:
    import pandas as pd

    model = pickle.loads((data / "model.pkl").read_bytes())
    pieces = []
    n = 0
    for chunk in pd.read_csv(data / "input.csv", chunksize=100_000):
        proba = model.predict_proba(chunk)
        pieces.append(pd.DataFrame({"prediction": proba.argmax(axis=1), "proba_0": proba[:, 0],
                                    "proba_1": proba[:, 1]}))
        n += len(chunk)
    pd.concat(pieces).to_parquet(out)
    return n


def run_shipml(data: Path, out: Path, workers: int) -> int:
    import shipml.jobs

    report = shipml.jobs.predict_file(MODEL, data / "input.parquet", out, registry=data / "registry", proba=True,
                                      workers=workers, quiet=True)
    if report.rows_read != report.rows_scored:
        raise SystemExit(f"rows rejected: {report.to_dict()}")
    return report.rows_read


def child_main(kind: str, data: Path, out: Path) -> None:
    started = time.perf_counter()
    if kind == "inprocess-1t":
        rows = run_inprocess(data, out, threads=1)
    elif kind == "inprocess-all":
        rows = run_inprocess(data, out, threads=0)
    elif kind == "naive":
        rows = run_naive(data, out)
    else:
        rows = run_shipml(data, out, workers=int(kind.split("-")[1]))
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))


# -- measuring ------------------------------------------------------------------------------------------------

def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        rss[pid] = int(fields[21]) * PAGE
    total = 0
    for pid, resident in rss.items():
        p, hops = pid, 0
        while p not in (0, 1) and hops < 64:
            if p == root:
                total += resident
                break
            p, hops = parents.get(p, 0), hops + 1
    return total


def measure(kind: str, data: Path, timeout: float) -> dict[str, Any]:
    out = data / f"out-{kind}.parquet"
    proc = subprocess.Popen([sys.executable, __file__, "run", kind, str(data), str(out)], stdout=subprocess.PIPE,
                            text=True)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.05):
            peak = max(peak, _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    finally:
        stop.set()
        sampler.join(timeout=5)
        proc.kill()
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = peak / 2**20
    out.unlink(missing_ok=True)
    return result


KINDS = ["inprocess-1t", "inprocess-all", "naive", "shipml-1", "shipml-2"]
LABELS = {
    "inprocess-1t": "in-process limit, 1 thread (read all, 1 predict call, write)",
    "inprocess-all": "in-process limit, all threads",
    "naive": "naive pandas loop (read_csv chunks + predict_proba)",
    "shipml-1": "shipml predict --workers 1",
    "shipml-2": "shipml predict --workers 2",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=None, help="keep data here (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per measured run")
    args = parser.parse_args()
    data = args.data_dir or Path(tempfile.mkdtemp(prefix="shipml-batch-bench-"))
    data.mkdir(parents=True, exist_ok=True)
    try:
        if not (data / "input.parquet").is_file():
            t = time.perf_counter()
            setup(data, args.rows)
            print(f"generated {args.rows:,} rows in {time.perf_counter() - t:.0f}s into {data}", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
        for i in range(args.repeat):
            for kind in KINDS:
                r = measure(kind, data, args.timeout)
                runs[kind].append(r)
                print(f"  repeat {i + 1} {kind:14s} {r['seconds']:7.1f}s {r['rows'] / r['seconds']:>10,.0f} rows/s"
                      f" peak RSS {r['peak_rss_mb']:6.0f} MB", flush=True)
        report(runs, args.rows)
    finally:
        if args.data_dir is None:
            shutil.rmtree(data, ignore_errors=True)


def report(runs: dict[str, list[dict[str, Any]]], rows: int) -> None:
    med = {k: statistics.median(r["rows"] / r["seconds"] for r in v) for k, v in runs.items()}
    rss = {k: statistics.median(r["peak_rss_mb"] for r in v) for k, v in runs.items()}
    secs = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    print(f"\n{rows:,} rows, medians of {len(next(iter(runs.values())))} run(s)\n")
    print(f"| {'run':62s} | {'seconds':>8s} | {'rows/s':>10s} | {'peak RSS MB':>11s} |")
    print(f"|{'-' * 64}|{'-' * 10}|{'-' * 12}|{'-' * 13}|")
    for k in KINDS:
        print(f"| {LABELS[k]:62s} | {secs[k]:8.1f} | {med[k]:10,.0f} | {rss[k]:11,.0f} |")
    print()
    print(f"1 worker / in-process limit (1 thread): {med['shipml-1'] / med['inprocess-1t']:.1%} (target >= 85%)")
    print(f"2 workers / 1 worker:                   {med['shipml-2'] / med['shipml-1']:.2f}x (target >= 1.7x)")
    print(f"2 workers / in-process limit (all threads): {med['shipml-2'] / med['inprocess-all']:.1%}")
    print(f"peak RSS shipml 1 / 2 workers: {rss['shipml-1']:.0f} / {rss['shipml-2']:.0f} MB (target < 1024);"
          f" in-process limit: {rss['inprocess-1t']:.0f} MB")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "run":
        child_main(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        main()
