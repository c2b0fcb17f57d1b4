"""Class-specific decision rules on top of probabilities."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import get_metric, safe_log
from ensemble_kit.metrics._scores import check_targets

OPTIMIZE = ("f1_macro", "accuracy", "recall")


class ClassThresholds(BaseEstimator):
    """Turn probabilities into labels with class-specific rules instead of a plain argmax.

    Parameters
    ----------
    rules : mapping class index -> probability, optional
        Fixed rules: predict class ``c`` whenever ``p[c] > rules[c]`` (the AOI recipe:
        ``{2: 0.4}``). When several rules fire, the class whose probability exceeds its
        threshold by the largest ratio wins; when none fires, argmax.
    optimize : {"f1_macro", "accuracy", "recall"}, optional
        Learn the rule from OOF probabilities instead. ``"f1_macro"``/``"accuracy"``: per-class
        additive offsets on the log-probabilities, found by coordinate ascent. ``"recall"``:
        the lowest threshold on ``p[target_class]`` whose precision is at least
        ``min_precision`` (maximises that class's recall under the precision floor).
    target_class, min_precision
        For ``optimize="recall"``.
    max_offset : float
        Offsets are searched in ``[-max_offset, max_offset]`` (log-probability units).
    grid_size, n_passes : int
        Resolution and number of sweeps of the coordinate ascent.

    Attributes
    ----------
    rules_ : dict
        Threshold rules in force (fixed or learned by ``"recall"``).
    offsets_ : ndarray of shape (n_classes,)
        Log-probability offsets in force (zeros unless optimised).

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.5, 0.1, 0.4], [0.7, 0.0, 0.3]])
    >>> ClassThresholds(rules={2: 0.35}).fit(p, np.array([2, 0])).predict(p).tolist()
    [2, 0]
    """

    def __init__(self, rules: Mapping[int, float] | None = None, *,
                 optimize: Literal["f1_macro", "accuracy", "recall"] | None = None,
                 target_class: int | None = None, min_precision: float | None = None,
                 max_offset: float = 3.0, grid_size: int = 61, n_passes: int = 3) -> None:
        self.rules = rules
        self.optimize = optimize
        self.target_class = target_class
        self.min_precision = min_precision
        self.max_offset = max_offset
        self.grid_size = grid_size
        self.n_passes = n_passes

    def fit(self, proba: ArrayLike, y: ArrayLike) -> ClassThresholds:
        yy, p = check_targets(y, proba)
        n_classes = p.shape[1]
        self.n_classes_ = n_classes
        if (self.rules is None) == (self.optimize is None):
            raise ValidationError("Give exactly one of rules={class: threshold} or optimize=...")
        self.offsets_ = np.zeros(n_classes)
        self.rules_: dict[int, float] = {}
        if self.rules is not None:
            self.rules_ = self._checked_rules(self.rules, n_classes)
        elif self.optimize == "recall":
            self.rules_ = {self._checked_target(n_classes): self._recall_threshold(p, yy)}
        elif self.optimize in ("f1_macro", "accuracy"):
            self.offsets_ = self._coordinate_ascent(p, yy, get_metric(self.optimize))
        else:
            raise ValidationError(f"optimize must be one of {OPTIMIZE}; got {self.optimize!r}.")
        return self

    def predict(self, proba: ArrayLike) -> NDArray[np.int64]:
        """Class index of every row under the fitted rules."""
        check_is_fitted(self, "offsets_")
        p = np.asarray(proba, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != self.n_classes_:
            raise ValidationError(f"proba must have shape (n, {self.n_classes_}); got {p.shape}.")
        return self._apply(p, self.offsets_, self.rules_)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _apply(p: NDArray, offsets: NDArray, rules: Mapping[int, float]) -> NDArray[np.int64]:
        pred = (safe_log(p) + offsets).argmax(axis=1)
        if rules:
            classes = np.array(list(rules))
            thresholds = np.array([rules[c] for c in classes])
            ratio = p[:, classes] / thresholds
            fired = ratio > 1.0
            any_fired = fired.any(axis=1)
            winner = classes[np.where(fired, ratio, -np.inf).argmax(axis=1)]
            pred = np.where(any_fired, winner, pred)
        return pred.astype(np.int64)

    @staticmethod
    def _checked_rules(rules: Mapping[int, float], n_classes: int) -> dict[int, float]:
        checked = {}
        for c, t in dict(rules).items():
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < n_classes:
                raise ValidationError(f"rules: class {c!r} is not a class index in 0..{n_classes - 1}.")
            if not 0.0 < float(t) < 1.0:
                raise ValidationError(f"rules: threshold {t!r} for class {c} must be a probability in (0, 1).")
            checked[int(c)] = float(t)
        return checked

    def _checked_target(self, n_classes: int) -> int:
        c = self.target_class
        if c is None or isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < n_classes:
            raise ValidationError(f"optimize='recall' needs target_class in 0..{n_classes - 1}; got {c!r}.")
        if self.min_precision is None or not 0.0 < self.min_precision <= 1.0:
            raise ValidationError(f"optimize='recall' needs min_precision in (0, 1]; got {self.min_precision!r}.")
        return int(c)

    def _recall_threshold(self, p: NDArray, y: NDArray[np.int64]) -> float:
        c = int(self.target_class)  # type: ignore[arg-type]
        scores = p[:, c]
        order = np.argsort(-scores, kind="stable")
        hits = np.cumsum(y[order] == c)
        precision = hits / np.arange(1, len(order) + 1)
        ok = np.flatnonzero(precision >= self.min_precision)
        if len(ok) == 0:
            raise ValidationError(
                f"No threshold reaches precision {self.min_precision} for class {c} on these predictions."
            )
        cut = ok.max()
        # threshold half-way to the next lower score, so "p > t" selects exactly the top cut+1 rows
        lower = scores[order[cut + 1]] if cut + 1 < len(order) else 0.0
        return float(np.clip((scores[order[cut]] + lower) / 2, 1e-6, 1 - 1e-6))

    def _coordinate_ascent(self, p: NDArray, y: NDArray[np.int64], metric) -> NDArray:
        """Per-class offsets by coordinate ascent; each class's whole grid is scored at once.

        Moving class c's offset only switches rows between c and their best other class, so the
        predictions for every grid value form one (G, n) matrix scored with one bincount.
        """
        log_p = safe_log(p)
        n, n_classes = log_p.shape
        offsets = np.zeros(n_classes)
        grid = np.linspace(-self.max_offset, self.max_offset, self.grid_size)
        best = _batch_score((log_p + offsets).argmax(axis=1)[None], y, n_classes, metric.name)[0]
        for _ in range(self.n_passes):
            improved = False
            for c in range(n_classes):
                shifted = log_p + offsets
                others = shifted.copy()
                others[:, c] = -np.inf
                other_arg = others.argmax(axis=1)
                other_best = others[np.arange(n), other_arg]
                preds = np.where(log_p[None, :, c] + grid[:, None] > other_best[None], c, other_arg[None])
                scores = _batch_score(preds, y, n_classes, metric.name)
                g = int(np.argmax(scores))
                if scores[g] > best + 1e-12:
                    best, offsets[c], improved = float(scores[g]), grid[g], True
            if not improved:
                break
        self.score_ = best
        return offsets


def _batch_score(preds: NDArray, y: NDArray[np.int64], n_classes: int, metric: str) -> NDArray:
    """Accuracy or macro F1 of each row of ``preds`` (G, n) against ``y``."""
    hit = preds == y[None]
    if metric == "accuracy":
        return hit.mean(axis=1)
    n_grid = preds.shape[0]
    base = (np.arange(n_grid) * n_classes)[:, None]
    tp = np.bincount((base + preds)[hit], minlength=n_grid * n_classes).reshape(n_grid, n_classes)
    predicted = np.bincount((base + preds).ravel(), minlength=n_grid * n_classes).reshape(n_grid, n_classes)
    actual = np.bincount(y, minlength=n_classes)[None]
    denominator = predicted + actual
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return f1.mean(axis=1)
