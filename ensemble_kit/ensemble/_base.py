"""The contract every ensembler follows (scikit-learn style, on stacked per-model logits), and the
one nested-CV template every honest score in the package goes through.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from ensemble_kit.ensemble._claims import run_shared
from ensemble_kit.ensemble._inputs import LogitInput, LogitStack, as_logit_stack, check_same_models, resolve_fit_inputs
from ensemble_kit.ensemble._optuna import SEARCH_SPACE_VERSION, input_hash, study_name
from ensemble_kit.errors import ValidationError

__all__ = ["BaseEnsembler", "cross_fit"]

logger = logging.getLogger(__name__)


def cross_fit(folds: NDArray[np.int64], fit_predict: Callable[[NDArray, NDArray, int], NDArray]) -> NDArray:
    """Honest per-fold predictions: the nested-CV template of the whole package.

    For every fold ``k``, ``fit_predict(fit_rows, held_rows, k)`` fits on the other folds' rows
    (boolean masks) and returns predictions for fold ``k``'s rows; the parts are assembled in row
    order. Every OOF score ensemble_kit reports (stages, blends, temperatures, class offsets) is
    made this way, so no step ever scores rows it was fitted on. Folds run through
    :func:`~ensemble_kit.ensemble._claims.run_shared`: a process sharing a study storage with
    others tunes the folds no one else is tuning first.
    """
    ks = [int(k) for k in np.unique(folds)]
    if not ks:
        raise ValidationError("folds is empty: nothing to predict out of fold.")
    parts = run_shared([partial(_fit_predict_fold, fit_predict, folds, k) for k in ks])
    out = np.empty((len(folds),) + parts[0].shape[1:], dtype=parts[0].dtype)
    for k, part in zip(ks, parts):
        out[folds == k] = part
    return out


def _fit_predict_fold(fit_predict: Callable[[NDArray, NDArray, int], NDArray], folds: NDArray[np.int64],
                      k: int) -> NDArray:
    held = folds == k
    return np.asarray(fit_predict(~held, held, k))


class BaseEnsembler(BaseEstimator, ABC):
    """Base class of ensemblers: combine M models' logits into one probability matrix.

    :meth:`fit` validates the input, prepares it once (:meth:`_prepare`, e.g. meta-features),
    fits on all rows (:meth:`_fit_prepared`), and computes honest out-of-fold predictions
    ``oof_proba_`` with :func:`cross_fit`: for each fold, a clone fitted on the other folds
    predicts it. Subclasses implement ``_fit_prepared(prepared, y, folds)`` and
    ``_predict_prepared(prepared)`` (log-probabilities); the prepared input defaults to the
    per-model logits ``(M, n, C)`` (float32).

    Fitted attributes: ``model_names_``, ``n_models_``, ``n_classes_``, ``classes_``,
    ``oof_proba_`` (honest OOF probabilities), ``folds_``, ``fit_seconds_``.
    """

    # Ensembling needs several models; subclasses that work on one may lower this (and say why in
    # _needs_models: what the part does that takes several models).
    _min_models = 2
    _needs_models = "it combines several models"

    def _required_models(self) -> tuple[int, str]:
        """How many models this fit needs, and why."""
        return self._min_models, self._needs_models

    def fit(self, X: LogitInput, y: ArrayLike | None = None, *, folds: ArrayLike | None = None,
            models: Sequence[str] | None = None) -> BaseEnsembler:
        """Fit on OOF logits ``X`` with labels ``y`` (class indices).

        ``X`` is a dict name -> ``(n, C)`` logits, an ``(M, n, C)`` array or a
        :class:`~ensemble_kit.LogitStore` (then ``y`` and ``folds`` default to the store's, and
        ``models`` selects entries). ``folds`` (one fold index per row) drives the honest OOF
        predictions; default: 5 stratified folds seeded with ``seed``.
        """
        start = time.perf_counter()
        required, reason = self._required_models()
        stack, yy, folds_array = resolve_fit_inputs(X, y, folds, models, owner=type(self).__name__,
                                                    min_models=required, seed=getattr(self, "seed", 0), reason=reason)
        self.model_names_ = stack.names
        self.n_models_ = stack.n_models
        self.n_classes_ = stack.n_classes
        self.classes_ = np.arange(stack.n_classes)
        self.folds_ = folds_array
        self.study_names_: list[str] = []
        self._input_digest = input_hash(stack.logits, yy, folds_array)
        self._start_fit(stack, yy, folds_array)
        prepared = self._prepare(stack.logits)
        self._fit_common(prepared, yy, folds_array)

        def honest_oof() -> None:
            self.oof_proba_ = self._honest_oof(prepared, yy, folds_array)

        # the final fit and the fold fits are independent: with a shared study storage, another
        # process may be tuning the final study while this one tunes folds
        run_shared([partial(self._fit_final, prepared, yy, folds_array), honest_oof])
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def predict_log_proba(self, X: LogitInput, *, models: Sequence[str] | None = None) -> NDArray:
        check_is_fitted(self, "model_names_")
        return self._predict_log_proba(self._check_predict_input(X, models).logits)

    def predict_proba(self, X: LogitInput, *, models: Sequence[str] | None = None) -> NDArray:
        """Probabilities ``(n, C)``; for a LogitStore, of its fold-averaged test logits."""
        return np.exp(self.predict_log_proba(X, models=models))

    def predict(self, X: LogitInput, *, models: Sequence[str] | None = None) -> NDArray[np.int64]:
        """Most probable class index of every row."""
        return self.predict_proba(X, models=models).argmax(axis=1)

    # ---------------------------------------------------------------- for subclasses
    def _start_fit(self, stack: LogitStack, y: NDArray[np.int64], folds: NDArray[np.int64]) -> None:
        """Hook run once per fit, before anything is fitted (e.g. to resolve a layout or warn)."""

    def _prepare(self, logits: NDArray) -> Any:
        """What ``_fit_prepared``/``_predict_prepared`` consume, built once per fit (default: the logits)."""
        return logits

    def _take(self, prepared: Any, rows: NDArray[np.bool_]) -> Any:
        """The rows ``rows`` (a boolean mask over samples) of a prepared input.

        ``np.take`` returns a C-ordered copy; a boolean index on axis 1 would return one ordered
        rows-first, which every later row-wise pass (log-softmax, exp) walks far slower.
        """
        return np.take(prepared, np.flatnonzero(rows), axis=1)

    def _fit_common(self, prepared: Any, y: NDArray[np.int64], folds: NDArray[np.int64]) -> None:
        """Hook: what the final fit and the honest OOF predictions both build on, fitted once first
        (a blend's stages). Default: nothing."""

    def _fit_final(self, prepared: Any, y: NDArray[np.int64], folds: NDArray[np.int64]) -> None:
        """The fit on all rows, after :meth:`_fit_common` (default: :meth:`_fit_prepared`)."""
        self._fit_prepared(prepared, y, folds)

    @abstractmethod
    def _fit_prepared(self, prepared: Any, y: NDArray[np.int64], folds: NDArray[np.int64]) -> None: ...

    @abstractmethod
    def _predict_prepared(self, prepared: Any) -> NDArray: ...

    def _predict_log_proba(self, logits: NDArray) -> NDArray:
        return self._predict_prepared(self._prepare(logits))

    def _honest_oof(self, prepared: Any, y: NDArray[np.int64], folds: NDArray[np.int64]) -> NDArray:
        """OOF probabilities: for each fold, a clone fitted on the other folds predicts it."""

        def fit_predict(fit: NDArray, held: NDArray, k: int) -> NDArray:
            model = self._fold_clone(k)
            model._fit_prepared(self._take(prepared, fit), y[fit], folds[fit])
            return np.exp(model._predict_prepared(self._take(prepared, held)))

        return cross_fit(folds, fit_predict).astype(np.float64, copy=False)

    def _fold_clone(self, fold: int) -> BaseEnsembler:
        """An unfitted copy that fits one fold: it inherits what the parent's fit resolved."""
        model = clone(self)
        for attr in self._inherited:
            setattr(model, attr, getattr(self, attr))
        model._fold_tag = f"fold{fold}"
        model._parent = self
        return model

    # attributes a fold clone takes from its parent's fit
    _inherited = ("n_classes_", "n_models_", "model_names_", "classes_", "_input_digest")

    def _record_studies(self, names: list[str]) -> None:
        """Study names of this fit, on the estimator that was fitted by the user (not a fold clone)."""
        owner = self
        while getattr(owner, "_parent", None) is not None:
            owner = owner._parent
        recorded = owner.__dict__.setdefault("study_names_", [])
        recorded.extend(n for n in names if n not in recorded)  # a deferred task records its study again

    # ---------------------------------------------------------------- saving (ensemble/_persist.py)
    def _fitted_state(self, out: Any, key: str) -> dict[str, Any]:
        """The fitted state a prediction needs, as JSON with array references (``out.array``)."""
        raise ValidationError(f"{type(self).__name__} cannot be saved: it does not describe its fitted state.")

    def _restore_fitted(self, state: dict[str, Any], source: Any) -> None:
        """Set the fitted attributes from what :meth:`_fitted_state` wrote."""
        raise ValidationError(f"{type(self).__name__} cannot be loaded.")

    def _check_predict_input(self, X: LogitInput, models: Sequence[str] | None) -> LogitStack:
        from ensemble_kit.store import LogitStore

        if models is None and isinstance(X, LogitStore):
            models = list(self.model_names_)
        stack = as_logit_stack(X, models=models, split="test")
        check_same_models(self.model_names_, stack.names, self.n_classes_, stack)
        return stack

    def _study_name(self, stage: str, metric: str, *arrays: NDArray, extra: str = "") -> str:
        """``<stage>-<metric>-<models>-<digest>-<final|foldK>`` (:func:`~ensemble_kit.ensemble._optuna.study_name`):
        the digest covers the fit's whole input, the model names and ``extra`` (the stage's options)."""
        digest = getattr(self, "_input_digest", None) or input_hash(*arrays)
        names = "\x1f".join(str(n) for n in self.model_names_)
        digest = input_hash(extra=digest + extra + names + SEARCH_SPACE_VERSION)
        return study_name(stage, metric=metric, models=self.model_names_, digest=digest,
                          fold=getattr(self, "_fold_tag", "final"))
