"""Model registry: versions, aliases, history (see :mod:`shipml.registry.registry`)."""

from shipml.registry.names import Ref, Version
from shipml.registry.registry import AliasMove, ModelSummary, ModelVersion, Registry

__all__ = ["AliasMove", "ModelSummary", "ModelVersion", "Ref", "Registry", "Version"]
