"""Model registry: versions, aliases, history (see :mod:`shipml.registry.registry`)."""

from shipml.registry.names import Ref, Version
from shipml.registry.registry import NOT_GIVEN, AliasMove, ModelSummary, ModelVersion, Registry

__all__ = ["NOT_GIVEN", "AliasMove", "ModelSummary", "ModelVersion", "Ref", "Registry", "Version"]
