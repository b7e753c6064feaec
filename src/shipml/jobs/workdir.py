"""The work directory of a batch job: where finished parts wait, so that a killed job re-run with the same
arguments skips them.

It sits next to the output as ``.<output name>.shipml-<key>``, where the key hashes the job's arguments and the
model version: another model, other inputs (or the same paths changed since) or other options give another
directory, never a mix. A part is done when its ``.json`` result exists; its data files are renamed into place
before that, and every file is written under a temporary name first, so a kill leaves only temporary files,
which the next run removes. A lock file keeps two runs of the same job apart.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import filelock

from shipml.errors import ConflictError
from shipml.jobs.report import PartResult

TMP_SUFFIX = ".tmp"


def work_dir_for(output: Path, key: str) -> Path:
    return output.parent / f".{output.name}.shipml-{key[:16]}"


def part_stem(index: int) -> str:
    return f"part-{index:06d}"


def output_file(work: Path, index: int) -> Path:
    return work / f"{part_stem(index)}.arrow"


def rejects_file(work: Path, index: int) -> Path:
    return work / f"{part_stem(index)}.rejects.arrow"


def result_file(work: Path, index: int) -> Path:
    return work / f"{part_stem(index)}.json"


def tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse to fsync a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Move a fully written file to its final name in one step (never a half-written file under that name)."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_result(work: Path, result: PartResult) -> None:
    final = result_file(work, result.index)
    tmp = tmp_name(final)
    tmp.write_bytes(result.to_json())
    publish(tmp, final)


def finished(work: Path) -> dict[int, PartResult]:
    """The parts already done, by index."""
    done: dict[int, PartResult] = {}
    if not work.is_dir():
        return done
    for path in work.glob("part-*.json"):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            result = PartResult.from_json(path.read_bytes())
            done[result.index] = result
    return done


def remove_temporary(work: Path) -> None:
    for path in work.glob(f"*{TMP_SUFFIX}"):
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(work: Path) -> Iterator[None]:
    """Hold the job's lock (released by the OS if the process dies) or refuse to start a second run."""
    work.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(work / "job.lock"), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout as exc:
        raise ConflictError(f"another run of this job is in progress (lock {work / 'job.lock'})") from exc
    try:
        yield
    finally:
        lock.release()


def remove(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
