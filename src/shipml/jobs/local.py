"""The local engine: parts scored by a pool of processes on this machine (or in this process for one worker).

Workers read their parts from the input files themselves and write their results to the work directory: only
part descriptions and small results cross process boundaries, never data. Each worker process loads the model
once (on its first part) and runs it single-threaded; a worker dies with the job (Linux parent-death signal), so
a killed job leaves no orphan still writing parts.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from shipml.jobs import scoring
from shipml.jobs.report import PartResult
from shipml.jobs.spec import JobSpec, PartSpec

OnResult = Callable[[PartResult], None]
OnRows = Callable[[int], None]

_PR_SET_PDEATHSIG = 1
_worker_state: dict[str, Any] = {}  # in a worker process: its queue of rows done, set by _init_worker


def run_local(job: JobSpec, parts: Sequence[PartSpec], workers: int, on_result: OnResult,
              on_rows: OnRows) -> None:
    if workers <= 1 or len(parts) <= 1:
        try:
            for result in scoring.run_parts(job, list(parts), on_rows):
                on_result(result)
        finally:
            scoring.forget()
        return
    _run_pool(job, parts, min(workers, len(parts)), on_result, on_rows)


def _run_pool(job: JobSpec, parts: Sequence[PartSpec], workers: int, on_result: OnResult,
              on_rows: OnRows) -> None:
    context = multiprocessing.get_context("spawn")  # no fork: the parent may hold threads (Arrow, OpenMP)
    rows: Any = context.Queue()
    drain = threading.Thread(target=_drain, args=(rows, on_rows), name="shipml-progress", daemon=True)
    drain.start()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                               initargs=(os.getpid(), job.threads_per_worker, rows))
    try:
        pending: set[Future[PartResult]] = {pool.submit(_score, job, part) for part in parts}
        for _ in range(len(parts) + 1):
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                on_result(future.result())  # re-raises a worker's error here
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        rows.put(None)
        drain.join(timeout=10)
        rows.close()
        rows.join_thread()


def _drain(rows: Any, on_rows: OnRows) -> None:
    """Forward the workers' row counts to the progress display until the pool is done (None)."""
    while True:
        try:
            n = rows.get(timeout=1.0)
        except queue.Empty:
            continue
        except (EOFError, OSError):
            return
        if n is None:
            return
        on_rows(n)


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _init_worker(parent: int, threads: int, rows: Any) -> None:
    _die_with_parent(parent)
    scoring.limit_process_threads(threads)
    _worker_state["rows"] = rows


def _report_rows(n: int) -> None:
    rows = _worker_state.get("rows")
    if rows is not None:
        rows.put(n)


def _score(job: JobSpec, part: PartSpec) -> PartResult:
    scoring.lean_imports(job)
    scoring.model_for(job)  # first: a thread limit only reaches the native libraries loaded when it is set
    with scoring.thread_limit(job.threads_per_worker):
        return scoring.score_part(job, part, _report_rows)
