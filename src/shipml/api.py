"""The library's front door: save a model into a registry, load one back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipml.package.loaded import LoadedModel, load_package
from shipml.registry.names import Ref
from shipml.registry.registry import ModelVersion, Registry


def _registry(registry: Registry | str | Path | None) -> Registry:
    return registry if isinstance(registry, Registry) else Registry(registry)


def save_model(
    model: Any,
    name: str,
    *,
    sample: Any,
    target: Any = None,
    version: str | None = None,
    trusted: bool = False,
    metrics: dict[str, float] | None = None,
    description: str | None = None,
    tags: dict[str, str] | None = None,
    registry: Registry | str | Path | None = None,
    runtime: str | None = None,
    runtime_options: dict[str, Any] | None = None,
    golden_rows: int = 100,
    tolerance: tuple[float, float] = (1e-5, 1e-6),
) -> ModelVersion:
    """Package ``model`` (safe format unless ``trusted``) with its signature, environment, golden sample,
    reference profile and lineage, and store it as a new immutable version of ``name``.

    ``sample``: training inputs (DataFrame or 2-D array) the signature and profile are inferred from.
    ``version``: defaults to the next minor version (1.0.0 first). ``tolerance``: (rtol, atol) of the golden
    check for float outputs; labels must match exactly.
    """
    from shipml.package.builder import BuildOptions  # pandas and the builder: only for saving

    options = BuildOptions(target=target, trusted=trusted, metrics=metrics, description=description, tags=tags,
                           runtime=runtime, golden_rows=golden_rows, rtol=tolerance[0], atol=tolerance[1],
                           runtime_options=dict(runtime_options or {}))
    return _registry(registry).save(model, name, sample=sample, version=version, options=options)


def load_model(ref: str | Path, *, registry: Registry | str | Path | None = None, verify: bool = True,
               allow_env_mismatch: bool = False, trusted: bool | None = None) -> LoadedModel:
    """Load ``name``, ``name:1.2.0``, ``name@alias`` or a package directory, verified: integrity (sha256),
    trust, environment, then the golden sample re-run (``ReproducibilityError`` if it no longer matches)."""
    if isinstance(ref, Path):
        return load_package(ref, verify=verify, allow_env_mismatch=allow_env_mismatch, trusted=trusted)
    r = Ref.parse(ref)
    if r.path is not None:
        return load_package(r.path, verify=verify, allow_env_mismatch=allow_env_mismatch, trusted=trusted)
    return _registry(registry).load(r, verify=verify, allow_env_mismatch=allow_env_mismatch, trusted=trusted)
