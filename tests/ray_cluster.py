"""A real two-node Ray cluster on loopback addresses, for the tests that need one (batch engines, Ray Serve).

Each node is ``ray start --block`` in its own process group with its own temp dir and free ports, so several
clusters can run on one machine; it is stopped by SIGTERM to that ``ray start`` alone (it drains the node and
stops its own processes), never by ``ray stop``, which would stop every Ray node on the machine.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT = 90.0
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "5"}


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def node_ports(host: str) -> list[str]:
    """Every port a node listens on, chosen free on its own address (other Ray clusters may run here too)."""
    names = ["node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port"]
    return [f"--{name}={free_port(host)}" for name in names] + ["--min-worker-port=0", "--max-worker-port=0"]


def start_node(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``ray start --block`` in its own process group, returned once the node runs."""
    with log.open("wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--block", *args], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=ENV)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    stop_node(proc)
    raise RuntimeError(f"ray did not start: {log.read_text(errors='replace')[-3000:]}")


def stop_node(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to `ray start` alone (signalling the whole group at once would stop the GCS under a draining
    node, which then waits out its drain timeout); whatever is left of the group afterwards is killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def processes_mentioning(text: str) -> list[str]:
    """Command lines of the live processes that mention ``text`` (a cluster's temp dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def wait_gone(text: str, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    left = processes_mentioning(text)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_mentioning(text)
    return left


def two_node_cluster(head_ip: str, node_ip: str, head_args: tuple[str, ...] = ()) -> Iterator[str]:
    """Start a head on ``head_ip`` and a second node on ``node_ip`` (one CPU each), yield the head's address,
    then stop both and fail if any of their processes is left. For module-scoped fixtures."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed")
    temp = Path(tempfile.mkdtemp(prefix="shipml-ray-", dir="/tmp"))  # short: Ray's socket paths must fit
    port = free_port(head_ip)
    common = ["--num-cpus=1", "--disable-usage-stats", f"--temp-dir={temp}"]
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.append(start_node(["--head", f"--node-ip-address={head_ip}", f"--port={port}",
                                   "--include-dashboard=false", *head_args, *common, *node_ports(head_ip)],
                                  temp / "head.log"))
        started.append(start_node([f"--address={head_ip}:{port}", f"--node-ip-address={node_ip}", *common,
                                   *node_ports(node_ip)], temp / "node.log"))
        yield f"{head_ip}:{port}"
    finally:
        for proc in reversed(started):
            stop_node(proc)
        left = wait_gone(str(temp))
        shutil.rmtree(temp, ignore_errors=True)
    assert not left, f"Ray processes left behind: {left}"
