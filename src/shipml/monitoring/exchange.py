"""What the monitors of several worker processes (``shipml serve --workers N``) share: each writes its own
state (window counts, labelled rows, recent scores, active alerts) to a file of its own in a directory they all
know, every few seconds; whoever answers ``/drift``, ``/performance`` or ``/metrics`` merges its own state with the
files of the other live workers. One worker at a time (the holder of a lock file) evaluates the alert rules, so a
webhook hears of an alert once, not once per worker.

The files are plain JSON with base64 blobs, parsed strictly (the blobs' own ``from_bytes`` refuse what they did
not write): a file another process could plant is never executed, only refused.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Exchange", "PeerState"]

log = logging.getLogger("shipml.monitoring")

PREFIX = "monitor-"
SUFFIX = ".json"
LOCK = "alerts.lock"


class PeerState:
    """One other worker's published state: per model key ("name:version"), named blobs; and its active alerts."""

    def __init__(self, pid: int, models: dict[str, dict[str, bytes]], alerts: list[dict[str, Any]]) -> None:
        self.pid = pid
        self.models = models
        self.alerts = alerts


class Exchange:
    """``directory``: shared by the workers of one server (the metrics directory of ``--workers``);
    ``stale_s``: a file not rewritten for that long belongs to a worker that is gone."""

    def __init__(self, directory: Path, *, stale_s: float = 30.0) -> None:
        self.directory = Path(directory)
        self.stale_s = stale_s
        self.pid = os.getpid()
        self._lock_fd: int | None = None

    @property
    def own_file(self) -> Path:
        return self.directory / f"{PREFIX}{self.pid}{SUFFIX}"

    def publish(self, models: dict[str, dict[str, bytes]], alerts: list[dict[str, Any]]) -> None:
        """Write this worker's state (atomically: a reader sees the old file or the new one)."""
        body = orjson.dumps({
            "pid": self.pid,
            "time": time.time(),
            "models": {key: {name: base64.b64encode(blob).decode() for name, blob in blobs.items()}
                       for key, blobs in models.items()},
            "alerts": alerts,
        })
        tmp = self.directory / f".{PREFIX}{self.pid}.tmp"
        try:
            tmp.write_bytes(body)
            os.replace(tmp, self.own_file)
        except OSError as exc:
            log.warning("cannot publish the monitor's state to %s: %s", self.directory, exc.strerror or exc)

    def peers(self) -> Iterator[PeerState]:
        """The published states of the other live workers (a malformed file is skipped with a warning)."""
        now = time.time()
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            if not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
                continue
            digits = name[len(PREFIX):-len(SUFFIX)]
            if not digits.isdigit() or int(digits) == self.pid or not _alive(int(digits)):
                continue
            path = self.directory / name
            try:
                if now - path.stat().st_mtime > self.stale_s:
                    continue
                peer = _parse(path.read_bytes(), int(digits))
            except (OSError, ValueError) as exc:
                log.warning("skipping the monitor state file %s: %s", name, exc)
                continue
            yield peer

    def lead(self) -> bool:
        """Whether this worker evaluates the alert rules: it holds the lock file (taken once, kept for life;
        when the holder exits, the next worker to ask takes it)."""
        if self._lock_fd is not None:
            return True
        fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.own_file.unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse(data: bytes, pid: int) -> PeerState:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("pid") != pid:
        raise ValueError("not a monitor state of that process")
    models = doc.get("models")
    alerts = doc.get("alerts")
    if not isinstance(models, dict) or not isinstance(alerts, list) or \
            not all(isinstance(a, dict) for a in alerts):
        raise ValueError("malformed monitor state")
    out: dict[str, dict[str, bytes]] = {}
    for key, blobs in models.items():
        if not isinstance(blobs, dict) or not all(isinstance(v, str) for v in blobs.values()):
            raise ValueError(f"malformed state of {key!r}")
        try:
            out[str(key)] = {str(n): base64.b64decode(v, validate=True) for n, v in blobs.items()}
        except ValueError as exc:
            raise ValueError(f"malformed blob of {key!r}: {exc}") from None
    return PeerState(pid, out, alerts)
