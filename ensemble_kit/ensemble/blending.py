"""Blend the outputs of several ensembling stages (the Yandex 0.4/0.3/0.3 recipe by default)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from numpy.typing import ArrayLike, NDArray
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ensemble_kit.ensemble._base import BaseEnsembler
from ensemble_kit.ensemble._inputs import LogitInput, as_logit_stack, check_same_models, default_folds, nested_by_fold
from ensemble_kit.ensemble._optuna import SEARCH_SPACE_VERSION, input_hash, run_study, starting_points, suggest_weights
from ensemble_kit.ensemble._registry import register_ensembler
from ensemble_kit.ensemble.meta_learner import MetaLearner
from ensemble_kit.ensemble.voting import SoftVoting, mixture_log_loss
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import get_metric

YANDEX_WEIGHTS = {"catboost": 0.4, "lightgbm": 0.3, "soft_vote": 0.3}


def default_stages(*, metric: str = "log_loss", n_trials: int = 100, seed: int = 0,
                   storage: Any = None) -> dict[str, BaseEnsembler]:
    """The Yandex stages: class-wise CatBoost and LightGBM on log-probs, Optuna soft vote."""
    return {
        "catboost": MetaLearner("catboost", seed=seed),
        "lightgbm": MetaLearner("lightgbm", seed=seed),
        "soft_vote": SoftVoting("optuna", temperature=True, metric=metric, n_trials=n_trials, seed=seed, storage=storage),
    }


def mix(stage_probs: Mapping[str, NDArray], weights: Mapping[str, float]) -> NDArray:
    """Weighted average of stage probabilities, returned as log-probabilities."""
    total = sum(weights.values())
    mixed = sum((w / total) * stage_probs[name] for name, w in weights.items())
    return np.log(np.clip(mixed / mixed.sum(axis=1, keepdims=True), 1e-12, 1.0))


@register_ensembler("blend")
class Blender(BaseEnsembler):
    """Weighted blend of ensembling stages, e.g. ``0.4 CatBoost + 0.3 LightGBM + 0.3 soft vote``.

    Parameters
    ----------
    weights : dict stage name -> weight, or "optuna"
        Fixed weights (the Yandex recipe by default) or weights tuned with Optuna on the
        stages' honest OOF predictions.
    stages : dict name -> ensembler, optional
        The stages to blend (default: :func:`default_stages`). Each is cloned and fitted on
        the same folds; their honest OOF predictions feed the weight tuning.
    metric, n_trials, seed, storage
        As in :class:`SoftVoting` (used when ``weights="optuna"`` and by default stages).

    Attributes
    ----------
    stages_ : dict of fitted ensemblers
    weights_ : dict stage name -> weight (sums to 1)
    stage_oof_ : dict stage name -> honest OOF probabilities

    Notes
    -----
    With ``weights="optuna"`` the blend's own OOF predictions are nested: for each fold, the
    weights are tuned on the other folds' stage OOF predictions and applied to that fold.
    """

    def __init__(self, weights: Mapping[str, float] | str | None = None, *, stages: Mapping[str, BaseEnsembler] | None = None,
                 metric: str = "log_loss", n_trials: int = 100, seed: int = 0,
                 storage: str | optuna.storages.BaseStorage | None = None) -> None:
        self.weights = weights
        self.stages = stages
        self.metric = metric
        self.n_trials = n_trials
        self.seed = seed
        self.storage = storage

    def fit(self, X: LogitInput, y: ArrayLike | None = None, *, folds: ArrayLike | None = None,
            models: Sequence[str] | None = None) -> Blender:
        start = time.perf_counter()
        stack, yy, folds_array = self._validate_fit(X, y, folds, models)
        self._input_digest = input_hash(stack.logits, yy, folds_array)
        self._fit_blend(dict(zip(stack.names, stack.logits)), yy, folds_array)
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _fit_blend(self, named: Mapping[str, NDArray], yy: NDArray[np.int64], folds_array: NDArray[np.int64]) -> None:
        """Fit every stage on the same folds, then the blend weights (nested by fold)."""
        self.study_names_: list[str] = []
        stages = dict(self.stages) if self.stages is not None else default_stages(
            metric=self.metric, n_trials=self.n_trials, seed=self.seed, storage=self.storage)
        weights = YANDEX_WEIGHTS if self.weights is None else self.weights
        if not stages:
            raise ValidationError("Blender needs at least one stage.")
        if not isinstance(weights, str):
            unknown = sorted(set(weights) - set(stages))
            if unknown:
                raise ValidationError(f"Blend weights name stages {unknown} that do not exist; stages are {sorted(stages)}.")
            if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise ValidationError(f"Blend weights must be non-negative with a positive sum; got {dict(weights)}.")
        elif weights != "optuna":
            raise ValidationError(f"weights must be a dict of stage weights or 'optuna'; got {weights!r}.")
        self.stages_ = {}
        bar = tqdm(stages.items(), total=len(stages), desc="blend: stages (each nested over the folds)", disable=None)
        for name, stage in bar:
            bar.set_postfix_str(name)
            self.stages_[name] = clone(stage).fit(named, yy, folds=folds_array)
        self.stage_oof_ = {name: stage.oof_proba_ for name, stage in self.stages_.items()}
        if isinstance(weights, str):
            self.weights_ = self._tune(self.stage_oof_, yy, tag="final")

            def fit_predict(fit: NDArray, held: NDArray, k: int) -> NDArray:
                w = self._tune({n: p[fit] for n, p in self.stage_oof_.items()}, yy[fit], tag=f"fold{k}")
                return np.exp(mix({n: p[held] for n, p in self.stage_oof_.items()}, w))

            self.oof_proba_ = nested_by_fold(folds_array, fit_predict)
        else:
            total = float(sum(weights.values()))
            self.weights_ = {n: float(w) / total for n, w in weights.items()}
            self.oof_proba_ = np.exp(mix(self.stage_oof_, self.weights_))

    def _tune(self, stage_probs: Mapping[str, NDArray], y: NDArray[np.int64], *, tag: str) -> dict[str, float]:
        metric = get_metric(self.metric)
        names = list(stage_probs)
        if metric.name == "log_loss":
            mixture_loss = mixture_log_loss(np.stack([stage_probs[n][np.arange(len(y)), y] for n in names]))

            def objective(trial: optuna.Trial) -> float:
                weights = suggest_weights(trial, names)
                return mixture_loss(np.array([weights[n] for n in names]))
        else:
            def objective(trial: optuna.Trial) -> float:
                return metric.loss(y, mix(stage_probs, suggest_weights(trial, names)), kind="logits")

        digest = input_hash(extra=self._input_digest + ",".join(names) + SEARCH_SPACE_VERSION)
        name = f"blend-{metric.name}-{digest}-{tag}"
        self.study_names_.append(name)
        study = run_study(name, objective, n_trials=self.n_trials, seed=self.seed,
                          storage=self.storage, enqueue=starting_points(names, self.n_trials))
        total = sum(study.best_params.values())
        return {n: study.best_params[n] / total for n in names}

    def stage_proba(self, X: LogitInput, *, models: Sequence[str] | None = None) -> dict[str, NDArray]:
        """Each fitted stage's probabilities for ``X``."""
        check_is_fitted(self, "stages_")
        stack = as_logit_stack(X, models=models if models is not None else self._store_models(X), split="test")
        check_same_models(self.model_names_, stack.names, self.n_classes_, stack)
        return {name: np.exp(stage._predict_log_proba(stack.logits)) for name, stage in self.stages_.items()}

    def _fit_final(self, logits: NDArray, y: NDArray[np.int64]) -> None:
        """Fit on these rows alone (e.g. as a fold clone), with stratified folds seeded by ``seed``."""
        if not getattr(self, "_input_digest", None):
            self._input_digest = input_hash(logits, y)
        self._fit_blend(dict(zip(self.model_names_, logits)), y, default_folds(y, None, seed=self.seed))

    def _predict_log_proba(self, logits: NDArray) -> NDArray:
        probs = {name: np.exp(stage._predict_log_proba(logits)) for name, stage in self.stages_.items()}
        return mix(probs, self.weights_)
