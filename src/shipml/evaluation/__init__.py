"""The validation gate: metrics on labelled data, stored evaluations, promotions that earn their alias."""

from shipml.evaluation.gate import (
    Check,
    Evaluation,
    PromotionRefused,
    PromotionResult,
    Requirement,
    evaluate,
    promote,
    stored_evaluations,
)
from shipml.evaluation.metrics import HIGHER_IS_BETTER, METRICS, compute_metrics

__all__ = [
    "HIGHER_IS_BETTER",
    "METRICS",
    "Check",
    "Evaluation",
    "PromotionRefused",
    "PromotionResult",
    "Requirement",
    "compute_metrics",
    "evaluate",
    "promote",
    "stored_evaluations",
]
