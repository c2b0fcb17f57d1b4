"""The contract every ensembler follows (scikit-learn style, on stacked per-model logits)."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from ensemble_kit.ensemble._inputs import LogitInput, as_logit_stack, check_same_models, resolve_fit_inputs
from ensemble_kit.ensemble._optuna import SEARCH_SPACE_VERSION, input_hash

logger = logging.getLogger(__name__)


class BaseEnsembler(BaseEstimator, ABC):
    """Base class of ensemblers: combine M models' logits into one probability matrix.

    Subclasses implement ``_fit_final(logits, y)`` (fit on the rows given) and
    ``_predict_log_proba(logits)``; both receive the per-model logits ``(M, n, C)`` (float32).
    :meth:`fit` validates the input, fits on all rows, and computes honest out-of-fold
    predictions ``oof_proba_`` by refitting a clone on K-1 folds for each fold.

    Fitted attributes: ``model_names_``, ``n_models_``, ``n_classes_``, ``classes_``,
    ``oof_proba_`` (honest OOF probabilities), ``folds_``, ``fit_seconds_``.
    """

    # Ensembling needs several models; subclasses that work on one may lower this.
    _min_models = 2

    def fit(self, X: LogitInput, y: ArrayLike | None = None, *, folds: ArrayLike | None = None,
            models: Sequence[str] | None = None) -> BaseEnsembler:
        """Fit on OOF logits ``X`` with labels ``y`` (class indices).

        ``X`` is a dict name -> ``(n, C)`` logits, an ``(M, n, C)`` array or a
        :class:`~ensemble_kit.LogitStore` (then ``y`` and ``folds`` default to the store's, and
        ``models`` selects entries). ``folds`` (one fold index per row) drives the honest OOF
        predictions; default: 5 stratified folds seeded with ``seed``.
        """
        start = time.perf_counter()
        stack, yy, folds_array = self._validate_fit(X, y, folds, models)
        self._input_digest = input_hash(stack.logits, yy, folds_array)
        self._fit_final(stack.logits, yy)
        self.oof_proba_ = self._honest_oof(stack.logits, yy, folds_array)
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def predict_log_proba(self, X: LogitInput, *, models: Sequence[str] | None = None) -> NDArray:
        check_is_fitted(self, "model_names_")
        stack = as_logit_stack(X, models=models if models is not None else self._store_models(X), split="test")
        check_same_models(self.model_names_, stack.names, self.n_classes_, stack)
        return self._predict_log_proba(stack.logits)

    def predict_proba(self, X: LogitInput, *, models: Sequence[str] | None = None) -> NDArray:
        """Probabilities ``(n, C)``; for a LogitStore, of its fold-averaged test logits."""
        return np.exp(self.predict_log_proba(X, models=models))

    def predict(self, X: LogitInput, *, models: Sequence[str] | None = None) -> NDArray[np.int64]:
        """Most probable class index of every row."""
        return self.predict_proba(X, models=models).argmax(axis=1)

    # ---------------------------------------------------------------- for subclasses
    @abstractmethod
    def _fit_final(self, logits: NDArray, y: NDArray[np.int64]) -> None: ...

    @abstractmethod
    def _predict_log_proba(self, logits: NDArray) -> NDArray: ...

    # ---------------------------------------------------------------- internals
    def _validate_fit(self, X, y, folds, models):
        stack, yy, folds_array = resolve_fit_inputs(X, y, folds, models, owner=type(self).__name__,
                                                    min_models=self._min_models, seed=getattr(self, "seed", 0))
        self.model_names_ = stack.names
        self.n_models_ = stack.n_models
        self.n_classes_ = stack.n_classes
        self.classes_ = np.arange(stack.n_classes)
        self.folds_ = folds_array
        return stack, yy, folds_array

    def _store_models(self, X) -> list[str] | None:
        from ensemble_kit.store import LogitStore

        return list(self.model_names_) if isinstance(X, LogitStore) else None

    def _honest_oof(self, logits: NDArray, y: NDArray[np.int64], folds: NDArray[np.int64]) -> NDArray:
        """OOF probabilities: for each fold, a clone fitted on the other folds predicts it."""
        oof = np.zeros((logits.shape[1], logits.shape[2]), dtype=np.float64)
        for k in np.unique(folds):
            held_out = folds == k
            model = clone(self)
            model._inherit_fit_context(self, fold=int(k))
            model._fit_final(logits[:, ~held_out], y[~held_out])
            oof[held_out] = np.exp(model._predict_log_proba(logits[:, held_out]))
            if hasattr(self, "study_names_"):
                self.study_names_ += model.study_names_
            logger.debug("%s fold %d fitted", type(self).__name__, k)
        return oof

    def _inherit_fit_context(self, parent: BaseEnsembler, *, fold: int) -> None:
        """Give a per-fold clone what it needs from the parent's fit (e.g. a study name suffix)."""
        self.n_classes_ = parent.n_classes_
        self.n_models_ = parent.n_models_
        self.model_names_ = parent.model_names_
        self._input_digest = parent._input_digest
        self._fold_tag = f"fold{fold}"

    def _study_name(self, stage: str, *arrays: NDArray, extra: str = "") -> str:
        """``<stage>-<digest of the fit's whole input>-<final|foldK>``: one prefix per fit."""
        digest = getattr(self, "_input_digest", None) or input_hash(*arrays)
        digest = input_hash(extra=digest + extra + SEARCH_SPACE_VERSION)
        return f"{stage}-{digest}-{getattr(self, '_fold_tag', 'final')}"
