"""Classification metrics taking logits or probabilities, with the kind declared."""

from ensemble_kit.metrics._classification import (
    accuracy,
    f1_macro,
    log_loss,
    per_class_precision,
    per_class_recall,
    per_class_report,
)
from ensemble_kit.metrics._registry import Metric, get_metric, list_metrics
from ensemble_kit.metrics._scores import PROB_EPS, check_kind, log_softmax, safe_log, softmax, to_log_probs, to_probs

__all__ = [
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
    "safe_log",
    "softmax",
    "to_log_probs",
    "to_probs",
]
