from __future__ import annotations

from pathlib import Path

import pytest

import shipml
from tests.export.models import FAMILIES, register


@pytest.fixture(scope="session")
def family_registry(tmp_path_factory: pytest.TempPathFactory) -> shipml.Registry:
    """One registry holding a tiny model of every exported family (trained once per session)."""
    registry = shipml.Registry(tmp_path_factory.mktemp("families") / "registry")
    for name in FAMILIES:
        register(registry, name)
    return registry


@pytest.fixture(scope="session")
def bundles(family_registry: shipml.Registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each family exported once per session (the export proves parity; tests check it again independently)."""
    from shipml.export import export_onnx

    root = tmp_path_factory.mktemp("bundles")
    return {name: export_onnx(family_registry.load(name), root / name, rows=1000).directory for name in FAMILIES}
