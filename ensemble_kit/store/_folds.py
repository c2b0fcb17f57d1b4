"""Fold assignment: one fold index per training sample, fixed once (by the store) and reused everywhere."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.model_selection import StratifiedKFold

from ensemble_kit.errors import ValidationError


def make_folds(y: ArrayLike, n_folds: int = 5, *, seed: int = 0) -> NDArray[np.int64]:
    """Stratified, shuffled fold index per sample.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class indices or labels.
    n_folds : int
        Number of folds, at least 2. Every class needs at least ``n_folds`` samples.
    seed : int
        Seed of the shuffle; the same ``y``, ``n_folds`` and ``seed`` give the same folds.

    Examples
    --------
    >>> import numpy as np
    >>> make_folds(np.array([0, 0, 1, 1]), n_folds=2, seed=0).tolist()
    [1, 0, 0, 1]
    """
    yy = np.asarray(y)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValidationError(f"n_folds must be an integer >= 2; got {n_folds!r}.")
    values, counts = np.unique(yy, return_counts=True)
    small = [(v, int(c)) for v, c in zip(values.tolist(), counts) if c < n_folds]
    if small:
        listed = ", ".join(f"class {v!r} has {c}" for v, c in small[:10])
        raise ValidationError(
            f"Every class needs at least n_folds={n_folds} samples for stratified folds; "
            f"{listed}. Use fewer folds, or pass folds=... explicitly."
        )
    folds = np.empty(len(yy), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
    for k, (_, valid_idx) in enumerate(splitter.split(np.zeros(len(yy)), yy)):
        folds[valid_idx] = k
    return folds


def check_folds(folds: ArrayLike, n_samples: int) -> NDArray[np.int64]:
    """A user-given fold assignment as indices 0..K-1, one per sample.

    Fold labels may be any integers (a competition's folds 1..4 after holding fold 0 out, a
    group split's ids): they are mapped to 0..K-1 in sorted order; :func:`fold_labels` gives the
    original label of each index.

    Examples
    --------
    >>> check_folds([3, 1, 3, 4], 4).tolist()
    [1, 0, 1, 2]
    """
    f = np.asarray(folds)
    if f.ndim != 1 or f.shape[0] != n_samples:
        raise ValidationError(
            f"folds must be a 1-D array with one fold index per training sample "
            f"({n_samples}); got shape {f.shape}."
        )
    if f.dtype == bool or not np.issubdtype(f.dtype, np.integer):
        raise ValidationError(f"folds must hold integers; got dtype {f.dtype}.")
    if n_samples == 0:
        raise ValidationError("Cannot make folds for zero training samples.")
    labels, index = np.unique(f, return_inverse=True)
    if len(labels) < 2:
        raise ValidationError(f"folds must define at least 2 folds; got only fold {labels.tolist()}.")
    return index.astype(np.int64)


def fold_labels(folds: ArrayLike) -> list[int]:
    """The original label of each fold index :func:`check_folds` assigns (sorted distinct labels)."""
    return [int(v) for v in np.unique(np.asarray(folds))]
