"""Hostile clients for end-to-end tests: connections that send their request a byte at a time, in a thread of
their own, only to 127.0.0.1, bounded in count and time."""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import pytest

HEAD = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


def raise_open_files(needed: int) -> None:
    """Raise this process's open-files limit (inherited by the servers it starts) to ``needed``; skip the test
    when the hard limit does not allow it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed or soft == resource.RLIM_INFINITY:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the open-files hard limit is {hard}, this test needs {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


class SlowClients:
    """``count`` connections, half sending their headers a byte every ``every_s`` without end, half a whole
    header block (Content-Length 100,000) and then the body a byte every ``every_s``; a connection the server
    closes or answers is opened again, so that ``count`` stay open as an attacker keeps them. Runs until the
    ``with`` block ends, ``limit_s`` at most."""

    def __init__(self, port: int, count: int, every_s: float = 0.5, limit_s: float = 60) -> None:
        self.port = port
        self.count = count
        self.every_s = every_s
        self.limit_s = limit_s
        self.open = 0
        self.opened = 0
        self.closed_by_server = 0
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> SlowClients:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(30)

    def wait_open(self, at_least: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while self.opened < at_least and time.monotonic() < deadline:
            time.sleep(0.05)

    async def _main(self) -> None:
        stop_at = time.monotonic() + self.limit_s
        connects = asyncio.Semaphore(100)
        await asyncio.gather(*(self._one(i % 2 == 0, stop_at, connects) for i in range(self.count)))

    def _done(self, stop_at: float) -> bool:
        return self._stop.is_set() or time.monotonic() >= stop_at

    async def _one(self, headers_only: bool, stop_at: float, connects: asyncio.Semaphore) -> None:
        while not self._done(stop_at):
            try:
                async with connects:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 10)
            except (TimeoutError, OSError):
                await asyncio.sleep(0.2)
                continue
            self.open += 1
            self.opened += 1
            try:
                writer.write(HEAD if headers_only else HEAD + b"Content-Length: 100000\r\n\r\n")
                while not self._done(stop_at):
                    try:
                        data = await asyncio.wait_for(reader.read(4096), self.every_s)
                    except TimeoutError:
                        writer.write(b"x" if headers_only else b" ")
                        continue
                    self.closed_by_server += 1
                    if data.startswith(b"HTTP/1.1 "):
                        status = int(data[9:12])
                        self.statuses[status] = self.statuses.get(status, 0) + 1
                    break
            except OSError:
                self.closed_by_server += 1
            finally:
                self.open -= 1
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


def read_until_closed(sock: socket.socket, deadline_s: float) -> tuple[bytes, bool]:
    """What the server sends on ``sock`` until it closes it (True) or ``deadline_s`` passes (False)."""
    data = b""
    stop_at = time.monotonic() + deadline_s
    while time.monotonic() < stop_at:
        sock.settimeout(max(0.01, stop_at - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False
