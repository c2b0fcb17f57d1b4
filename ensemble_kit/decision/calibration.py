"""Temperature scaling: one scalar that divides the logits, fitted by minimising log loss."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize_scalar
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import check_kind, log_softmax, safe_log
from ensemble_kit.metrics._scores import check_targets

_LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))
#: Rows a temperature is fitted on at most (a seeded sample beyond that).
TEMPERATURE_ROWS = 10_000


def fit_temperature(logits: NDArray, y: NDArray[np.int64], *, kind: str = "logits",
                    max_rows: int | None = TEMPERATURE_ROWS, seed: int = 0) -> float:
    """Temperature T in [0.05, 20] minimising the log loss of ``softmax(logits / T)``.

    ``kind="probs"``: ``logits`` holds probabilities (their logs are the logits). A temperature
    is one number: beyond ``max_rows`` rows it is fitted on a sample of that many (drawn with
    ``seed``), which is as good and far cheaper at hundreds of classes.
    """
    check_kind(kind)
    if max_rows is not None and len(y) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(len(y), max_rows, replace=False))
        logits, y = logits[rows], y[rows]
    z = np.asarray(safe_log(logits) if kind == "probs" else logits, dtype=np.float32)
    true = z[np.arange(len(y)), y].astype(np.float64)
    top = z.max(axis=1, keepdims=True)

    def nll(log_t: float) -> float:
        t = np.exp(log_t)
        # log_softmax(z / t)[y] = (z_y - max) / t - log sum exp((z - max) / t)
        lse = np.log(np.exp((z - top) / np.float32(t)).sum(axis=1, dtype=np.float64))
        return float(-np.mean((true - top[:, 0]) / t - lse))

    result = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-3})
    return float(np.exp(result.x))


class TemperatureScaling(BaseEstimator):
    """Calibrate logits with one temperature (Guo et al., 2017) for log-loss competitions.

    Parameters
    ----------
    kind : {"logits", "probs"}
        What ``fit``/``transform`` receive; probabilities are turned into log-probabilities.

    Attributes
    ----------
    temperature_ : float
        Fitted temperature; values above 1 soften over-confident predictions.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 500)
    >>> logits = np.eye(3)[y] * 2 + rng.normal(size=(500, 3))
    >>> base = TemperatureScaling().fit(logits, y).temperature_
    >>> hot = TemperatureScaling().fit(logits * 5, y).temperature_  # 5x more confident
    >>> round(hot / base, 2)
    5.0
    """

    def __init__(self, *, kind: str = "logits") -> None:
        self.kind = kind

    def _log_probs(self, scores: ArrayLike) -> NDArray:
        if self.kind not in ("logits", "probs"):
            raise ValidationError(f"kind must be 'logits' or 'probs'; got {self.kind!r}.")
        s = np.asarray(scores, dtype=np.float64)
        return log_softmax(s) if self.kind == "logits" else safe_log(s)

    def fit(self, scores: ArrayLike, y: ArrayLike) -> TemperatureScaling:
        yy, s = check_targets(y, scores)
        self.temperature_ = fit_temperature(self._log_probs(s), yy)
        self.n_classes_ = s.shape[1]
        return self

    def transform(self, scores: ArrayLike) -> NDArray:
        """Calibrated log-probabilities."""
        check_is_fitted(self)
        return log_softmax(self._log_probs(scores) / self.temperature_)

    def predict_proba(self, scores: ArrayLike) -> NDArray:
        return np.exp(self.transform(scores))
