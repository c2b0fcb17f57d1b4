"""Named metrics, so estimators and the CLI can take ``metric="log_loss"``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from numpy.typing import ArrayLike

from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics._classification import accuracy, f1_macro, log_loss
from ensemble_kit.metrics._scores import ScoreKind


@dataclass(frozen=True)
class Metric:
    """A scoring function with its direction.

    ``fn(y, scores, kind=...)`` returns a float; ``greater_is_better`` tells optimisers which
    way to go. ``loss(y, scores, kind=...)`` is always "lower is better".
    """

    name: str
    fn: Callable[..., float]
    greater_is_better: bool

    def __call__(self, y: ArrayLike, scores: ArrayLike, *, kind: ScoreKind) -> float:
        return self.fn(y, scores, kind=kind)

    def loss(self, y: ArrayLike, scores: ArrayLike, *, kind: ScoreKind) -> float:
        value = self.fn(y, scores, kind=kind)
        return -value if self.greater_is_better else value


_METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", accuracy, greater_is_better=True),
    "log_loss": Metric("log_loss", log_loss, greater_is_better=False),
    "f1_macro": Metric("f1_macro", f1_macro, greater_is_better=True),
}


def get_metric(metric: str | Metric) -> Metric:
    """Look up a metric by name (``"accuracy"``, ``"log_loss"``, ``"f1_macro"``).

    Examples
    --------
    >>> get_metric("log_loss").greater_is_better
    False
    """
    if isinstance(metric, Metric):
        return metric
    try:
        return _METRICS[metric]
    except (KeyError, TypeError):
        raise ValidationError(
            f"Unknown metric {metric!r}; expected one of {sorted(_METRICS)} or a Metric."
        ) from None


def list_metrics() -> list[str]:
    """Names accepted by :func:`get_metric`."""
    return sorted(_METRICS)
