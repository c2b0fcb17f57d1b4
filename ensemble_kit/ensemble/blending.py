"""Blend the outputs of several ensembling stages, with weights tuned by Optuna or fixed
(e.g. the Yandex solution's ``0.4 CatBoost + 0.3 LightGBM + 0.3 soft vote``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from ensemble_kit._progress import progress
from ensemble_kit.decision.calibration import fit_temperature
from ensemble_kit.ensemble._base import BaseEnsembler, cross_fit
from ensemble_kit.ensemble._inputs import LogitInput
from ensemble_kit.ensemble._optuna import (SEARCH_SPACE_VERSION, as_trial_weights, best_trial, input_hash, run_study,
                                           starting_points, study_direction, study_name, suggest_weights)
from ensemble_kit.ensemble._registry import register_ensembler
from ensemble_kit.ensemble._restore_checks import TEMPERATURE_RANGE, check_number_map, describe, fault, field, restoring
from ensemble_kit.ensemble.voting import mixture_log_loss, mixture_optimum
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import get_metric, log_softmax, safe_log

__all__ = ["Blender", "check_stages", "mix"]

logger = logging.getLogger(__name__)


def mix(stage_probs: Mapping[str, NDArray], weights: Mapping[str, float],
        temperatures: Mapping[str, float] | None = None) -> NDArray:
    """Weighted average of stage probabilities (each first tempered, when given), as log-probabilities."""
    total = sum(weights.values())
    tempered = temper(stage_probs, temperatures) if temperatures else stage_probs
    mixed = sum((w / total) * tempered[name] for name, w in weights.items())
    return safe_log(mixed / mixed.sum(axis=1, keepdims=True))


def temper(stage_probs: Mapping[str, NDArray], temperatures: Mapping[str, float]) -> dict[str, NDArray]:
    """``softmax(log p / T)`` of every stage with a temperature other than 1."""
    return {name: p if temperatures.get(name, 1.0) == 1.0
            else np.exp(log_softmax(safe_log(p) / temperatures[name])).astype(p.dtype, copy=False)
            for name, p in stage_probs.items()}


def check_stages(stages: Any, *, owner: str) -> list[tuple[str, BaseEnsembler]]:
    """``stages`` as a list of ``(name, ensembler)`` pairs with unique names."""
    if isinstance(stages, Mapping) or not isinstance(stages, Sequence) or not stages:
        raise ValidationError(f"{owner}: stages must be a non-empty list of (name, ensembler) pairs, as in "
                              f"scikit-learn's StackingClassifier; got {stages!r}.")
    pairs = []
    for item in stages:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], BaseEnsembler)):
            raise ValidationError(f"{owner}: every stage must be a (name, ensembler) pair; got {item!r}.")
        pairs.append(item)
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise ValidationError(f"{owner}: stage names must be unique; got {names}.")
    return pairs


@register_ensembler("blend")
class Blender(BaseEnsembler):
    """Weighted blend of ensembling stages, e.g. ``0.4 CatBoost + 0.3 LightGBM + 0.3 soft vote``.

    Parameters
    ----------
    stages : list of (name, ensembler)
        The stages to blend. Each is cloned and fitted on the same folds; their honest OOF
        predictions feed the weight tuning.
    weights : "optuna" or dict stage name -> weight
        ``"optuna"`` first fits one temperature per stage (log loss, on the same rows), then
        tunes weights on the tempered stages' honest OOF predictions for ``metric``; a dict
        gives fixed weights of the stages as they are (``_recipes.YANDEX_WEIGHTS`` is the
        Yandex solution's 0.4/0.3/0.3).
    metric, n_trials, seed, storage
        As in :class:`SoftVoting` (used when ``weights="optuna"``).

    Attributes
    ----------
    stages_ : dict of fitted ensemblers
    weights_ : dict stage name -> weight (sums to 1)
    temperatures_ : dict stage name -> temperature applied to the stage before mixing (1: none)
    stage_oof_ : dict stage name -> honest OOF probabilities

    Notes
    -----
    With ``weights="optuna"`` the blend's own OOF predictions are nested: for each fold, the
    temperatures and weights are fitted on the other folds' stage OOF predictions and applied
    to that fold. A linear pool of probabilities is only as good as its members' calibration:
    a stage that ranks well but is over- or under-confident (class-wise meta-learners on
    hundreds of classes) would otherwise get almost no weight.

    Examples
    --------
    >>> import numpy as np
    >>> from ensemble_kit import HillClimbing, SoftVoting
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 300)
    >>> logits = {f"m{i}": np.eye(3)[y] * (i + 1) + rng.normal(size=(300, 3)) * 2 for i in range(3)}
    >>> blend = Blender([("vote", SoftVoting("equal")), ("hc", HillClimbing(n_iter=10))], weights={"vote": 1, "hc": 3})
    >>> blend.fit(logits, y).weights_
    {'vote': 0.25, 'hc': 0.75}
    """

    def __init__(self, stages: Sequence[tuple[str, BaseEnsembler]] | None = None, *,
                 weights: Mapping[str, float] | str = "optuna", metric: str = "log_loss", n_trials: int = 100,
                 seed: int = 0, storage: str | optuna.storages.BaseStorage | None = None) -> None:
        self.stages = stages
        self.weights = weights
        self.metric = metric
        self.n_trials = n_trials
        self.seed = seed
        self.storage = storage

    def _required_models(self) -> tuple[int, str]:
        """As many models as the most demanding stage needs."""
        needs = [(stage._required_models(), name) for name, stage in check_stages(self.stages, owner="Blender")]
        (count, reason), name = max(needs, key=lambda item: item[0][0])
        return count, f"stage {name!r}: {reason}"

    def _start_fit(self, stack: Any, y: NDArray[np.int64], folds: NDArray[np.int64]) -> None:
        stages = check_stages(self.stages, owner="Blender")
        weights = self.weights
        if isinstance(weights, str):
            if weights != "optuna":
                raise ValidationError(f"weights must be 'optuna' or a dict of stage weights; got {weights!r}.")
        else:
            names = [n for n, _ in stages]
            unknown = sorted(set(weights) - set(names))
            if unknown:
                raise ValidationError(f"Blend weights name stages {unknown} that do not exist; stages are {names}.")
            if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise ValidationError(f"Blend weights must be non-negative with a positive sum; got {dict(weights)}.")

    def _fit_prepared(self, logits: NDArray, y: NDArray[np.int64], folds: NDArray[np.int64]) -> None:
        """Fit every stage on the same folds (each nested), then the blend weights on their OOF."""
        self._fit_common(logits, y, folds)
        self._fit_final(logits, y, folds)

    def _fit_common(self, logits: NDArray, y: NDArray[np.int64], folds: NDArray[np.int64]) -> None:
        """The stages, each fitted (and nested over the folds) once: the final weights and the
        per-fold weights are all tuned on their honest OOF predictions."""
        named = dict(zip(self.model_names_, logits))
        self.stages_ = {}
        stages = check_stages(self.stages, owner="Blender")
        bar = progress(stages, total=len(stages), desc="blend: stages (each nested over the folds)")
        for name, stage in bar:
            bar.set_postfix_str(name)
            fitted = clone(stage).fit(named, y, folds=folds)
            self._record_studies(list(getattr(fitted, "study_names_", [])))
            self.stages_[name] = fitted
            logger.info("stage %s fitted in %.1fs: nested OOF %s %.4f", name, fitted.fit_seconds_, self.metric,
                        get_metric(self.metric)(y, fitted.oof_proba_, kind="probs"))
        self.stage_oof_ = {name: stage.oof_proba_ for name, stage in self.stages_.items()}

    def _fit_final(self, logits: NDArray, y: NDArray[np.int64], folds: NDArray[np.int64]) -> None:
        if isinstance(self.weights, str):
            # a fold clone's own weights must not share a study with its parent's fold-k weights
            tag = f"{self._fold_tag}-final" if hasattr(self, "_fold_tag") else "final"
            self.weights_, self.temperatures_ = self._tune(self.stage_oof_, y, tag=tag)
        else:
            total = float(sum(self.weights.values()))
            self.weights_ = {n: float(w) / total for n, w in self.weights.items()}
            self.temperatures_ = {n: 1.0 for n in self.stage_oof_}

    def _honest_oof(self, logits: NDArray, y: NDArray[np.int64], folds: NDArray[np.int64]) -> NDArray:
        """The stages' OOF predictions are honest already; only the weights need nesting."""
        if not isinstance(self.weights, str):
            total = float(sum(self.weights.values()))
            return np.exp(mix(self.stage_oof_, {n: float(w) / total for n, w in self.weights.items()}))

        def fit_predict(fit: NDArray, held: NDArray, k: int) -> NDArray:
            weights, temperatures = self._tune({n: p[fit] for n, p in self.stage_oof_.items()}, y[fit],
                                               tag=f"fold{k}")
            return np.exp(mix({n: p[held] for n, p in self.stage_oof_.items()}, weights, temperatures))

        return cross_fit(folds, fit_predict)

    def _stage_temperatures(self, stage_probs: Mapping[str, NDArray], y: NDArray[np.int64]) -> dict[str, float]:
        """One log-loss temperature per stage, fitted on these rows."""
        return {name: fit_temperature(p, y, kind="probs", seed=self.seed) for name, p in stage_probs.items()}

    def _tune(self, stage_probs: Mapping[str, NDArray], y: NDArray[np.int64], *,
              tag: str) -> tuple[dict[str, float], dict[str, float]]:
        """Stage temperatures, then the blend weights of the tempered stages (an Optuna study)."""
        metric = get_metric(self.metric)
        names = list(stage_probs)
        temperatures = self._stage_temperatures(stage_probs, y)
        stage_probs = temper(stage_probs, temperatures)
        enqueue = starting_points(names, self.n_trials)
        if metric.name == "log_loss":
            true_probs = np.stack([stage_probs[n][np.arange(len(y)), y] for n in names])
            mixture_loss = mixture_log_loss(true_probs)
            enqueue = [as_trial_weights(names, mixture_optimum(true_probs)), *enqueue][:self.n_trials]

            def objective(trial: optuna.Trial) -> float:
                weights = suggest_weights(trial, names)
                return mixture_loss(np.array([weights[n] for n in names]))
        else:
            def objective(trial: optuna.Trial) -> float:  # the metric as it is, in the metric's direction
                return metric(y, mix(stage_probs, suggest_weights(trial, names)), kind="logits")

        # the stages' OOF predictions are part of the key: a changed stage must not reuse a finished study
        digest = input_hash(*(stage_probs[n] for n in names), y,
                            extra=self._input_digest + ",".join(names) + "\x1f" + "\x1f".join(self.model_names_)
                            + SEARCH_SPACE_VERSION)
        name = study_name("blend", metric=metric.name, models=self.model_names_, digest=digest, fold=tag)
        self._record_studies([name])
        study = run_study(name, objective, n_trials=self.n_trials, seed=self.seed,
                          storage=self.storage, direction=study_direction(metric), enqueue=enqueue,
                          attrs={"stage": "blend", "stages": names, "models": list(self.model_names_),
                                 "metric": metric.name, "fold": tag})
        best = best_trial(study).params
        total = sum(best.values())
        return {n: best[n] / total for n in names}, temperatures

    def stage_proba(self, X: LogitInput, *, models: Sequence[str] | None = None) -> dict[str, NDArray]:
        """Each fitted stage's probabilities for ``X``."""
        check_is_fitted(self, "stages_")
        stack = self._check_predict_input(X, models)
        return {name: np.exp(stage._predict_log_proba(stack.logits)) for name, stage in self.stages_.items()}

    def _predict_prepared(self, logits: NDArray) -> NDArray:
        probs = {name: np.exp(stage._predict_log_proba(logits)) for name, stage in self.stages_.items()}
        return mix(probs, self.weights_, self.temperatures_)

    def _fitted_state(self, out: Any, key: str) -> dict[str, Any]:
        from ensemble_kit.ensemble._persist import dump_estimator

        return {"weights": dict(self.weights_), "temperatures": dict(self.temperatures_),
                "stages": {name: dump_estimator(stage, out, f"{key}.{name}") for name, stage in self.stages_.items()}}

    def _restore_fitted(self, state: dict[str, Any], source: Any) -> None:
        """Stages, weights and temperatures from a saved stack, each checked (the stack is untrusted).

        Every stage must have been fitted on the blend's own models and classes (it predicts from
        the blend's logits), its name must be one of the blend's ``stages``, and the weights and
        temperatures must name exactly those stages.
        """
        from ensemble_kit.ensemble._persist import load_estimator

        with restoring("Blender"):
            saved = field(state, "stages", "fitted.stages")
            if not isinstance(saved, dict) or not saved:
                raise fault("fitted.stages", "a non-empty JSON object of stage name -> fitted stage", describe(saved))
            names = self._saved_stage_names(list(saved))
            self.stages_ = {name: self._restore_stage(name, saved[name], source, load_estimator) for name in names}
            # mix() divides by the weights' sum: negative weights or a zero sum give negative or NaN probabilities
            self.weights_ = check_number_map(field(state, "weights", "fitted.weights"), "fitted.weights", names,
                                             minimum=0.0, positive_sum=True)
            # stacks saved before stage temperatures existed mixed their stages untempered
            temperatures = state.get("temperatures", {name: 1.0 for name in names})
            self.temperatures_ = check_number_map(temperatures, "fitted.temperatures", names,
                                                  minimum=TEMPERATURE_RANGE[0], maximum=TEMPERATURE_RANGE[1])

    def _saved_stage_names(self, saved: list[str]) -> list[str]:
        """The saved stages' names in the order of the ``stages`` parameter (the order they were fitted in).

        JSON objects are written with sorted keys, so the saved order is not the fitted one.
        """
        if self.stages is None:
            return saved
        declared = [name for name, _ in check_stages(self.stages, owner="Blender")]
        if set(declared) != set(saved):
            raise fault("fitted.stages", f"the stages of params.stages {declared}", describe(saved))
        return declared

    def _restore_stage(self, name: str, document: Any, source: Any, load: Any) -> BaseEnsembler:
        """One stage, loaded and checked against the blend: it predicts from the blend's own logits."""
        with restoring(f"stage {name!r}"):
            stage = load(document, source, f"stage {name!r}")
            if tuple(stage.model_names_) != tuple(self.model_names_):
                raise fault("fitted.model_names", f"the blend's models {list(self.model_names_)}",
                            describe(list(stage.model_names_)))
            if stage.n_classes_ != self.n_classes_:
                raise fault("fitted.n_classes", f"the blend's number of classes, {self.n_classes_}",
                            describe(stage.n_classes_))
            declared = dict(self.stages or [])
            if name in declared and type(stage) is not type(declared[name]):
                raise fault("type", f"the type of stage {name!r} in params.stages ({type(declared[name]).__name__})",
                            type(stage).__name__)
        return stage
