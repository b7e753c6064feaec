"""Start a real `shipml serve` process on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "server exited during start-up"
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("server never became ready")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.communicate(timeout=timeout)
        return self.proc.returncode


def start(registry: Path, tmp_path: Path, endpoints: list[dict[str, Any]] | None = None,
          stdout: Path | None = None, http: str | None = None, **overrides: Any) -> Server:
    """A server for ``endpoints`` (default: one endpoint ``clf`` serving model ``clf``) on the ``http`` backend
    (None: the default one); each keyword overrides a section of the spec (dicts are merged into the section).
    ``stdout``: a file for the access log."""
    port = free_port()
    spec: dict[str, Any] = {
        "registry": str(registry), "endpoints": endpoints or [{"name": "clf", "models": ["clf"]}],
        "server": {"host": "127.0.0.1", "port": port, "drain_delay_s": 0.5, "graceful_timeout_s": 10}}
    if http is not None:
        spec["server"]["http"] = http
    for key, value in overrides.items():
        spec[key] = value if not isinstance(value, dict) else {**spec.get(key, {}), **value}
    path = tmp_path / f"spec-{port}.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = stdout.open("wb") if stdout is not None else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "shipml.cli", "serve", "--spec", str(path)],
                            stdout=out, stderr=subprocess.PIPE)
    if stdout is not None:
        out.close()  # type: ignore[union-attr]
    server = Server(proc, port)
    try:
        server.wait_ready()
    except AssertionError as exc:
        if server.proc.poll() is None:
            server.proc.terminate()
        _, stderr = server.proc.communicate(timeout=30)
        tail = (stderr or b"").decode(errors="replace").strip().splitlines()[-15:]
        raise AssertionError(f"{exc}; the server's stderr ends with:\n" + "\n".join(tail)) from None
    return server
