"""Every error shipml raises on purpose, as one tree.

::

    ShipmlError                      (status 500)
    ├── NotFoundError                (404) no such model, version, alias or file
    ├── ConflictError                (409) the operation clashes with what is stored
    │   └── AlreadyExistsError       (409) a version that exists already
    ├── InvalidNameError             (400) a model name, version, alias or ref that is not allowed
    ├── SpecError                    (400) a deployment spec that cannot be used
    ├── BadRequest                   (400) a request the server cannot read (not JSON, wrong shape)
    ├── ProtocolError                (400) a request that breaks the inference protocol's wire format
    ├── MethodNotAllowed             (405) a known route called with another method
    ├── RequestTimeout               (408) a request body that did not all arrive in time
    ├── PayloadTooLarge              (413) a body over the byte limit
    │   └── TooManyRows              (413) a request over the row limit
    ├── UnsupportedMediaType         (415) a body that is not JSON (pickles included)
    ├── UnsafeModelError             (400) a format that can run code, without explicit trust
    ├── UnsupportedModelError        (400) no runtime knows this kind of model
    ├── IntegrityError               (500) an artefact, or a manifest, that does not match its recorded sha256
    ├── ManifestError                (500) a manifest that cannot be read, or from another runtime/API version
    ├── RegistryCorrupt              (500) a registry file that does not hold what it must (aliases.json,
    │                                      release.json, a history/evaluations/ledger/releases line), or a
    │                                      symbolic link where the registry keeps its own files
    ├── SchemaError                  (422) input data that breaks the model's signature
    ├── ReproducibilityError         (500) the golden sample no longer reproduces
    ├── EnvironmentMismatchError     (500) the running environment differs too much from the saved one
    ├── GateError                    (412) a promotion refused by the validation gate
    │   └── PromotionRefused         (412) (evaluation/gate.py) carries the failed checks
    ├── InferenceError               (500) the model failed on a batch
    ├── ServiceUnavailable           (503) a model not loaded (yet), or failed its golden check
    │   └── Overloaded               (503) a full queue; says when to retry
    ├── DeadlineExceeded             (504) a request past its deadline
    ├── BuildFailed                  (500) (deploy/engine.py) the container engine failed: exit code, last lines
    ├── StorageError                 (503) the registry's object store cannot be used: no credentials, no such
    │                                      bucket, access denied, unreachable (after retries)
    └── DependencyError              (500) an optional package needed for this is not installed

Errors carry a ``status`` (an HTTP-like status code, so the server maps them without knowing each class).
``public_message`` is what a remote client may see: the message for a 4xx, or for a 5xx whose class sets
``expose`` (its message is written for clients); "internal error" otherwise. No message holds a traceback or a
secret. A message about the operator's own files may name them (``no model named 'churn' in
Registry('/srv/models')`` says where to look): those are for the CLI and the log. The server never sends such a
message to a client: a model that failed to load is described by ``server/public.py``, by kind of failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from shipml.package.signature import Problem

__all__ = [
    "AlreadyExistsError",
    "BadRequest",
    "ConflictError",
    "DeadlineExceeded",
    "DependencyError",
    "EnvironmentMismatchError",
    "GateError",
    "InferenceError",
    "IntegrityError",
    "InvalidNameError",
    "ManifestError",
    "MethodNotAllowed",
    "NotFoundError",
    "Overloaded",
    "PayloadTooLarge",
    "ProtocolError",
    "RegistryCorrupt",
    "ReproducibilityError",
    "RequestTimeout",
    "SchemaError",
    "ServiceUnavailable",
    "ShipmlError",
    "SpecError",
    "StorageError",
    "TooManyRows",
    "UnsafeModelError",
    "UnsupportedMediaType",
    "UnsupportedModelError",
]


class ShipmlError(Exception):
    """Base of every error shipml raises on purpose."""

    status: ClassVar[int] = 500
    expose: ClassVar[bool] = False

    @property
    def public_message(self) -> str:
        """What may be shown to a remote client."""
        return str(self) if self.status < 500 or self.expose else "internal error"


class NotFoundError(ShipmlError):
    status = 404


class ConflictError(ShipmlError):
    status = 409


class AlreadyExistsError(ConflictError):
    pass


class InvalidNameError(ShipmlError):
    status = 400


class ProtocolError(ShipmlError):
    status = 400


class UnsafeModelError(ShipmlError):
    """A model format that can execute code on load, refused without explicit trust."""

    status = 400

    def __init__(self, message: str, unsafe_types: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.unsafe_types = list(unsafe_types)


class UnsupportedModelError(ShipmlError):
    status = 400


class IntegrityError(ShipmlError):
    status = 500


class ManifestError(ShipmlError):
    status = 500


class RegistryCorrupt(ShipmlError):
    """A file of the registry that is malformed, or a symbolic link where the registry keeps its own files.
    The message names the entry relative to the registry's root (never a full path)."""

    status = 500


class SchemaError(ShipmlError):
    """Input data that breaks the signature; ``problems`` says which row, column and rule."""

    status = 422

    def __init__(self, message: str, problems: Sequence[Problem] = (), total: int | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems)
        self.total = len(self.problems) if total is None else total


class ReproducibilityError(ShipmlError):
    status = 500


class EnvironmentMismatchError(ShipmlError):
    status = 500


class GateError(ShipmlError):
    status = 412


class DependencyError(ShipmlError):
    status = 500


class StorageError(ShipmlError):
    """The registry's object store cannot be used (its error translated at the boundary, registry/s3.py)."""

    status = 503


class SpecError(ShipmlError):
    status = 400


class BadRequest(ShipmlError):
    status = 400


class MethodNotAllowed(ShipmlError):
    status = 405

    def __init__(self, message: str, allow: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.allow = allow


class RequestTimeout(ShipmlError):
    status = 408


class PayloadTooLarge(ShipmlError):
    status = 413


class TooManyRows(PayloadTooLarge):
    pass


class UnsupportedMediaType(ShipmlError):
    status = 415


class InferenceError(ShipmlError):
    status = 500


class ServiceUnavailable(ShipmlError):
    status = 503
    expose = True


class Overloaded(ServiceUnavailable):
    """The model's queue is full: retry later."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ShipmlError):
    status = 504
    expose = True


def missing_dependency(package: str, extra: str) -> DependencyError:
    """The error for an optional package that is not installed, naming the extra that brings it."""
    return DependencyError(f"{package} is not installed: pip install 'shipml[{extra}]'")
