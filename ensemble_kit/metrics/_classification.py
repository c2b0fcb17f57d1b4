"""Classification metrics on logits or probabilities (the kind is always declared)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import f1_score, precision_recall_fscore_support

from ensemble_kit.metrics._scores import ScoreKind, check_kind, check_targets, to_log_probs


def accuracy(y: ArrayLike, scores: ArrayLike, *, kind: ScoreKind) -> float:
    """Fraction of rows whose highest score is the true class.

    Examples
    --------
    >>> import numpy as np
    >>> accuracy(np.array([0, 1]), np.array([[2.0, 0.0], [3.0, 1.0]]), kind="logits")
    0.5
    """
    check_kind(kind)
    yy, s = check_targets(y, scores)
    return float(np.mean(s.argmax(axis=1) == yy))


def log_loss(y: ArrayLike, scores: ArrayLike, *, kind: ScoreKind) -> float:
    """Mean negative log-likelihood of the true class.

    Logits are normalised with a stable log-softmax (no clipping needed); probabilities are
    renormalised per row and clipped at 1e-12, as competition scorers do.

    Examples
    --------
    >>> import numpy as np
    >>> round(log_loss(np.array([0]), np.array([[0.5, 0.5]]), kind="probs"), 4)
    0.6931
    """
    yy, s = check_targets(y, scores)
    logp = to_log_probs(s, kind=kind)
    return float(-np.mean(logp[np.arange(len(yy)), yy]))


def f1_macro(y: ArrayLike, scores: ArrayLike, *, kind: ScoreKind) -> float:
    """Unweighted mean of per-class F1 over all classes (absent classes count as 0).

    Examples
    --------
    >>> import numpy as np
    >>> f1_macro(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), kind="probs")
    1.0
    """
    check_kind(kind)
    yy, s = check_targets(y, scores)
    labels = np.arange(s.shape[1])
    return float(f1_score(yy, s.argmax(axis=1), labels=labels, average="macro", zero_division=0))


def per_class_report(
    y: ArrayLike, scores: ArrayLike, *, kind: ScoreKind, classes: ArrayLike | None = None
) -> pd.DataFrame:
    """Precision, recall, F1 and support for every class, one row per class.

    Examples
    --------
    >>> import numpy as np
    >>> per_class_report(np.array([0, 1]), np.eye(2), kind="probs")["recall"].tolist()
    [1.0, 1.0]
    """
    check_kind(kind)
    yy, s = check_targets(y, scores)
    labels = np.arange(s.shape[1])
    precision, recall, f1, support = precision_recall_fscore_support(
        yy, s.argmax(axis=1), labels=labels, zero_division=0
    )
    index = pd.Index(list(classes) if classes is not None else labels, name="class")
    return pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support}, index=index
    )


def per_class_recall(y: ArrayLike, scores: ArrayLike, *, kind: ScoreKind) -> np.ndarray:
    """Recall of each class, shape ``(n_classes,)``."""
    return per_class_report(y, scores, kind=kind)["recall"].to_numpy()


def per_class_precision(y: ArrayLike, scores: ArrayLike, *, kind: ScoreKind) -> np.ndarray:
    """Precision of each class, shape ``(n_classes,)``."""
    return per_class_report(y, scores, kind=kind)["precision"].to_numpy()
