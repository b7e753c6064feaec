"""What a remote client may see of the server's own state: never a path of the server's filesystem.

The library's errors are written for the operator (the CLI, the log): ``no model named 'churn' in
Registry('/srv/models')`` says where to look. A framework that fails while loading says even more (its own file
paths, package versions). The server logs those in full and shows clients a public description instead, chosen
by the failure's kind - :func:`load_failure` - and names models by :func:`public_ref`, which hides a package
directory's path.
"""

from __future__ import annotations

from shipml.errors import (
    DependencyError,
    EnvironmentMismatchError,
    IntegrityError,
    InvalidNameError,
    ManifestError,
    NotFoundError,
    ReproducibilityError,
    ShipmlError,
    UnsafeModelError,
)
from shipml.package.manifest import read_manifest
from shipml.registry.names import Ref
from shipml.registry.registry import Registry

__all__ = ["DETAILS", "PACKAGE_DIRECTORY", "load_failure", "public_ref"]

PACKAGE_DIRECTORY = "(package directory)"
DETAILS = "the server log has the details"

#: By kind of failure, what a client is told (after "model REF: "). Checked in order: subclasses first.
_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (IntegrityError, "its files do not match the digests recorded when it was saved (changed or corrupted since)"),
    (ReproducibilityError, "it does not reproduce its golden sample"),
    (EnvironmentMismatchError, "it needs another environment than this server's"),
    (UnsafeModelError, "it can run code when loaded, and trust was not granted"),
    (DependencyError, "a package it needs is not installed on this server"),
)


def _parse(ref: str) -> Ref | None:
    try:
        return Ref.parse(ref)
    except InvalidNameError:
        return None


def public_ref(ref: str) -> str:
    """``ref`` as a client may see it: registry refs as they are, a package directory without its path."""
    parsed = _parse(ref)
    return PACKAGE_DIRECTORY if parsed is not None and parsed.path is not None else ref


def load_failure(ref: str, exc: BaseException, registry: Registry) -> str:
    """Why model ``ref`` is not served, for clients: ``model REF: REASON; the server log has the details``."""
    return f"model {public_ref(ref)}: {_reason(ref, exc, registry)}; {DETAILS}"


def _reason(ref: str, exc: BaseException, registry: Registry) -> str:
    parsed = _parse(ref)
    if parsed is None or isinstance(exc, InvalidNameError):
        return "not a valid model reference"
    if parsed.path is not None and isinstance(exc, NotFoundError | ManifestError) and not _has_package(parsed):
        return "no model package there"
    if isinstance(exc, NotFoundError) and parsed.name is not None:
        return _missing(parsed, registry)
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    if isinstance(exc, ManifestError):
        if _manifest_readable(parsed, registry):
            cause = exc.__cause__
            return f"its runtime failed to load it ({type(cause or exc).__name__})"
        return "its manifest cannot be read"
    if not isinstance(exc, ShipmlError):
        return f"its runtime failed to load it ({type(exc).__name__})"
    return f"it failed to load ({type(exc).__name__})"


def _manifest_readable(ref: Ref, registry: Registry) -> bool:
    """Whether the manifest of ``ref`` reads well (then a ManifestError came from its runtime)."""
    try:
        read_manifest(ref.path if ref.path is not None else registry.directory(registry.get(ref)))
    except (ShipmlError, OSError):
        return False
    return True


def _has_package(ref: Ref) -> bool:
    try:
        return ref.path is not None and (ref.path / "shipml.json").is_file()
    except OSError:
        return False


def _missing(ref: Ref, registry: Registry) -> str:
    """Which part of a registry ref the registry does not have: the model, the alias or the version."""
    if ref.name is None:
        return "not found in the registry"
    try:
        if not registry.versions(ref.name):
            return "the model has no versions in the registry"
        if ref.alias is not None:
            version = registry.aliases(ref.name).get(ref.alias)
            if version is None:
                return "no such alias in the registry"
            return f"its alias points to version {version}, which is not in the registry"
    except NotFoundError:
        return "no model of that name in the registry"
    except (ShipmlError, OSError, ValueError):
        return "not found in the registry"
    return "no such version in the registry"
