"""Registries of either kind for one parametrised suite: a local directory, or an object registry on a real
S3-protocol server (moto on 127.0.0.1, see tests/s3_support.py).

A module builds its starting registry once per kind (:class:`Sources`, built on first use); each test (or each
hypothesis example) works on its own copy: a copied directory, or the template's objects copied into a fresh
bucket. :func:`snapshot_of` is what a registry holds, to compare before and after a refused change.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import shipml
from shipml.registry.cache import VersionCache
from shipml.registry.objects import ObjectRegistry
from shipml.registry.s3 import S3Store
from tests.s3_support import S3Server
from tests.unit.registry_support import copy_registry, snapshot

BACKENDS = ["local", "s3"]


def s3_registry(server: S3Server, cache: Path, prefix: str = "reg") -> ObjectRegistry:
    uri = f"s3://{server.new_bucket()}/{prefix}"
    return ObjectRegistry(uri, store=S3Store(uri, client=server.client()), cache=VersionCache(cache))


class Sources:
    """The starting registry of a module, built by ``build`` once per kind, and copies of it."""

    def __init__(self, factory: pytest.TempPathFactory, server: S3Server,
                 build: Callable[[shipml.Registry], object]) -> None:
        self.factory = factory
        self.server = server
        self.build = build
        self.built: dict[str, shipml.Registry] = {}

    def source(self, kind: str) -> shipml.Registry:
        if kind not in self.built:
            if kind == "local":
                reg = shipml.Registry(self.factory.mktemp("source") / "registry")
            else:
                reg = s3_registry(self.server, self.factory.mktemp("source-cache"))
            self.build(reg)
            self.built[kind] = reg
        return self.built[kind]

    def clone(self, kind: str, where: Path) -> shipml.Registry:
        """A private copy of the source of ``kind``; ``where``: a new directory (the copy, or its cache)."""
        source = self.source(kind)
        if isinstance(source, ObjectRegistry):
            dest = s3_registry(self.server, where / "cache")
            for key in source.store.keys(""):
                blob = source.store.get(key)
                assert blob is not None
                dest.store.put(key, blob.data)
            return dest
        return copy_registry(source.root, where)

    def clone_for(self, request: pytest.FixtureRequest, where: Path) -> shipml.Registry:
        """:meth:`clone` of the kind a parametrised fixture asks for (for S3: its endpoint in the test's
        environment too, for the subprocesses it starts)."""
        if request.param == "s3":
            request.getfixturevalue("s3")
        return self.clone(request.param, where)


def new_registry(kind: str, request: pytest.FixtureRequest, where: Path) -> shipml.Registry:
    """An empty registry of ``kind`` (for S3: a fresh bucket, its endpoint in the test's environment)."""
    if kind == "local":
        return shipml.Registry(where)
    server: S3Server = request.getfixturevalue("s3")
    return s3_registry(server, where.parent / f"{where.name}-cache")


def snapshot_of(reg: shipml.Registry) -> dict[str, object]:
    if isinstance(reg, ObjectRegistry):
        return {key: blob.data for key in reg.store.keys("") if (blob := reg.store.get(key)) is not None}
    return dict(snapshot(reg.root))
