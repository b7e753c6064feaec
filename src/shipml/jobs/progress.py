"""Progress of a batch job: a bar redrawn in place on a terminal (rows done, rows/s, ETA), a plain line every
``interval`` seconds otherwise (logs), or nothing (``quiet``). Updates may come from any thread."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

_BAR = 24
_REDRAW = 0.1  # seconds between two redraws of the bar


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Counts rows done against an estimated total (exact for Parquet, from the byte size for text files)."""

    def __init__(self, total: int, *, stream: TextIO | None = None, interactive: bool | None = None,
                 interval: float = 10.0, quiet: bool = False, label: str = "predict") -> None:
        self.total = max(0, total)
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.interactive = self._is_tty() if interactive is None else interactive
        self.interval = interval
        self.label = label
        self.done = 0
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last = float("-inf")
        self._drawn = False

    def _is_tty(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def start(self, message: str) -> None:
        if not self.quiet:
            self._write(f"{self.label}: {message}\n")
            self._start = time.monotonic()

    def skip(self, rows: int) -> None:
        """Rows done by an earlier run (counted, but not in the rate)."""
        with self._lock:
            self.total = max(self.total - rows, 0)

    def advance(self, rows: int) -> None:
        with self._lock:
            self.done += rows
            now = time.monotonic()
            wait = _REDRAW if self.interactive else self.interval
            if self.quiet or now - self._last < wait:
                return
            self._last = now
            self._show(now, final=False)

    def finish(self) -> None:
        """The last line: the job is done, so what was done is the total (text inputs only had an estimate)."""
        with self._lock:
            self.total = self.done
            if not self.quiet:
                self._show(time.monotonic(), final=True)

    def line(self, now: float | None = None) -> str:
        """The status, e.g. ``1,200,000/5,000,000 rows (24.0%) 310,000 rows/s ETA 0:12``."""
        elapsed = max((time.monotonic() if now is None else now) - self._start, 1e-9)
        rate = self.done / elapsed
        total = max(self.total, self.done)
        share = f" ({100.0 * self.done / total:.1f}%)" if total else ""
        eta = _duration((total - self.done) / rate) if rate > 0 else "?"
        return f"{self.done:,}/{total:,} rows{share} {rate:,.0f} rows/s ETA {eta} elapsed {_duration(elapsed)}"

    def _show(self, now: float, *, final: bool) -> None:
        text = self.line(now)
        if self.interactive:
            total = max(self.total, self.done)
            filled = _BAR if final or not total else int(_BAR * self.done / total)
            bar = "#" * filled + "-" * (_BAR - filled)
            self._write(f"\r{self.label} [{bar}] {text}\x1b[K" + ("\n" if final else ""))
        else:
            self._write(f"{self.label}: {'done ' if final else ''}{text}\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
