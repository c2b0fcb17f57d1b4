"""Meta-learners trained on base models' OOF logits: CatBoost, LightGBM, logistic regression."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ensemble_kit._optional import import_optional
from ensemble_kit.ensemble._base import BaseEnsembler
from ensemble_kit.ensemble._features import ClasswiseRows, WideRows, assemble_classwise, classwise_rows, wide_features
from ensemble_kit.ensemble._inputs import LogitInput
from ensemble_kit.ensemble._registry import register_ensembler
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import PROB_EPS, log_softmax, safe_log

logger = logging.getLogger(__name__)

META_KINDS = ("catboost", "lightgbm", "logreg")
LAYOUTS = ("wide", "classwise", "auto")
# Above this many classes "auto" uses the class-wise layout: a wide multi-class GBM would need
# M*C features and C trees per round.
AUTO_CLASSWISE_ABOVE = 20
# Below this many rows a GBM runs on one thread: small problems are dominated by OpenMP
# synchronisation, which degrades badly (100x measured) when other processes share the cores.
_SINGLE_THREAD_BELOW_ROWS = 20_000
_EARLY_STOPPING_FRACTION = 0.1
# Class-wise layouts are mostly negative rows (all candidates but the true class). Above this
# many rows, negatives are subsampled and the kept ones weighted by 1/q, which keeps the
# expected loss (hence calibration) unchanged at a fraction of the cost.
_CLASSWISE_MAX_ROWS = 200_000
_EARLY_STOPPING_ROUNDS = 50


@register_ensembler("meta_learner")
class MetaLearner(BaseEnsembler):
    """A second-level model fitted on the base models' OOF logits.

    Parameters
    ----------
    kind : {"catboost", "lightgbm", "logreg"}
        The learner. GBMs stop early on a random 10 % of the fitting samples (never on the
        rows being predicted), so no validation rows leak into their own predictions.
    features : {"logprobs", "logits", "probs"}
        How each model's output enters as features.
    layout : {"wide", "classwise", "auto"}
        ``"wide"``: one multi-class model on all M*C values. ``"classwise"``: one binary model
        over (sample, candidate class) rows whose features describe that class across models
        (value, rank, gap to the best other class, cross-model mean/spread, class id);
        predictions are renormalised per sample with a softmax. ``"auto"`` picks class-wise
        above 20 classes.
    max_candidates : int
        Class-wise layout: classes considered per sample (the most probable under the plain
        mean of the models); the others keep the plain-mean probability.
    params : dict, optional
        Overrides of the learner's parameters (e.g. ``{"depth": 4}`` for CatBoost).
    seed : int
    n_jobs : int, optional
        Threads for the learner (default: one below 20,000 rows, else all cores).

    Attributes
    ----------
    layout_ : str
        The layout used.
    model_ : object
        The fitted learner.
    n_iterations_ : int or None
        Boosting rounds kept after early stopping.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 400)
    >>> logits = {f"m{i}": np.eye(3)[y] * 1.5 + rng.normal(size=(400, 3)) for i in range(3)}
    >>> meta = MetaLearner("logreg").fit(logits, y)
    >>> meta.predict_proba(logits).shape
    (400, 3)
    """

    def __init__(self, kind: Literal["catboost", "lightgbm", "logreg"] = "lightgbm", *,
                 features: Literal["logprobs", "logits", "probs"] = "logprobs",
                 layout: Literal["wide", "classwise", "auto"] = "auto", max_candidates: int = 20,
                 params: dict[str, Any] | None = None, seed: int = 0, n_jobs: int | None = None) -> None:
        self.kind = kind
        self.features = features
        self.layout = layout
        self.max_candidates = max_candidates
        self.params = params
        self.seed = seed
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ fit / predict
    def fit(self, X: LogitInput, y: ArrayLike | None = None, *, folds: ArrayLike | None = None,
            models: Sequence[str] | None = None) -> MetaLearner:
        """As :meth:`BaseEnsembler.fit`; meta-features are built once and sliced per fold."""
        start = time.perf_counter()
        stack, yy, folds_array = self._validate_fit(X, y, folds, models)
        self._input_digest = ""  # no Optuna studies here; fold clones inherit the (unused) digest
        rows = self._rows(stack.logits)
        _warn_absent_classes(yy, folds_array, stack.n_classes, owner=f"MetaLearner({self.kind!r})")
        self._fit_rows(rows, yy)
        oof = np.zeros((stack.n_samples, stack.n_classes))
        for k in np.unique(folds_array):
            held = folds_array == k
            fold_model = clone(self)
            fold_model._inherit_fit_context(self, fold=int(k))
            fold_model._fit_rows(rows.take(np.flatnonzero(~held)), yy[~held])
            oof[held] = np.exp(fold_model._predict_rows(rows.take(np.flatnonzero(held))))
        self.oof_proba_ = oof
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _fit_final(self, logits: NDArray, y: NDArray[np.int64]) -> None:
        self._fit_rows(self._rows(logits), y)

    def _predict_log_proba(self, logits: NDArray) -> NDArray:
        return self._predict_rows(self._rows(logits))

    def _rows(self, logits: NDArray) -> WideRows | ClasswiseRows:
        if self.kind not in META_KINDS:
            raise ValidationError(f"kind must be one of {META_KINDS}; got {self.kind!r}.")
        if self.layout not in LAYOUTS:
            raise ValidationError(f"layout must be one of {LAYOUTS}; got {self.layout!r}.")
        n_classes = logits.shape[2]
        self.layout_ = self.layout if self.layout != "auto" else (
            "classwise" if n_classes > AUTO_CLASSWISE_ABOVE else "wide")
        if self.layout_ == "wide":
            return WideRows(wide_features(logits, self.features))
        return classwise_rows(logits, self.features, self.max_candidates)

    def _fit_rows(self, rows: WideRows | ClasswiseRows, y: NDArray[np.int64]) -> None:
        self.layout_ = "wide" if isinstance(rows, WideRows) else "classwise"
        if isinstance(rows, WideRows):
            n_classes = self.n_classes_
            self.model_, self.n_iterations_ = self._fit_learner(rows.features, y, n_classes=n_classes, groups=None,
                                                                categorical=None)
        else:
            target = (rows.candidates == y[:, None]).reshape(-1).astype(np.int64)
            groups = np.repeat(np.arange(len(y)), rows.candidates.shape[1])
            keep, weight = self._negative_subsample(target)
            self.model_, self.n_iterations_ = self._fit_learner(
                rows.features[keep], target[keep], n_classes=2, groups=groups[keep], categorical=rows.class_column,
                weight=weight)

    def _negative_subsample(self, target: NDArray) -> tuple[NDArray, NDArray | None]:
        n_neg = int((target == 0).sum())
        budget = _CLASSWISE_MAX_ROWS - int(target.sum())
        if len(target) <= _CLASSWISE_MAX_ROWS or budget >= n_neg or self.kind == "logreg":
            return np.arange(len(target)), None
        q = max(budget, 1) / n_neg
        rng = np.random.default_rng(self.seed + 1)
        keep = np.flatnonzero((target == 1) | (rng.random(len(target)) < q))
        weight = np.where(target[keep] == 1, 1.0, 1.0 / q)
        return keep, weight

    def _predict_rows(self, rows: WideRows | ClasswiseRows) -> NDArray:
        if isinstance(rows, WideRows):
            return log_softmax(self._raw_scores(rows.features))
        return assemble_classwise(rows, self._raw_scores(rows.features))

    # ------------------------------------------------------------------ learners
    def _threads(self, n_rows: int) -> int:
        if self.n_jobs and self.n_jobs > 0:
            return self.n_jobs
        return 1 if n_rows < _SINGLE_THREAD_BELOW_ROWS else (os.cpu_count() or 1)

    def _split(self, n_rows: int, groups: NDArray | None) -> tuple[NDArray, NDArray]:
        """Early-stopping holdout: a random 10 % of samples (all rows of a sample together)."""
        rng = np.random.default_rng(self.seed)
        units = groups if groups is not None else np.arange(n_rows)
        n_units = int(units.max()) + 1
        held = rng.random(n_units) < _EARLY_STOPPING_FRACTION
        mask = held[units]
        return np.flatnonzero(~mask), np.flatnonzero(mask)

    def _fit_learner(self, X: NDArray, y: NDArray, *, n_classes: int, groups: NDArray | None,
                     categorical: int | None, weight: NDArray | None = None) -> tuple[Any, int | None]:
        params = dict(self.params or {})
        if self.kind == "logreg":
            c = params.pop("C", 1.0)
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=params.pop("max_iter", 1000), **params))
            model.fit(X, y, logisticregression__sample_weight=weight)
            return model, None
        fit_idx, stop_idx = self._split(len(y), groups)
        w_fit = None if weight is None else weight[fit_idx]
        w_stop = None if weight is None else weight[stop_idx]
        binary = groups is not None  # class-wise rows; the wide layout is always multi-class
        if self.kind == "lightgbm":
            lgb = import_optional("lightgbm", feature="The LightGBM meta-learner")
            defaults = dict(learning_rate=0.1, num_leaves=15, min_data_in_leaf=50, feature_fraction=0.8,
                            bagging_fraction=0.8, bagging_freq=1, lambda_l2=5.0, seed=self.seed,
                            num_threads=self._threads(len(y)), verbosity=-1, deterministic=True, force_row_wise=True,
                            **({"objective": "binary"} if binary else {"objective": "multiclass", "num_class": n_classes}))
            rounds = params.pop("num_boost_round", 1000)
            categorical_features = [categorical] if categorical is not None else "auto"
            train_set = lgb.Dataset(X[fit_idx], y[fit_idx], weight=w_fit, categorical_feature=categorical_features,
                                    free_raw_data=True)
            stop_set = lgb.Dataset(X[stop_idx], y[stop_idx], weight=w_stop, reference=train_set,
                                   categorical_feature=categorical_features)
            booster = lgb.train({**defaults, **params}, train_set, num_boost_round=rounds, valid_sets=[stop_set],
                                callbacks=[lgb.early_stopping(_EARLY_STOPPING_ROUNDS, verbose=False)])
            return booster, int(booster.best_iteration or rounds)
        catboost = import_optional("catboost", feature="The CatBoost meta-learner")
        defaults = dict(iterations=1000, learning_rate=0.1, depth=5, l2_leaf_reg=5.0, bootstrap_type="Bernoulli",
                        subsample=0.8, border_count=128,
                        loss_function="Logloss" if binary else "MultiClass", random_seed=self.seed,
                        thread_count=self._threads(len(y)), verbose=False, allow_writing_files=False)
        model = catboost.CatBoostClassifier(**{**defaults, **params})
        model.fit(self._catboost_pool(X[fit_idx], y[fit_idx], categorical, w_fit),
                  eval_set=self._catboost_pool(X[stop_idx], y[stop_idx], categorical, w_stop),
                  early_stopping_rounds=_EARLY_STOPPING_ROUNDS)
        return model, int(model.get_best_iteration() or 0) + 1

    @staticmethod
    def _catboost_pool(X: NDArray, y: NDArray | None, categorical: int | None, weight: NDArray | None = None) -> Any:
        import pandas as pd
        from catboost import Pool

        if categorical is None:
            return Pool(X, y, weight=weight)
        frame = pd.DataFrame(X)
        frame[categorical] = frame[categorical].astype(np.int64)
        return Pool(frame, y, cat_features=[categorical], weight=weight)

    def _raw_scores(self, X: NDArray) -> NDArray:
        """Margins (binary, class-wise) or per-class log-probabilities (wide)."""
        if self.kind == "logreg":
            if self.layout_ == "classwise":
                return self.model_.decision_function(X)
            return self._all_classes(self.model_.predict_log_proba(X))
        if self.kind == "lightgbm":
            raw = self.model_.predict(X, raw_score=True, num_iteration=self.n_iterations_)
            return raw if self.layout_ == "classwise" else log_softmax(raw)
        pool = self._catboost_pool(X, None, X.shape[1] - 1 if self.layout_ == "classwise" else None)
        if self.layout_ == "classwise":
            return self.model_.predict(pool, prediction_type="RawFormulaVal")
        return self._all_classes(safe_log(self.model_.predict_proba(pool)))

    def _all_classes(self, log_probs: NDArray) -> NDArray:
        """Wide learners only know the classes they were fitted on: the others get probability ~0."""
        seen = np.asarray(self.model_.classes_, dtype=np.int64)
        if len(seen) == self.n_classes_:
            return log_probs
        full = np.full((len(log_probs), self.n_classes_), np.log(PROB_EPS), dtype=np.float64)
        full[:, seen] = log_probs
        return log_softmax(full)


def _warn_absent_classes(y: NDArray[np.int64], folds: NDArray[np.int64], n_classes: int, *, owner: str) -> None:
    """Say when a class has no rows to learn from, overall or in some fold's fitting part."""
    absent = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
    if absent:
        logger.warning("%s: classes %s have no training rows; their columns are kept with probability ~0", owner, absent)
    for k in np.unique(folds):
        missing = sorted(set(range(n_classes)) - set(np.unique(y[folds != k]).tolist()) - set(absent))
        if missing:
            logger.warning("%s: classes %s have no rows outside fold %d, so that fold's OOF predictions give them "
                           "probability ~0", owner, missing, k)
