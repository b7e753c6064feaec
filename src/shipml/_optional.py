"""Import an optional framework when it is first needed, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from typing import Any

from shipml.errors import missing_dependency


def import_optional(module: str, extra: str, package: str | None = None) -> Any:
    """``module`` imported, or DependencyError saying ``pip install 'shipml[extra]'`` (naming ``package``,
    default the module's top-level name)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_dependency(package or module.split(".", maxsplit=1)[0], extra) from exc
