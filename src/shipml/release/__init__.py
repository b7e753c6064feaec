"""Releases: which version answers each request (stable, canary, A/B variant, shadow copies, fallback chain),
when a canary must be aborted, and how far a shadow disagrees with the primary. Pure logic: no I/O, no clock, no
event loop; the server feeds it the registry's state and each request's key and draws."""

from shipml.release.canary import CanaryWatch, WatchLimits
from shipml.release.router import Decision, Default, KeySource, Release, Target, bucket, build_release, route
from shipml.release.shadow import Disagreement, compare

__all__ = [
    "CanaryWatch",
    "Decision",
    "Default",
    "Disagreement",
    "KeySource",
    "Release",
    "Target",
    "WatchLimits",
    "bucket",
    "build_release",
    "compare",
    "route",
]
