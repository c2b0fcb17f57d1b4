"""Named stacking recipes: which stages, how they are blended, and the decision steps after."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ensemble_kit.decision.thresholds import ClassThresholds
from ensemble_kit.ensemble._base import BaseEnsembler
from ensemble_kit.ensemble.blending import YANDEX_WEIGHTS, default_stages
from ensemble_kit.ensemble.hill_climbing import HillClimbing
from ensemble_kit.ensemble.meta_learner import MetaLearner
from ensemble_kit.ensemble.voting import SoftVoting
from ensemble_kit.errors import ValidationError

RECIPES = ("full", "yandex", "aoi", "hill_climb", "logloss")
DEFAULT_RECIPE = "full"


@dataclass(frozen=True)
class StackPlan:
    """What a Stacker fits: stages, blend weights (``None`` for a single stage), decision steps."""

    stages: Mapping[str, BaseEnsembler]
    blend_weights: Mapping[str, float] | str | None
    calibrate: bool
    thresholds: ClassThresholds | None = None
    description: str = ""


def _label_thresholds(metric: str) -> ClassThresholds | None:
    """Class offsets when labels are what is scored; a log-loss competition scores probabilities."""
    return ClassThresholds(optimize=metric) if metric in ("f1_macro", "accuracy") else None


def _linear_and_yandex_stages(**common: Any) -> dict[str, BaseEnsembler]:
    """A logistic stack on the log-probs (class-wise at many classes) next to the Yandex stages.

    On real logits the linear stack and the GBMs err differently (the blend of the two beats
    each alone), while the GBMs alone stay behind the linear stack; see ``benchmarks/README.md``.
    """
    return {"logreg": MetaLearner("logreg", layout="auto", seed=common["seed"]), **default_stages(**common)}


def build_plan(recipe: str, *, metric: str, n_trials: int, seed: int, storage: Any) -> StackPlan:
    """The plan of a named recipe (see ``docs/stacking.md``)."""
    common = dict(metric=metric, n_trials=n_trials, seed=seed, storage=storage)
    if recipe == "full":
        return StackPlan(
            stages=_linear_and_yandex_stages(**common), blend_weights="optuna", calibrate=metric == "log_loss",
            thresholds=_label_thresholds(metric),
            description="logistic stack + CatBoost + LightGBM + soft vote -> Optuna blend (nested), then temperature "
                        "scaling when the metric is log loss, or class offsets tuned for the metric when labels are scored",
        )
    if recipe == "yandex":
        return StackPlan(
            stages=default_stages(**common), blend_weights=dict(YANDEX_WEIGHTS), calibrate=metric == "log_loss",
            thresholds=_label_thresholds(metric),
            description="soft vote + CatBoost + LightGBM -> 0.4/0.3/0.3 blend, then temperature scaling when "
                        "the metric is log loss, or class offsets tuned for the metric when labels are scored",
        )
    if recipe == "aoi":
        return StackPlan(
            stages={"soft_vote": SoftVoting("optuna", temperature=True, **common)}, blend_weights=None,
            calibrate=False, thresholds=ClassThresholds(rules={2: 0.4}),
            description="weighted soft vote + 'predict class 2 when p > 0.4'",
        )
    if recipe == "hill_climb":
        return StackPlan(stages={"hill_climbing": HillClimbing(metric=metric, seed=seed)}, blend_weights=None,
                         calibrate=False, description="Caruana hill climbing")
    if recipe == "logloss":
        return StackPlan(stages=_linear_and_yandex_stages(**common), blend_weights="optuna", calibrate=True,
                         description="logistic stack + CatBoost + LightGBM + soft vote -> Optuna blend -> temperature")
    raise ValidationError(f"Unknown recipe {recipe!r}; choose one of {RECIPES}, or recipe=None with stages=...")
