"""Which shipml goes into an image: this very source tree (as a wheel) when shipml runs from a checkout,
else the installed release from the package index."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

import orjson

from shipml.errors import DependencyError, ShipmlError

# What a src-layout project needs to build its wheel; the rest of a checkout (tests, .git, venvs) stays out.
_PROJECT_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in")
_PROJECT_GLOBS = ("README*", "LICENSE*", "COPYING*")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".mypy_cache", ".ruff_cache")


@dataclass(frozen=True)
class ShipmlInstall:
    version: str
    project_dir: Path | None = None  # a source checkout to build a wheel from; None: the release on the index

    def build_wheel(self, out_dir: Path, timeout_s: float = 300) -> Path:
        """``pip wheel --no-deps`` of a copy of the project (an in-tree build would leave build/ in the checkout)."""
        if self.project_dir is None:
            raise DependencyError("shipml is installed from a release: there is no source tree to build a wheel of")
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="shipml-wheel-") as tmp:
            src = Path(tmp) / "project"
            _copy_project(self.project_dir, src)
            cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out_dir), str(src)]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
            except subprocess.TimeoutExpired as exc:
                raise ShipmlError(f"building the shipml wheel took longer than {timeout_s:g}s") from exc
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
                raise ShipmlError(f"building the shipml wheel failed (pip exited with {done.returncode}):\n{tail}")
        wheels = sorted(out_dir.glob("shipml-*.whl"))
        if len(wheels) != 1:
            raise ShipmlError(f"building the shipml wheel left {len(wheels)} shipml wheels in {out_dir}, expected 1")
        wheels[0].chmod(0o644)
        return wheels[0]


def detect_install() -> ShipmlInstall:
    """How this shipml is installed: from a local directory (editable or not) that still holds its sources, or
    from a release."""
    try:
        dist = metadata.distribution("shipml")
    except metadata.PackageNotFoundError as exc:
        raise DependencyError("shipml has no installed distribution metadata: pip install it (or pip install -e"
                              " the checkout) before building an image") from exc
    return ShipmlInstall(dist.version, _source_dir(dist.read_text("direct_url.json")))


def shipml_requires() -> list[str]:
    """The requirements of the installed shipml (the one that goes into the image), markers and all."""
    try:
        return metadata.requires("shipml") or []
    except metadata.PackageNotFoundError:
        return []


def _source_dir(direct_url: str | None) -> Path | None:
    if not direct_url:
        return None
    try:
        info = orjson.loads(direct_url)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(info, dict) or "dir_info" not in info:
        return None  # installed from an archive or a VCS URL: use the release
    url = urlparse(str(info.get("url", "")))
    if url.scheme != "file":
        return None
    path = Path(unquote(url.path))
    return path if (path / "pyproject.toml").is_file() and (path / "src" / "shipml").is_dir() else None


def _copy_project(root: Path, dest: Path) -> None:
    dest.mkdir()
    for name in _PROJECT_FILES:
        if (root / name).is_file():
            shutil.copy2(root / name, dest / name)
    for pattern in _PROJECT_GLOBS:
        for path in root.glob(pattern):
            if path.is_file():
                shutil.copy2(path, dest / path.name)
    shutil.copytree(root / "src", dest / "src", ignore=_IGNORE)
