"""The Dask engine, on dask.distributed: one task per part, submitted to a cluster (``address``) or to a local
cluster of single-threaded worker processes on 127.0.0.1. A worker process loads the model on its first part and
keeps it for every later one (see :func:`shipml.jobs.scoring.model_for`). Parts are scored exactly as the local
engine does, into the same work directory, so the rows are the same. As with Ray, inputs, registry and output
must be reachable under the same paths from every worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from shipml._optional import import_optional
from shipml.errors import ShipmlError
from shipml.jobs import scoring
from shipml.jobs.report import PartResult
from shipml.jobs.spec import JobSpec, PartSpec

OnResult = Callable[[PartResult], None]

#: How long to wait for a cluster named by its address to answer.
CONNECT_TIMEOUT = "30s"


def _distributed() -> Any:
    return import_optional("distributed", "dask", "dask[distributed]")


def score_on_worker(job: str, part: str) -> bytes:
    """A Dask task: score one part on whichever worker runs it (the model is cached per worker process)."""
    spec = JobSpec.from_json(job)
    scoring.model_for(spec)  # first: a thread limit only reaches the native libraries loaded when it is set
    with scoring.thread_limit(spec.threads_per_worker):
        return scoring.score_part(spec, PartSpec.from_json(part)).to_json()


def run_dask(job: JobSpec, parts: Sequence[PartSpec], workers: int | None, address: str | None,
             on_result: OnResult) -> None:
    distributed = _distributed()
    cluster = None
    if address is None:
        cluster = distributed.LocalCluster(n_workers=max(1, min(workers or 1, len(parts))), threads_per_worker=1,
                                           processes=True, host="127.0.0.1", dashboard_address=None)
        client = distributed.Client(cluster)
    else:
        try:
            client = distributed.Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:  # translated here, at the boundary
            raise ShipmlError(f"cannot connect to the Dask scheduler at {address}: {exc}") from exc
    try:
        job_text = job.to_json().decode()
        keys = [f"shipml-{job.key[:16]}-part-{p.index}" for p in parts]
        futures = client.map(score_on_worker, [job_text] * len(parts), [p.to_json().decode() for p in parts],
                             key=keys, pure=False)
        try:
            for future in distributed.as_completed(futures):
                on_result(PartResult.from_json(future.result()))
        finally:
            client.cancel(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
