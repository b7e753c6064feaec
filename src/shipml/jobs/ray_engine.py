"""The Ray engine, on Ray Data: the job's parts become a dataset of part descriptions, mapped by a fixed pool of
actors, each of which loads the model once (in its constructor) and scores the parts it is given exactly as
the local engine does, writing to the same work directory. So the rows are the same, and a job killed on the
cluster resumes on the cluster or locally. The inputs, the registry and the output's directory must be
reachable under the same paths from every node (one machine, or a shared filesystem).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from shipml._optional import import_optional
from shipml.errors import ShipmlError
from shipml.jobs import scoring
from shipml.jobs.report import PartResult
from shipml.jobs.spec import JobSpec, PartSpec

ACTORS_START_TIMEOUT_S = 300

OnResult = Callable[[PartResult], None]


def _ray() -> Any:
    import_optional("ray.data", "ray", "ray[data]")
    return import_optional("ray", "ray", "ray[data]")


class PartScorer:
    """A Ray Data actor: the model is loaded when the actor starts, then every part it is handed re-uses it."""

    def __init__(self, job: str) -> None:
        self.job = JobSpec.from_json(job)
        scoring.limit_process_threads(self.job.threads_per_worker)
        scoring.model_for(self.job)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        with scoring.thread_limit(self.job.threads_per_worker):
            for text in batch["part"]:
                part = PartSpec.from_json(str(text))
                results.append(scoring.score_part(self.job, part).to_json().decode())
        return {"result": np.asarray(results, dtype=object)}


def cluster_cpus(address: str | None) -> int:
    ray = _ray()
    started = _connect(ray, address)
    try:
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    finally:
        if started:
            ray.shutdown()


def _connect(ray: Any, address: str | None) -> bool:
    """Join the cluster at ``address`` (or start a local one); True when this call did it."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                 configure_logging=False)
    except Exception as exc:  # Ray's own errors, translated here at the boundary
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ShipmlError(f"cannot connect to {where}: {type(exc).__name__}: {exc}") from exc
    return True


def run_ray(job: JobSpec, parts: Sequence[PartSpec], workers: int | None, address: str | None,
            on_result: OnResult) -> None:
    ray = _ray()
    started = _connect(ray, address)
    try:
        size = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        size = max(1, min(size, len(parts)))
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        # every worker asked for starts before the first part is handed out: else the first actor up may score
        # everything while the others are still importing (seen on a busy 2-core machine)
        context.wait_for_min_actors_s = ACTORS_START_TIMEOUT_S
        items = [{"part": p.to_json().decode()} for p in parts]
        dataset = ray.data.from_items(items, override_num_blocks=len(parts))
        scored = dataset.map_batches(
            PartScorer, fn_constructor_kwargs={"job": job.to_json().decode()}, batch_size=1,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=size), num_cpus=1,
        )
        try:
            for row in scored.iter_rows():
                on_result(PartResult.from_json(str(row["result"]).encode()))
        except ray.exceptions.GetTimeoutError as exc:
            raise ShipmlError(f"the Ray cluster did not start {size} worker(s) within {ACTORS_START_TIMEOUT_S} s:"
                              " does it have a free CPU for each?") from exc
    finally:
        if started:
            ray.shutdown()
