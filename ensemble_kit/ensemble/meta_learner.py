"""Meta-learners trained on base models' OOF logits (any backend of ``_learners.LEARNERS``, or an estimator)."""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ensemble_kit.ensemble._base import BaseEnsembler
from ensemble_kit.ensemble._features import (FEATURE_KINDS, ClasswiseRows, WideRows, assemble_classwise, classwise_rows,
                                             wide_features)
from ensemble_kit.ensemble._inputs import LogitStack
from ensemble_kit.ensemble._learners import LEARNERS, FitRequest, LearnerBackend, resolve_learner
from ensemble_kit.ensemble._registry import register_ensembler
from ensemble_kit.ensemble._restore_checks import check_choice, check_int, describe, fault, field, restoring
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import PROB_EPS, log_softmax, safe_log

logger = logging.getLogger(__name__)

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


@register_ensembler("meta_learner")
class MetaLearner(BaseEnsembler):
    """A second-level model fitted on the base models' OOF logits.

    Parameters
    ----------
    learner : str or estimator
        A registered backend (``"lightgbm"``, ``"catboost"``, ``"logreg"``; see
        :data:`~ensemble_kit.ensemble.LEARNERS`) or any scikit-learn classifier with
        ``predict_proba`` (cloned for every fit). Boosted backends stop early on a random 10 % of
        the fitting samples (never on the rows being predicted), so no validation rows leak into
        their own predictions. ``"logreg"`` chooses its ``C`` by an inner CV on the fitting rows
        unless ``params`` gives one; it fits wide rows unscaled (every column is in nats) and
        standardises class-wise rows.
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
        Bag ``b`` is fitted with seed ``seed + b``.
    n_bags : int
        Fits averaged (mean of probabilities), each with its own seed: for boosted backends the
        seed moves the row subsampling and the samples held out for early stopping, so a bag
        also learns from every fitting row. 3 improved the CatBoost and LightGBM stages' nested
        OOF log loss by 0.004-0.013 on 1,800-5,000 rows, at three times their fit time
        (``docs/stacking.md``). A deterministic learner (``"logreg"``) gains nothing from more.
    n_jobs : int, optional
        Threads for the learner (default: one below 20,000 rows, else all cores).

    Attributes
    ----------
    layout_ : str
        The layout used (resolved when fitting).
    models_ : list
        The fitted learners, one per bag.
    n_iterations_ : list of int or None
        Boosting rounds each bag kept after early stopping.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 400)
    >>> logits = {f"m{i}": np.eye(3)[y] * 1.5 + rng.normal(size=(400, 3)) for i in range(3)}
    >>> MetaLearner("logreg").fit(logits, y).predict_proba(logits).shape
    (400, 3)
    >>> MetaLearner(LogisticRegression(C=0.1)).fit(logits, y).oof_proba_.shape
    (400, 3)
    """

    def __init__(self, learner: str | Any = "lightgbm", *, features: Literal["logprobs", "logits", "probs"] = "logprobs",
                 layout: Literal["wide", "classwise", "auto"] = "auto", max_candidates: int = 20,
                 params: dict[str, Any] | None = None, seed: int = 0, n_bags: int = 1,
                 n_jobs: int | None = None) -> None:
        self.learner = learner
        self.features = features
        self.layout = layout
        self.max_candidates = max_candidates
        self.params = params
        self.seed = seed
        self.n_bags = n_bags
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ template hooks
    _inherited = BaseEnsembler._inherited + ("layout_",)
    _needs_models = "a meta-learner learns how several models combine"

    def _start_fit(self, stack: LogitStack, y: NDArray[np.int64], folds: NDArray[np.int64]) -> None:
        if self.layout not in LAYOUTS:
            raise ValidationError(f"layout must be one of {LAYOUTS}; got {self.layout!r}.")
        resolve_learner(self.learner)  # an unknown name fails before any work
        self.layout_ = self.layout if self.layout != "auto" else (
            "classwise" if stack.n_classes > AUTO_CLASSWISE_ABOVE else "wide")
        if isinstance(self.n_bags, bool) or not isinstance(self.n_bags, (int, np.integer)) or self.n_bags < 1:
            raise ValidationError(f"n_bags must be a positive integer; got {self.n_bags!r}.")
        _warn_absent_classes(y, folds, stack.n_classes, owner=f"MetaLearner({self._learner_name()})")

    def _prepare(self, logits: NDArray) -> WideRows | ClasswiseRows:
        """Meta-features, built once per fit and sliced per fold."""
        if self.layout_ == "wide":
            return WideRows(wide_features(logits, self.features))
        return classwise_rows(logits, self.features, self.max_candidates)

    def _take(self, prepared: WideRows | ClasswiseRows, rows: NDArray[np.bool_]) -> WideRows | ClasswiseRows:
        return prepared.take(np.flatnonzero(rows))

    def _fit_prepared(self, rows: WideRows | ClasswiseRows, y: NDArray[np.int64], folds: NDArray[np.int64]) -> None:
        backend = resolve_learner(self.learner)
        if isinstance(rows, WideRows):
            X, target, groups, categorical, weight = rows.features, y, None, None, None
        else:
            target = (rows.candidates == y[:, None]).reshape(-1).astype(np.int64)
            groups = np.repeat(np.arange(len(y)), rows.candidates.shape[1])
            keep, weight = self._negative_subsample(target, backend)
            X, target, groups, categorical = rows.features[keep], target[keep], groups[keep], rows.class_column
        self.models_, self.n_iterations_ = [], []
        for bag in range(int(self.n_bags)):
            seed = self.seed + bag
            fit_rows, stop_rows = self._split(len(target), groups, seed) if backend.early_stopping else (
                np.arange(len(target)), np.arange(0))
            model = backend.fit(FitRequest(
                X=X, y=target, binary=groups is not None, n_classes=self.n_classes_, categorical=categorical,
                weight=weight, fit_rows=fit_rows, stop_rows=stop_rows, seed=seed, threads=self._threads(len(target)),
                params=dict(self.params or {}), groups=groups))
            self.models_.append(model)
            self.n_iterations_.append(backend.n_iterations(model))

    def _predict_prepared(self, rows: WideRows | ClasswiseRows) -> NDArray:
        backend = resolve_learner(self.learner)
        bags = [self._log_proba(backend, model, rows) for model in self.models_]
        if len(bags) == 1:
            return bags[0]
        return safe_log(np.mean(np.exp(bags), axis=0))  # the mean of the bags' probabilities

    def _log_proba(self, backend: LearnerBackend, model: Any, rows: WideRows | ClasswiseRows) -> NDArray:
        """One fitted learner's log-probabilities over all classes."""
        if isinstance(rows, WideRows):
            return self._all_classes(backend.scores(model, rows.features, binary=False, categorical=None),
                                     backend.classes(model))
        return assemble_classwise(rows, backend.scores(model, rows.features, binary=True, categorical=rows.class_column))

    def _fitted_state(self, out: Any, key: str) -> dict[str, Any]:
        backend = resolve_learner(self.learner)
        return {"layout": self.layout_, "n_iterations": self.n_iterations_,
                "models": [backend.save(model, out, f"{key}.model{bag}" if bag else f"{key}.model", n_iterations=n)
                           for bag, (model, n) in enumerate(zip(self.models_, self.n_iterations_))]}

    def _restore_fitted(self, state: dict[str, Any], source: Any) -> None:
        """Layout, bags and round counts from a saved stack, each checked (the stack is untrusted).

        The fitted models themselves are read by the backend's ``load``; what they know is then
        checked against the stack: a wide model's classes must be classes of the stack, and every
        model must turn the stack's ``n_models_`` x ``n_classes_`` logits into finite
        probabilities of every class (one two-row prediction, which also catches a model fitted
        on another number of features).
        """
        with restoring(f"MetaLearner({self._learner_name()})"):
            # the parameters prediction reads (the learner's name is looked up in the registry)
            backend = resolve_learner(check_choice(self.learner, "params.learner", LEARNERS.names()))
            check_choice(self.features, "params.features", FEATURE_KINDS)
            check_choice(self.layout, "params.layout", LAYOUTS)
            check_int(self.max_candidates, "params.max_candidates", minimum=1)
            layout = check_choice(field(state, "layout", "fitted.layout"), "fitted.layout", ("wide", "classwise"))
            if self.layout != "auto" and layout != self.layout:
                raise fault("fitted.layout", f"params.layout {self.layout!r} (the layout the fit was asked for)",
                            describe(layout))
            self.layout_ = layout
            models, n_iterations = self._saved_bags(state)
            self.models_ = [backend.load(saved, source) for saved in models]
            self.n_iterations_ = n_iterations
            for bag, model in enumerate(self.models_):
                self._check_restored_model(backend, model, f"fitted.models[{bag}]")

    def _saved_bags(self, state: dict[str, Any]) -> tuple[list[dict[str, Any]], list[int | None]]:
        """The saved models (one JSON object per bag) and their kept boosting rounds (one per bag)."""
        if "model" in state:  # saved before bagging: one model, one round count
            if "models" in state:
                raise fault("fitted.model", "absent when fitted.models is given (one format or the other)",
                            "both fields")
            models = [field(state, "model", "fitted.model")]
            n_iterations = [check_int(field(state, "n_iterations", "fitted.n_iterations"), "fitted.n_iterations",
                                      minimum=1, allow_none=True)]
        else:
            models = field(state, "models", "fitted.models")
            if not isinstance(models, list) or not models:
                raise fault("fitted.models", "a non-empty list of saved models, one per bag", describe(models))
            rounds = field(state, "n_iterations", "fitted.n_iterations")
            if not isinstance(rounds, list) or len(rounds) != len(models):
                raise fault("fitted.n_iterations", f"one round count per model: a list of {len(models)}",
                            describe(rounds))
            n_iterations = [check_int(n, f"fitted.n_iterations[{bag}]", minimum=1, allow_none=True)
                            for bag, n in enumerate(rounds)]
        for bag, saved in enumerate(models):
            if not isinstance(saved, dict):
                raise fault(f"fitted.models[{bag}]", "a JSON object describing the model's files", describe(saved))
        return models, n_iterations

    def _check_restored_model(self, backend: LearnerBackend, model: Any, name: str) -> None:
        """A loaded model knows only the stack's classes and predicts finite probabilities of all of them."""
        if self.layout_ == "wide":
            seen = backend.classes(model)
            # _all_classes() indexes the class columns with these: a negative class would silently
            # fill another column, one beyond n_classes_ would be a raw IndexError
            if seen is not None and (len(seen) == 0 or len(np.unique(seen)) != len(seen)
                                     or seen.min() < 0 or seen.max() >= self.n_classes_):
                raise fault(f"{name} classes", f"distinct class indices in [0, {self.n_classes_})",
                            describe(np.asarray(seen).tolist()))
        n_features = (self.n_models_ * (self.n_classes_ + 2) if self.layout_ == "wide"
                      else 3 * self.n_models_ + 7)
        probe = _probe_logits(self.n_models_, self.n_classes_)
        rows = self._prepare(probe)
        try:
            log_probs = self._log_proba(backend, model, rows)
        # any error: each library (scikit-learn, LightGBM, CatBoost, a registered backend) raises
        # its own type for a model that does not fit these features
        except Exception as exc:
            raise fault(name, f"a model of the stack's {self.n_models_} models x {self.n_classes_} classes "
                              f"({n_features} {self.layout_} features)",
                        f"one that cannot predict from them ({type(exc).__name__}: {exc})") from exc
        expected = (probe.shape[1], self.n_classes_)
        if np.shape(log_probs) != expected or not np.isfinite(log_probs).all():
            raise fault(name, f"a model predicting finite log-probabilities of shape {expected}",
                        f"shape {np.shape(log_probs)}, finite: {bool(np.isfinite(log_probs).all())}")

    # ------------------------------------------------------------------ helpers
    def _learner_name(self) -> str:
        return self.learner if isinstance(self.learner, str) else type(self.learner).__name__

    def _all_classes(self, log_probs: NDArray, seen: NDArray[np.int64] | None) -> NDArray:
        """Wide learners only know the classes they were fitted on: the others get probability ~0."""
        if seen is None or len(seen) == self.n_classes_:
            return log_softmax(log_probs)
        full = np.full((len(log_probs), self.n_classes_), np.log(PROB_EPS), dtype=np.float64)
        full[:, seen] = log_probs
        return log_softmax(full)

    def _negative_subsample(self, target: NDArray, backend: LearnerBackend) -> tuple[NDArray, NDArray | None]:
        n_neg = int((target == 0).sum())
        budget = _CLASSWISE_MAX_ROWS - int(target.sum())
        if len(target) <= _CLASSWISE_MAX_ROWS or budget >= n_neg or not backend.early_stopping:
            return np.arange(len(target)), None
        q = max(budget, 1) / n_neg
        rng = np.random.default_rng(self.seed + 1)
        keep = np.flatnonzero((target == 1) | (rng.random(len(target)) < q))
        weight = np.where(target[keep] == 1, 1.0, 1.0 / q)
        return keep, weight

    def _threads(self, n_rows: int) -> int:
        if self.n_jobs and self.n_jobs > 0:
            return self.n_jobs
        return 1 if n_rows < _SINGLE_THREAD_BELOW_ROWS else (os.cpu_count() or 1)

    @staticmethod
    def _split(n_rows: int, groups: NDArray | None, seed: int) -> tuple[NDArray, NDArray]:
        """Early-stopping holdout: a random 10 % of samples (all rows of a sample together)."""
        rng = np.random.default_rng(seed)
        units = groups if groups is not None else np.arange(n_rows)
        n_units = int(units.max()) + 1
        held = rng.random(n_units) < _EARLY_STOPPING_FRACTION
        mask = held[units]
        return np.flatnonzero(~mask), np.flatnonzero(mask)


def _probe_logits(n_models: int, n_classes: int) -> NDArray:
    """Two rows of logits for checking a loaded model: every model undecided, then every model
    confident in a different class (so the class-wise candidates and ranks vary)."""
    probe = np.zeros((n_models, 2, n_classes), dtype=np.float32)
    probe[np.arange(n_models), 1, np.arange(n_models) % n_classes] = 4.0
    return probe


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
