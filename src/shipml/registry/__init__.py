"""Model registry: versions, aliases, history, release state (see :mod:`shipml.registry.registry`)."""

from shipml.registry.names import Ref, Version
from shipml.registry.registry import NOT_GIVEN, AliasMove, ModelSummary, ModelVersion, Registry
from shipml.registry.releases import Canary, CanaryLimits, ReleaseState

__all__ = ["NOT_GIVEN", "AliasMove", "Canary", "CanaryLimits", "ModelSummary", "ModelVersion", "Ref", "Registry",
           "ReleaseState", "Version"]
