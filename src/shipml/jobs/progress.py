"""Progress of a batch job: a bar redrawn in place on a terminal (rows done, rows/s, ETA), a plain line every
``interval`` seconds otherwise (logs), or nothing (``quiet``). Updates may come from any thread.

The rate is measured over the arrivals of the last :data:`RATE_WINDOW_S` seconds, from the first rows done on:
the time workers take to start and load the model is not spread over the rows (a job whose first batch came after
10 s of start-up used to show an ETA of days). Until the arrivals span :data:`MIN_RATE_SPAN_S`, no rate and no ETA
are shown at all. The last line gives the job's overall rate.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

_BAR = 24
_REDRAW = 0.1  # seconds between two redraws of the bar
#: the rate is that of the rows done over about this many seconds, up to now
RATE_WINDOW_S = 30.0
#: no rate, and no ETA, before the rows done so far arrived over at least this many seconds
MIN_RATE_SPAN_S = 1.0


def duration(seconds: float) -> str:
    """``0:07``, ``12:30``, ``71:02:05``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Counts rows done against an estimated total (exact for Parquet, from the byte size for text files)."""

    def __init__(self, total: int, *, stream: TextIO | None = None, interactive: bool | None = None,
                 interval: float = 10.0, quiet: bool = False, label: str = "predict",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = max(0, total)
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.interactive = self._is_tty() if interactive is None else interactive
        self.interval = interval
        self.label = label
        self.done = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._last = float("-inf")
        self._samples: deque[tuple[float, int]] = deque()  # (time, rows done then), oldest first

    def _is_tty(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def start(self, message: str) -> None:
        if not self.quiet:
            self._write(f"{self.label}: {message}\n")
        self._start = self._clock()

    def skip(self, rows: int) -> None:
        """Rows done by an earlier run (counted, but not in the rate)."""
        with self._lock:
            self.total = max(self.total - rows, 0)

    def advance(self, rows: int) -> None:
        with self._lock:
            self.done += rows
            now = self._clock()
            self._samples.append((now, self.done))
            while len(self._samples) > 2 and self._samples[1][0] <= now - RATE_WINDOW_S:
                self._samples.popleft()  # the oldest kept is the last one at or before the window's start
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
                self._show(self._clock(), final=True)

    def rate(self, now: float | None = None) -> float | None:
        """Rows per second over the recent arrivals, or None while they span less than MIN_RATE_SPAN_S."""
        if len(self._samples) < 2:
            return None
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        if t1 - t0 < MIN_RATE_SPAN_S or d1 <= d0:
            return None
        now = t1 if now is None else max(now, t1)
        return (d1 - d0) / (now - t0)

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds until the estimated total is done at the current rate; None while no rate is known."""
        rate = self.rate(now)
        return None if rate is None else max(self.total - self.done, 0) / rate

    def line(self, now: float | None = None, *, final: bool = False) -> str:
        """The status, e.g. ``1,200,000/5,000,000 rows (24.0%) 310,000 rows/s ETA 0:12 elapsed 0:04``; before a
        rate is known, without rate and ETA; when ``final``, with the overall rate and no ETA."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._start, 0.0)
        total = max(self.total, self.done)
        share = f" ({100.0 * self.done / total:.1f}%)" if total else ""
        speed = ""
        if final:
            speed = f" {self.done / elapsed:,.0f} rows/s" if elapsed > 0 else ""
        else:
            rate = self.rate(now)
            if rate is not None:
                speed = f" {rate:,.0f} rows/s ETA {duration(max(total - self.done, 0) / rate)}"
        return f"{self.done:,}/{total:,} rows{share}{speed} elapsed {duration(elapsed)}"

    def _show(self, now: float, *, final: bool) -> None:
        text = self.line(now, final=final)
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
