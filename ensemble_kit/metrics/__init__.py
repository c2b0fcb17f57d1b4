"""Classification metrics taking logits or probabilities, with the kind declared."""

from ensemble_kit.metrics._classification import (
    accuracy,
    f1_macro,
    log_loss,
    per_class_precision,
    per_class_recall,
    per_class_report,
)
from ensemble_kit.metrics._registry import METRICS, Metric, get_metric, list_metrics, register_metric, scores
from ensemble_kit.metrics._scores import PROB_EPS, check_kind, log_softmax, safe_log, softmax, to_log_probs, to_probs

__all__ = [
    "METRICS",
    "PROB_EPS",
    "Metric",
    "accuracy",
    "check_kind",
    "f1_macro",
    "get_metric",
    "list_metrics",
    "log_loss",
    "log_softmax",
    "per_class_precision",
    "per_class_recall",
    "per_class_report",
    "register_metric",
    "safe_log",
    "scores",
    "softmax",
    "to_log_probs",
    "to_probs",
]
