"""Classification metrics on logits or probabilities (the kind is always declared)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import pandas as pd

from ensemble_kit.errors import ValidationError
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


def accuracy_of_labels(y: ArrayLike, labels: ArrayLike, n_classes: int) -> float:
    """Fraction of decided labels that are the true class."""
    yy, decided = _check_labels(y, labels, n_classes)
    return float(np.mean(decided == yy))


def f1_macro_of_labels(y: ArrayLike, labels: ArrayLike, n_classes: int) -> float:
    """Macro F1 of decided labels over all ``n_classes`` classes (absent classes count as 0).

    The same number as scikit-learn's ``f1_score(..., average="macro", zero_division=0)``, from
    one ``bincount``: tuning loops (hill climbing, class offsets, Optuna on macro F1) call it
    thousands of times, and scikit-learn's input checks cost ~6 ms a call on a few hundred rows.
    """
    yy, decided = _check_labels(y, labels, n_classes)
    cells = yy.astype(np.int64) * n_classes + decided.astype(np.int64)
    confusion = np.bincount(cells, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    true_positives = np.diag(confusion).astype(np.float64)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)  # 2 TP + FP + FN
    per_class = np.divide(2 * true_positives, denominator, out=np.zeros(n_classes), where=denominator > 0)
    return float(per_class.mean())


def _check_labels(y: ArrayLike, labels: ArrayLike, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    yy, decided = np.asarray(y), np.asarray(labels)
    if yy.shape != decided.shape or yy.ndim != 1:
        raise ValidationError(f"y and labels must be 1-D of one length; got shapes {yy.shape} and {decided.shape}.")
    for name, values in (("y", yy), ("labels", decided)):
        if values.size and (not np.issubdtype(values.dtype, np.integer) or values.min() < 0 or values.max() >= n_classes):
            raise ValidationError(f"{name} must hold class indices in [0, {n_classes}).")
    return yy, decided


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
    return f1_macro_of_labels(yy, s.argmax(axis=1), s.shape[1])


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
    import pandas as pd
    from sklearn.metrics import precision_recall_fscore_support

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
