"""Capture the environment a model was saved in, and compare it with the one loading it."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Literal

from packaging.version import InvalidVersion
from packaging.version import Version as PkgVersion

from shipml.package.manifest import Environment

ALWAYS = ("numpy", "pandas")


def package_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        # Some distributions ship under another name (xgboost-cpu provides the xgboost module).
        for alt in _ALTERNATES.get(dist, ()):
            try:
                return metadata.version(alt)
            except metadata.PackageNotFoundError:
                continue
        return None


_ALTERNATES = {"xgboost": ("xgboost-cpu",), "xgboost-cpu": ("xgboost",)}


def capture(requirements: list[str], framework: str | None) -> Environment:
    packages: dict[str, str] = {}
    for dist in [*ALWAYS, *requirements]:
        version = package_version(dist)
        if version is not None:
            packages[dist] = version
    return Environment(
        python=platform.python_version(),
        implementation=sys.implementation.name,
        platform=platform.platform(terse=True),
        machine=platform.machine(),
        packages=packages,
        framework=framework,
    )


@dataclass(frozen=True)
class Difference:
    what: str
    saved: str | None
    running: str | None
    level: Literal["info", "warning", "error"]

    def __str__(self) -> str:
        return f"{self.what}: saved with {self.saved or 'nothing'}, running {self.running or 'nothing'}"


def compare(saved: Environment) -> list[Difference]:
    """Differences between ``saved`` and this process: an 'error' for a missing package or another major
    version of the framework, a 'warning' for other version changes, 'info' for platform changes."""
    diffs: list[Difference] = []
    running_py = platform.python_version()
    if _major_minor(saved.python) != _major_minor(running_py):
        diffs.append(Difference("python", saved.python, running_py, "warning"))
    if saved.machine != platform.machine():
        diffs.append(Difference("machine", saved.machine, platform.machine(), "info"))
    for dist, version in sorted(saved.packages.items()):
        now = package_version(dist)
        if now is None:
            level: Literal["info", "warning", "error"] = "error" if dist == saved.framework else "warning"
            diffs.append(Difference(dist, version, None, level))
        elif now != version:
            major_change = _major(now) != _major(version)
            level = "error" if major_change and dist == saved.framework else "warning"
            diffs.append(Difference(dist, version, now, level))
    return diffs


def _major(v: str) -> int | None:
    try:
        return PkgVersion(v).major
    except InvalidVersion:
        return None


def _major_minor(v: str) -> str:
    return ".".join(v.split(".")[:2])
