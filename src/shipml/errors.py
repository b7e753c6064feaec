"""Every error shipml raises on purpose, as one tree.

::

    ShipmlError                      (status 500)
    ├── NotFoundError                (404) no such model, version, alias or file
    ├── ConflictError                (409) the operation clashes with what is stored
    │   └── AlreadyExistsError       (409) a version that exists already
    ├── InvalidNameError             (400) a model name, version, alias or ref that is not allowed
    ├── ProtocolError                (400) a request that breaks the inference protocol's wire format
    ├── UnsafeModelError             (400) a format that can run code, without explicit trust
    ├── UnsupportedModelError        (400) no runtime knows this kind of model
    ├── IntegrityError               (500) an artefact does not match its recorded sha256
    ├── ManifestError                (500) a manifest that cannot be read, or from another runtime/API version
    ├── SchemaError                  (422) input data that breaks the model's signature
    ├── ReproducibilityError         (500) the golden sample no longer reproduces
    ├── EnvironmentMismatchError     (500) the running environment differs too much from the saved one
    ├── GateError                    (412) a promotion refused by the validation gate
    └── DependencyError              (500) an optional package needed for this is not installed

Errors carry a ``status`` (an HTTP-like status code, so the server maps them without knowing each class) and
never a traceback, path of the server's filesystem, or secret in ``public_message``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from shipml.package.signature import Problem

__all__ = [
    "AlreadyExistsError",
    "ConflictError",
    "DependencyError",
    "EnvironmentMismatchError",
    "GateError",
    "IntegrityError",
    "InvalidNameError",
    "ManifestError",
    "NotFoundError",
    "ProtocolError",
    "ReproducibilityError",
    "SchemaError",
    "ShipmlError",
    "UnsafeModelError",
    "UnsupportedModelError",
]


class ShipmlError(Exception):
    """Base of every error shipml raises on purpose."""

    status: ClassVar[int] = 500

    @property
    def public_message(self) -> str:
        """What may be shown to a remote client (subclasses with sensitive details override it)."""
        return str(self) if self.status < 500 else "internal error"


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


class SchemaError(ShipmlError):
    """Input data that breaks the signature; ``problems`` says which row, column and rule."""

    status = 422

    def __init__(self, message: str, problems: Sequence[Problem] = (), total: int | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems)
        self.total = len(self.problems) if total is None else total

    @property
    def public_message(self) -> str:
        return str(self)


class ReproducibilityError(ShipmlError):
    status = 500


class EnvironmentMismatchError(ShipmlError):
    status = 500


class GateError(ShipmlError):
    status = 412


class DependencyError(ShipmlError):
    status = 500


def missing_dependency(package: str, extra: str) -> DependencyError:
    """The error for an optional package that is not installed, naming the extra that brings it."""
    return DependencyError(f"{package} is not installed: pip install 'shipml[{extra}]'")
