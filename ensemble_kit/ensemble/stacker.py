"""The Stacker: the front door from stored OOF logits to a blended, calibrated ensemble."""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager, nullcontext
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from ensemble_kit.decision.calibration import TemperatureScaling, fit_temperature
from ensemble_kit.decision.thresholds import ClassThresholds
from ensemble_kit.ensemble._base import BaseEnsembler
from ensemble_kit.ensemble._inputs import LogitInput, as_logit_stack, check_same_models, nested_by_fold, resolve_fit_inputs
from ensemble_kit.ensemble._recipes import DEFAULT_RECIPE, StackPlan, build_plan
from ensemble_kit.ensemble.blending import Blender
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import accuracy, f1_macro, get_metric, log_loss, log_softmax
from ensemble_kit.store import LogitStore

logger = logging.getLogger(__name__)

def _scores(y: NDArray, probs: NDArray, labels: NDArray | None = None) -> dict[str, float]:
    """Log loss from probabilities; accuracy/F1 from ``labels`` when a decision rule made them."""
    from sklearn.metrics import f1_score

    result = {"log_loss": log_loss(y, probs, kind="probs")}
    if labels is None:
        result["accuracy"] = accuracy(y, probs, kind="probs")
        result["f1_macro"] = f1_macro(y, probs, kind="probs")
    else:
        result["accuracy"] = float(np.mean(labels == y))
        result["f1_macro"] = float(f1_score(y, labels, labels=np.arange(probs.shape[1]), average="macro", zero_division=0))
    return result


class Stacker(BaseEstimator):
    """Stack many models' OOF logits into one classifier, with an honest report of every stage.

    Parameters
    ----------
    recipe : {"full", "yandex", "aoi", "hill_climb", "logloss"} or None
        ``"full"`` (default): logistic stack on the log-probs (class-wise above 20 classes) +
        CatBoost + LightGBM + Optuna soft vote -> Optuna-tuned blend (nested), then temperature
        scaling when the metric is log loss, or class offsets tuned for the metric when it
        scores labels (``"f1_macro"``, ``"accuracy"``).
        ``"yandex"``: the original recipe, soft vote + CatBoost + LightGBM -> fixed
        0.4/0.3/0.3 blend, then the same temperature or class offsets.
        ``"aoi"``: weighted soft vote + the "class 2 when p > 0.4" rule. ``"hill_climb"``:
        Caruana selection. ``"logloss"``: the ``"full"`` stages and blend, always followed by
        temperature scaling. ``None``: give ``stages`` (and optionally ``blend``,
        ``calibrate``, ``thresholds``).
    metric : {"log_loss", "accuracy", "f1_macro"}
        What tuning optimises and what the report is sorted by.
    n_trials : int
        Optuna trials per tuning run.
    seed : int
    storage : str or optuna storage, optional
        Where Optuna studies go. ``None``: in memory, or ``sqlite:///STORE/optuna.db`` when
        fitted from a store (open it with ``ensemble-kit dashboard STORE``).
    stages, blend, calibrate, thresholds
        For ``recipe=None``: dict of ensemblers; blend weights (dict or ``"optuna"``);
        whether to fit a final temperature; a :class:`ClassThresholds`.

    Attributes
    ----------
    report_ : pandas.DataFrame
        Honest CV metrics (each computed on predictions the scored step never saw while
        fitting) for every base model, the plain probability mean and every stage.
    blender_ : Blender or BaseEnsembler
    temperature_ : float or None
    thresholds_ : ClassThresholds or None
    oof_proba_ : ndarray
        Honest OOF probabilities of the final ensemble.
    storage_ : str or None
        The Optuna storage used.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 300)
    >>> oof = {f"m{i}": np.eye(3)[y] * (1 + i) + rng.normal(size=(300, 3)) * 2 for i in range(3)}
    >>> stk = Stacker(recipe="hill_climb").fit(oof, y)
    >>> stk.predict_proba(oof).shape, stk.report_["step"].tolist()[-2:]
    ((300, 3), ['mean_probs', 'hill_climbing'])
    """

    def __init__(self, recipe: str | None = DEFAULT_RECIPE, *, metric: str = "log_loss", n_trials: int = 200, seed: int = 0,
                 storage: str | optuna.storages.BaseStorage | None = None,
                 stages: Mapping[str, BaseEnsembler] | None = None, blend: Mapping[str, float] | str | None = None,
                 calibrate: bool = False, thresholds: ClassThresholds | None = None) -> None:
        self.recipe = recipe
        self.metric = metric
        self.n_trials = n_trials
        self.seed = seed
        self.storage = storage
        self.stages = stages
        self.blend = blend
        self.calibrate = calibrate
        self.thresholds = thresholds

    @classmethod
    def from_store(cls, store: LogitStore, models: Sequence[str] | None = None, **params: Any) -> Stacker:
        """Fit a Stacker on a store's OOF logits (its labels and folds), studies kept in the store."""
        return cls(**params).fit(store, models=models)

    # ------------------------------------------------------------------ fit
    def fit(self, oof_logits: LogitInput, y: ArrayLike | None = None, *, folds: ArrayLike | None = None,
            models: Sequence[str] | None = None) -> Stacker:
        """Fit every stage on OOF logits; see the class docstring for the input types."""
        start = time.perf_counter()
        stack, yy, folds_array = resolve_fit_inputs(oof_logits, y, folds, models, owner="Stacker", min_models=2,
                                                    seed=self.seed)
        self.storage_ = self.storage
        studies_lock: AbstractContextManager[None] = nullcontext()
        if self.storage_ is None and isinstance(oof_logits, LogitStore):
            # one stack at a time tunes a store's own studies; a second one waits, then reuses them
            self.storage_ = oof_logits.workspace.study_storage()
            studies_lock = oof_logits.workspace.studies_lock()
        with studies_lock:
            self._fit_plan(oof_logits, stack, yy, folds_array)
        self.fit_seconds_ = time.perf_counter() - start
        logger.info("Stacker(%s) fitted in %.1fs", self.recipe, self.fit_seconds_)
        return self

    def _fit_plan(self, oof_logits: LogitInput, stack: Any, yy: NDArray[np.int64], folds_array: NDArray[np.int64]) -> None:
        plan = self._plan()
        self.model_names_, self.n_classes_, self.folds_ = stack.names, stack.n_classes, folds_array
        self._from_store = isinstance(oof_logits, LogitStore)
        rows: list[dict[str, Any]] = []
        for name, logits in zip(stack.names, stack.logits):
            rows.append({"step": name, "kind": "base model", **_scores(yy, np.exp(log_softmax(logits))), "fit_seconds": np.nan})
        mean_probs = np.exp(log_softmax(stack.logits)).mean(axis=0)
        rows.append({"step": "mean_probs", "kind": "reference", **_scores(yy, mean_probs), "fit_seconds": 0.0})

        named = dict(zip(stack.names, stack.logits))  # keep model names for predicting from a store
        if plan.blend_weights is None:
            if len(plan.stages) != 1:
                raise ValidationError("Several stages need blend weights (a dict or 'optuna').")
            (stage_name, stage), = plan.stages.items()
            self.blender_ = clone(stage).fit(named, yy, folds=folds_array)
            rows.append({"step": stage_name, "kind": "stage", **_scores(yy, self.blender_.oof_proba_),
                         "fit_seconds": self.blender_.fit_seconds_})
        else:
            self.blender_ = Blender(plan.blend_weights, stages=plan.stages, metric=self.metric, n_trials=self.n_trials,
                                    seed=self.seed, storage=self.storage_).fit(named, yy, folds=folds_array)
            for name, stage in self.blender_.stages_.items():
                rows.append({"step": name, "kind": "stage", **_scores(yy, stage.oof_proba_), "fit_seconds": stage.fit_seconds_})
            rows.append({"step": "blend", "kind": "blend", **_scores(yy, self.blender_.oof_proba_),
                         "fit_seconds": self.blender_.fit_seconds_})
        oof = self.blender_.oof_proba_

        self.temperature_ = None
        if plan.calibrate:
            t0 = time.perf_counter()
            log_oof = np.log(np.clip(oof, 1e-12, None))
            self.temperature_ = fit_temperature(log_oof, yy)
            oof = nested_by_fold(folds_array, lambda fit, held, _k: np.exp(
                log_softmax(log_oof[held] / fit_temperature(log_oof[fit], yy[fit]))))
            rows.append({"step": "+temperature", "kind": "calibration", **_scores(yy, oof),
                         "fit_seconds": time.perf_counter() - t0})

        self.thresholds_ = None
        labels = oof.argmax(axis=1)
        if plan.thresholds is not None:
            t0 = time.perf_counter()
            self.thresholds_ = clone(plan.thresholds).fit(oof, yy)
            if plan.thresholds.rules is not None:
                labels = self.thresholds_.predict(oof)  # fixed rules learn nothing: no nesting needed
                rows.append({"step": "+thresholds", "kind": "decision", **_scores(yy, oof, labels),
                             "fit_seconds": time.perf_counter() - t0})
            else:
                tuned = nested_by_fold(folds_array, lambda fit, held, _k: clone(plan.thresholds).fit(
                    oof[fit], yy[fit]).predict(oof[held]))
                tuned_scores = _scores(yy, oof, tuned)
                metric = get_metric(self.metric)
                gain = (tuned_scores[metric.name] - _scores(yy, oof)[metric.name]) * (1 if metric.greater_is_better else -1)
                # Offsets that lose on held-out folds fit fold-specific biases of the OOF
                # predictions, not the classes: keep arg-max decisions rather than ship them.
                keep = gain >= 0
                rows.append({"step": "+thresholds" if keep else "+thresholds (rejected: worse on held-out folds)",
                             "kind": "decision", **tuned_scores, "fit_seconds": time.perf_counter() - t0})
                if keep:
                    labels = tuned
                else:
                    logger.warning("class offsets lower nested-CV %s by %.4f: decisions stay arg-max", metric.name, -gain)
                    self.thresholds_ = None
        self.oof_proba_ = oof
        self.oof_labels_ = labels
        self.plan_ = plan
        self.report_ = pd.DataFrame(rows)

    def _plan(self) -> StackPlan:
        if self.recipe is not None:
            if self.stages is not None:
                raise ValidationError("Give either recipe=... or stages=... (with recipe=None), not both.")
            return build_plan(self.recipe, metric=self.metric, n_trials=self.n_trials, seed=self.seed, storage=self.storage_)
        if not self.stages:
            raise ValidationError("recipe=None needs stages={name: ensembler, ...}.")
        blend = self.blend if self.blend is not None else ("optuna" if len(self.stages) > 1 else None)
        return StackPlan(stages=dict(self.stages), blend_weights=blend, calibrate=self.calibrate,
                         thresholds=self.thresholds, description="custom")

    # ------------------------------------------------------------------ predict
    def predict_proba(self, test_logits: LogitInput, *, models: Sequence[str] | None = None) -> NDArray:
        """Probabilities ``(n, C)``; a LogitStore gives its fold-averaged test logits."""
        check_is_fitted(self, "blender_")
        if models is None and isinstance(test_logits, LogitStore):
            models = list(self.model_names_)
        stack = as_logit_stack(test_logits, models=models, split="test")
        check_same_models(self.model_names_, stack.names, self.n_classes_, stack)
        log_p = self.blender_._predict_log_proba(stack.logits)
        if self.temperature_ is not None:
            log_p = log_softmax(log_p / self.temperature_)
        return np.exp(log_p)

    def predict(self, test_logits: LogitInput, *, models: Sequence[str] | None = None) -> NDArray[np.int64]:
        """Class indices, under the fitted class thresholds when the recipe has them."""
        return self.decide(self.predict_proba(test_logits, models=models))

    def decide(self, proba: ArrayLike) -> NDArray[np.int64]:
        """Class indices for probabilities from :meth:`predict_proba` (fitted thresholds or rules, else arg-max)."""
        check_is_fitted(self, "blender_")
        probs = np.asarray(proba)
        return self.thresholds_.predict(probs) if self.thresholds_ is not None else probs.argmax(axis=1)

    @property
    def study_names_(self) -> list[str]:
        """Names of every Optuna study this fit ran (open them in optuna-dashboard)."""
        check_is_fitted(self, "blender_")
        names: list[str] = list(getattr(self.blender_, "study_names_", []))
        for stage in getattr(self.blender_, "stages_", {}).values():
            names += getattr(stage, "study_names_", [])
        return names


__all__ = ["Stacker", "TemperatureScaling"]
