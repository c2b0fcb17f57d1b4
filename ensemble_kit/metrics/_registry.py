"""Named metrics, so estimators, configs and the CLI can take ``metric="log_loss"``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ensemble_kit._registry import Registry
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics._classification import accuracy, accuracy_of_labels, f1_macro, f1_macro_of_labels, log_loss
from ensemble_kit.metrics._scores import ScoreKind, check_kind

__all__ = ["METRICS", "Metric", "get_metric", "list_metrics", "register_metric", "scores"]


@dataclass(frozen=True)
class Metric:
    """A scoring function with its direction.

    ``fn(y, scores, kind=...)`` returns a float; ``greater_is_better`` tells optimisers which
    way to go. ``loss(y, scores, kind=...)`` is always "lower is better". Metrics that score
    decided labels (accuracy, macro F1) also take them directly through ``of_labels``, so a
    decision rule's labels are scored by the same code as an arg-max.
    """

    name: str
    fn: Callable[..., float]
    greater_is_better: bool
    of_labels: Callable[[NDArray, NDArray, int], float] | None = None

    def __call__(self, y: ArrayLike, scores: ArrayLike, *, kind: ScoreKind) -> float:
        return self.fn(y, scores, kind=kind)

    def loss(self, y: ArrayLike, scores: ArrayLike, *, kind: ScoreKind) -> float:
        value = self.fn(y, scores, kind=kind)
        return -value if self.greater_is_better else value

    @property
    def scores_labels(self) -> bool:
        """Whether the metric scores decided labels (and so can be tuned with decision rules)."""
        return self.of_labels is not None

    @property
    def help(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else self.name


METRICS: Registry[Metric] = Registry("metric")


def register_metric(metric: Metric, *, replace: bool = False) -> Metric:
    """Add ``metric`` under ``metric.name`` (usable as ``metric="<name>"`` everywhere)."""
    return METRICS.register(metric.name, metric, replace=replace)


register_metric(Metric("accuracy", accuracy, greater_is_better=True, of_labels=accuracy_of_labels))
register_metric(Metric("log_loss", log_loss, greater_is_better=False))
register_metric(Metric("f1_macro", f1_macro, greater_is_better=True, of_labels=f1_macro_of_labels))


def get_metric(metric: str | Metric) -> Metric:
    """Look up a metric by name (``"accuracy"``, ``"log_loss"``, ``"f1_macro"``).

    Examples
    --------
    >>> get_metric("log_loss").greater_is_better
    False
    """
    if isinstance(metric, Metric):
        return metric
    return METRICS.get(metric)


def list_metrics() -> list[str]:
    """Names accepted by :func:`get_metric`."""
    return METRICS.names()


def scores(y: ArrayLike, values: ArrayLike, *, kind: ScoreKind, labels: ArrayLike | None = None) -> dict[str, float]:
    """Every registered metric of one prediction: probability metrics on ``values``, label
    metrics on ``labels`` when a decision rule made them (else on the arg-max of ``values``).

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.6, 0.4], [0.55, 0.45]])
    >>> scores(np.array([0, 1]), p, kind="probs")["accuracy"], scores(np.array([0, 1]), p, kind="probs", labels=[0, 1])["accuracy"]
    (0.5, 1.0)
    """
    check_kind(kind)
    yy = np.asarray(y)
    values = np.asarray(values)
    decided = None
    if labels is not None:
        decided = np.asarray(labels)
        if decided.shape != yy.shape:
            raise ValidationError(f"labels must have one entry per row ({yy.shape}); got shape {decided.shape}.")
    out = {}
    for name in list_metrics():
        metric = METRICS.get(name)
        if decided is not None and metric.of_labels is not None:
            out[name] = float(metric.of_labels(yy, decided, values.shape[1]))
        else:
            out[name] = float(metric(yy, values, kind=kind))
    return out
