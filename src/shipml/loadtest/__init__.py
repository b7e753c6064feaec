"""Load generator (open loop, constant arrival rate) and SLO report.

``run_loadtest(url, model=..., rate=..., duration=..., slo=...)`` returns a :class:`LoadReport`; the engine
(:mod:`shipml.loadtest.generator`) can also be driven directly with a :class:`Plan` of pre-encoded requests.
"""

from shipml.loadtest.generator import run_plan, run_plan_async
from shipml.loadtest.html import render_html
from shipml.loadtest.payloads import ModelInfo, build_bodies, model_info_from_registry, model_info_from_server
from shipml.loadtest.plan import Plan, Progress, Samples
from shipml.loadtest.report import LoadReport, build_report
from shipml.loadtest.run import parse_duration, run_loadtest
from shipml.loadtest.slo import Check, Objective, parse_slo

__all__ = [
    "Check",
    "LoadReport",
    "ModelInfo",
    "Objective",
    "Plan",
    "Progress",
    "Samples",
    "build_bodies",
    "build_report",
    "model_info_from_registry",
    "model_info_from_server",
    "parse_duration",
    "parse_slo",
    "render_html",
    "run_loadtest",
    "run_plan",
    "run_plan_async",
]
