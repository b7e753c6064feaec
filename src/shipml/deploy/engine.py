"""Run the container engine (podman, else docker) on a written build context, streaming its output.

``volumes`` and ``network`` go to the build's RUN steps - for instance the host CA bundle for pip behind a
TLS-inspecting proxy (the CLI's ``--build-volume``, env ``SHIPML_BUILD_VOLUMES``), or ``host`` networking where
containers must not use a bridge.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from shipml.deploy.container import BuildContext
from shipml.errors import DependencyError, ShipmlError, SpecError

ENGINES = ("podman", "docker")


class BuildFailed(ShipmlError):
    """The container engine failed: its exit code and the last lines it printed."""

    def __init__(self, message: str, returncode: int, tail: Sequence[str]) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.tail = list(tail)


def find_engine(preferred: str | None = None) -> str | None:
    """The path of podman, else docker (or of ``preferred`` only); None when there is none on PATH."""
    if preferred is not None and preferred not in ENGINES:
        raise SpecError(f"unknown container engine {preferred!r}: use one of {', '.join(ENGINES)}")
    for name in (preferred,) if preferred else ENGINES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def check_build_volumes(volumes: Sequence[str]) -> list[str]:
    """``HOST_PATH:CONTAINER_PATH[:ro]`` each, with a host path that exists."""
    for volume in volumes:
        parts = volume.split(":")
        mode_ok = len(parts) == 2 or (len(parts) == 3 and parts[2] in ("ro", "rw"))
        if not (mode_ok and parts[0] and parts[1].startswith("/")):
            raise SpecError(f"invalid build volume {volume!r}: expected HOST_PATH:CONTAINER_PATH[:ro]")
        if not Path(parts[0]).exists():
            raise SpecError(f"build volume {volume!r}: {parts[0]} does not exist")
    return list(volumes)


def build_command(engine: str, context: BuildContext, *, volumes: Sequence[str] = (),
                  network: str | None = None) -> list[str]:
    podman = Path(engine).name.startswith("podman")
    cmd = [engine, "build", "--tag", context.image, "--file", str(context.dockerfile)]
    if podman:
        cmd += ["--format", "docker"]  # the OCI format has no HEALTHCHECK; podman would drop it
    if volumes and not podman:
        raise SpecError("build volumes need podman: docker build cannot mount volumes into RUN steps")
    for volume in check_build_volumes(volumes):
        cmd += ["--volume", volume]
    if network is not None:
        cmd += ["--network", network]
    return [*cmd, str(context.directory)]


def run_engine(cmd: Sequence[str], *, on_line: Callable[[str], None] | None = None,
               timeout_s: float | None = None, keep: int = 30) -> None:
    """Run the engine, streaming its output line by line; a failure raises :class:`BuildFailed` with the exit
    code and the last ``keep`` lines. ``timeout_s`` kills a build that takes longer."""
    emit = on_line or (lambda line: print(line, file=sys.stderr, flush=True))
    tail: deque[str] = deque(maxlen=keep)
    killed = threading.Event()
    try:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise DependencyError(f"cannot run {cmd[0]}: {exc.strerror or exc}") from exc

    def kill() -> None:
        killed.set()
        proc.kill()

    timer = threading.Timer(timeout_s, kill) if timeout_s else None
    with proc:  # closes the pipe and reaps the process, whatever happens
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            for raw in proc.stdout or ():
                line = raw.decode("utf-8", "replace").rstrip("\n")
                tail.append(line)
                emit(line)
        except BaseException:  # an interrupt or a failing callback: do not leave the engine running
            proc.kill()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        returncode = proc.wait()
    if returncode != 0:
        why = f"was stopped after {timeout_s:g}s" if killed.is_set() else f"exited with {returncode}"
        raise BuildFailed(f"{Path(cmd[0]).name} {cmd[1] if len(cmd) > 1 else ''} {why}; last lines:\n"
                          + "\n".join(tail), returncode, list(tail))


def build_image(context: BuildContext, engine: str, *, volumes: Sequence[str] = (), network: str | None = None,
                on_line: Callable[[str], None] | None = None, timeout_s: float | None = None) -> str:
    """Build the image of a written context; returns its reference (name:tag)."""
    run_engine(build_command(engine, context, volumes=volumes, network=network), on_line=on_line,
               timeout_s=timeout_s)
    return context.image
