"""Served LightGBM models switch to their compiled form (``shipml[compiled]``: lleaves), 5-7x faster per row.

The server starts answering with LightGBM's own Booster at once. Then, per model, in the background: the compiled
library comes from this machine's cache, or is compiled in a separate, lower-priority process (minutes for large
models; the server's own process never holds its GIL for it). The model switches only when the compiled form
gives the same outputs as the Booster on the golden sample and on rows drawn across every input's range, nulls
and out-of-range values included; else it stays on the Booster and the log says why. Several workers compiling
the same model wait for one another on a lock file, so it is compiled once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shipml.errors import ShipmlError
from shipml.package.loaded import PERMISSIVE
from shipml.package.manifest import MODEL_DIR
from shipml.package.validation import check

if TYPE_CHECKING:
    from shipml.protocol.dataplane import ModelRunner
    from shipml.runtimes.lightgbm import LightGBMLoaded
    from shipml.runtimes.lightgbm_compiled import CompiledLightGBM

log = logging.getLogger("shipml.server")
PARITY_ROWS = 2000


def candidate(runner: ModelRunner) -> tuple[Path, LightGBMLoaded] | None:
    """The model text file and runtime of a served model that could run compiled, else None."""
    from shipml.runtimes.lightgbm import FILE, LightGBMLoaded

    model = runner.model
    loaded = model.runtime_model
    if model.manifest.runtime.name != "lightgbm" or not isinstance(loaded, LightGBMLoaded):
        return None
    if loaded.input_format != "matrix" or loaded.compiled:
        return None
    return model.path / MODEL_DIR / FILE, loaded


def parity_sample(runner: ModelRunner, rows: int = PARITY_ROWS, seed: int = 0) -> np.ndarray:
    """The golden inputs, and rows drawn across each input's recorded range (a little beyond it, too), with
    some nulls: where a compiled model must agree with the Booster before it serves."""
    model = runner.model
    golden = check(model.golden()["inputs"], model.signature, PERMISSIVE).table.matrix()
    rng = np.random.default_rng(seed)
    columns = []
    for spec in model.signature.inputs:
        low = float(spec.min) if spec.min is not None else -1e6
        high = float(spec.max) if spec.max is not None else 1e6
        span = (high - low) or 1.0
        values = rng.uniform(low - 0.1 * span, high + 0.1 * span, rows)
        if spec.dtype == "int":
            values = np.round(values)
        values[rng.random(rows) < 0.05] = np.nan
        columns.append(values)
    drawn = np.column_stack(columns) if columns else np.empty((rows, 0))
    return np.ascontiguousarray(np.vstack([golden, drawn]), dtype=np.float64)


async def switch_when_compiled(runner: ModelRunner) -> bool:
    """Compile (or take from the cache) and switch ``runner``'s model when it agrees; True when it switched.
    ``runner.compile_status`` says where it is. Never raises: a model that cannot be compiled keeps serving with
    the Booster."""
    found = candidate(runner)
    if found is None:
        runner.compile_status = "not applicable (only LightGBM models on numeric inputs)"
        return False
    model_file, loaded = found
    from shipml.runtimes.lightgbm_compiled import available

    if not available():  # looks for the packages and a linker: imports nothing
        runner.compile_status = "unavailable: pip install 'shipml[compiled]'"
        return False
    ref = runner.model.ref
    runner.compile_status = "compiling"
    try:
        compiled = await _cached_or_compiled(model_file, ref)
        if compiled is None:
            runner.compile_status = "not compiled: no trusted library in the cache (see the log)"
            return False
        sample = await asyncio.to_thread(parity_sample, runner)
        switched = await runner.batcher.call(lambda: loaded.use_compiled(compiled, sample))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a compiled model is an optimisation: never take the server down for it
        # The status is shown to clients (GET /models/NAME): why the model cannot be compiled when shipml says it
        # for clients (an UnsupportedModelError: its objective, its trees), else the exception's type only - its
        # message (paths of the cache, the compiler's output) goes to the log.
        if isinstance(exc, ShipmlError) and exc.status < 500:
            runner.compile_status = f"not compiled: {exc.public_message}"[:500]
        else:
            runner.compile_status = f"not compiled: {type(exc).__name__} (the server log has the details)"
        log.warning("model %s stays on LightGBM: compiling failed (%s: %s)", ref, type(exc).__name__, exc,
                    exc_info=exc)
        return False
    if switched:
        runner.compile_status = "compiled"
        log.info("model %s now predicts with its compiled form", ref)
    else:
        runner.compile_status = "not compiled: its compiled form gives other outputs than LightGBM"
        log.warning("model %s stays on LightGBM: its compiled form gives other outputs", ref)
    return bool(switched)


async def _cached_or_compiled(model_file: Path, ref: str) -> CompiledLightGBM | None:
    from shipml.runtimes.lightgbm_compiled import cache_dir, cache_key, load_cached

    compiled = await asyncio.to_thread(load_cached, model_file)
    if compiled is not None:
        return compiled
    cache = cache_dir()
    key = cache_key(model_file.read_bytes())
    fd = os.open(cache / f"{key}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)  # another worker may be compiling it
        compiled = await asyncio.to_thread(load_cached, model_file)
        if compiled is None:
            log.info("model %s: compiling in the background (it serves meanwhile)", ref)
            await _compile_in_subprocess(model_file)
            compiled = await asyncio.to_thread(load_cached, model_file)
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    return compiled


async def _compile_in_subprocess(model_file: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shipml.runtimes.lightgbm_compiled", str(model_file),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    with contextlib.suppress(OSError):  # below the server's own priority: serving comes first
        os.setpriority(os.PRIO_PROCESS, proc.pid, 10)
    try:
        _, err = await proc.communicate()
    except asyncio.CancelledError:  # the server is stopping
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        why = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise RuntimeError(why[0][:300])
