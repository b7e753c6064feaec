"""podman for the end-to-end tests, set up as this machine kind needs it (docs: /work/shared/MACHINE-NOTES.md).

- runc instead of the default crun (which fails here on setrlimit/cgroups), with explicit ulimits, through a
  containers.conf that ``CONTAINERS_CONF`` points at;
- no image registry is reachable, so the base image is made locally: ``mmdebstrap`` a Debian bookworm minbase
  with python3, python3-venv, python3-pip and ca-certificates, then ``podman import`` it. It is built once and
  then reused for as long as podman's store keeps it (``podman image exists``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

BASE_IMAGE = "localhost/shipml-test-base:bookworm-py3"
DEBIAN_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]

[engine]
runtime = "runc"
"""


def available() -> bool:
    return shutil.which("podman") is not None


def environment(directory: Path) -> dict[str, str]:
    """os.environ plus CONTAINERS_CONF pointing at a runc containers.conf written into ``directory``."""
    conf = directory / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(env: Mapping[str, str], *args: str, timeout: float = 120,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], env=dict(env), capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def debian_mirror() -> str:
    """The bookworm mirror apt uses on this machine: /etc/apt/sources.list, else the deb822 .sources files."""
    sources = Path("/etc/apt/sources.list")
    if sources.is_file():
        for line in sources.read_text().splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line + " ")
            if m:
                return m.group(1)
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.+)$", stanza, flags=re.MULTILINE))
            if "bookworm" in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    return DEFAULT_MIRROR


def ensure_base_image(env: Mapping[str, str]) -> str:
    """The Debian minbase image with Debian's python3, built on first use (~1-2 min) and cached in podman."""
    if podman(env, "image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    with tempfile.TemporaryDirectory(prefix="shipml-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        built = subprocess.run(
            ["mmdebstrap", "--variant=minbase", f"--include={DEBIAN_PACKAGES}", "bookworm", str(rootfs),
             debian_mirror()],
            capture_output=True, text=True, timeout=600, check=False)
        if built.returncode != 0:
            raise AssertionError(f"mmdebstrap exited with {built.returncode}:\n{built.stderr[-3000:]}")
        podman(env, "import", str(rootfs), BASE_IMAGE, timeout=300)
    return BASE_IMAGE
