"""The manifest, ``shipml.json``: everything known about one model version, beside its artefacts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from shipml.errors import IntegrityError, ManifestError
from shipml.package.signature import Signature

MANIFEST = "shipml.json"
GOLDEN = "golden.json"
PROFILE = "profile.json"
MODEL_DIR = "model"
MANIFEST_VERSION = 1


class Artifact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    sha256: str
    size: int


class RuntimeInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    api_version: int
    info: dict[str, Any] = Field(default_factory=dict)


class Trust(BaseModel):
    """Whether loading this model needs trust (it can run code), and what exactly was trusted."""

    model_config = ConfigDict(extra="forbid")

    required: bool = False
    types: list[str] = Field(default_factory=list)
    granted_by: str | None = None
    granted_at: str | None = None


class Environment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    python: str
    implementation: str
    platform: str
    machine: str
    packages: dict[str, str] = Field(default_factory=dict)
    framework: str | None = Field(None, description="the distribution whose major version must match")


class GoldenInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: int
    rtol: float
    atol: float


class MlflowSource(BaseModel):
    """What an MLflow model's ``MLmodel`` file says about where the model came from."""

    model_config = ConfigDict(extra="forbid")

    flavor: str
    run_id: str | None = None
    artifact_path: str | None = None
    model_uuid: str | None = None
    model_id: str | None = None
    utc_time_created: str | None = None
    mlflow_version: str | None = None


class ImportedFrom(BaseModel):
    """The source of a model brought in by ``shipml import``: shipml did not see it trained, so no code file or
    commit is recorded for it; what the source says about itself is."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="the file or directory imported, as an absolute path on the importing machine")
    file: str = Field(description="the model file read: its name, or its path inside the imported directory")
    format: str = Field(description="e.g. lightgbm, pickle, mlflow/lightgbm/lightgbm")
    sha256: str = Field(description="of the model file read")
    mlflow: MlflowSource | None = None


class Lineage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    created_at: str
    user: str | None = None
    host: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    git_repo: str | None = None
    code_file: str | None = None
    sample_fingerprint: str
    target_fingerprint: str | None = None
    sample_rows: int
    shipml_version: str
    imported_from: ImportedFrom | None = None

    @model_serializer(mode="wrap")
    def _without_unset_source(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A model that was not imported has no ``imported_from`` key at all: its manifest stays as readers that
        predate the field expect it."""
        data: dict[str, Any] = handler(self)
        if self.imported_from is None:
            data.pop("imported_from", None)
        return data


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    manifest_version: int = MANIFEST_VERSION
    name: str
    version: str
    description: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    runtime: RuntimeInfo
    artifacts: list[Artifact]
    signature: Signature
    trust: Trust = Field(default_factory=Trust)
    environment: Environment
    golden: GoldenInfo
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: Lineage

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def manifest_digest(data: bytes) -> str:
    """The sha256 (hex) of a manifest's bytes, as the registry records it when a version is committed."""
    return hashlib.sha256(data).hexdigest()


def read_manifest(directory: Path, expected_sha256: str | None = None) -> Manifest:
    """The manifest of the package in ``directory``. ``expected_sha256``: the digest recorded for it outside
    the package (by the registry); a manifest whose bytes differ is refused with an IntegrityError."""
    path = directory / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ManifestError(f"no {MANIFEST} in the model package {directory.name!r}") from exc
    if expected_sha256 is not None and manifest_digest(data) != expected_sha256:
        raise IntegrityError(f"{MANIFEST} of {directory.name!r} does not match the digest recorded when it was"
                             " saved (edited or corrupted since); refusing to load it")
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"{MANIFEST} of {directory.name!r} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ManifestError(f"{MANIFEST} of {directory.name!r} is not a JSON object")
    found = raw.get("manifest_version")
    if found != MANIFEST_VERSION:
        raise ManifestError(
            f"{MANIFEST} of {directory.name!r} has manifest_version {found!r}; this shipml reads {MANIFEST_VERSION}"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"{MANIFEST} of {directory.name!r} is invalid at {where}: {first['msg']}") from exc


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write the manifest and fsync it: the last file of a package, so a package with one is complete."""
    path = directory / MANIFEST
    with path.open("wb") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
