"""Named stacking recipes: each builds an ordinary :class:`~ensemble_kit.Stacker` whose every
stage is visible to ``get_params``/``set_params``.

A recipe is a function ``builder(*, metric, n_trials, seed, storage) -> dict`` of Stacker
parameters (``stages``, ``blend``, ``calibrate``, ``thresholds``), registered with
:func:`register_recipe`. :data:`RECIPES` is the single source of the names the API, the project
config, the CLI and the docs accept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ensemble_kit._registry import Registry

__all__ = ["DEFAULT_RECIPE", "RECIPES", "list_recipes", "recipe_params", "register_recipe"]

RecipeBuilder = Callable[..., dict[str, Any]]
#: The Yandex solution's blend: 0.4 CatBoost + 0.3 LightGBM + 0.3 soft vote.
YANDEX_WEIGHTS = {"catboost": 0.4, "lightgbm": 0.3, "soft_vote": 0.3}
RECIPES: Registry[RecipeBuilder] = Registry("recipe")
DEFAULT_RECIPE = "full"


def register_recipe(name: str, builder: RecipeBuilder | None = None, *, replace: bool = False) -> Any:
    """Register ``builder(*, metric, n_trials, seed, storage) -> dict of Stacker params`` as ``name``.

    Usable as a decorator. The builder's docstring's first line is the recipe's help text (CLI,
    docs).
    """
    return RECIPES.register(name, builder, replace=replace)


def list_recipes() -> list[str]:
    """Names accepted by :meth:`Stacker.from_recipe <ensemble_kit.Stacker.from_recipe>`."""
    return RECIPES.names()


def recipe_params(name: str, *, metric: str, n_trials: int, seed: int, storage: Any) -> dict[str, Any]:
    """The Stacker parameters recipe ``name`` builds for this metric."""
    return RECIPES.get(name)(metric=metric, n_trials=n_trials, seed=seed, storage=storage)


# Builders import their parts when called: listing recipes (CLI help, config validation) stays cheap.
def _yandex_stages(*, metric: str, n_trials: int, seed: int, storage: Any) -> list[tuple[str, Any]]:
    """The Yandex stages: class-wise CatBoost and LightGBM on log-probs, Optuna soft vote."""
    from ensemble_kit.ensemble.meta_learner import MetaLearner
    from ensemble_kit.ensemble.voting import SoftVoting

    return [
        ("catboost", MetaLearner("catboost", seed=seed)),
        ("lightgbm", MetaLearner("lightgbm", seed=seed)),
        ("soft_vote", SoftVoting("optuna", temperature=True, metric=metric, n_trials=n_trials, seed=seed,
                                 storage=storage)),
    ]


@register_recipe("full")
def full(*, metric: str, n_trials: int, seed: int, storage: Any) -> dict[str, Any]:
    """Logistic stack + CatBoost + LightGBM + soft vote, Optuna-tuned nested blend, then temperature (log loss) or class offsets (label metrics).

    On real logits the linear stack and the GBMs err differently (their blend beats each
    alone), while the GBMs alone stay behind the linear stack; see ``benchmarks/README.md``.
    """
    from ensemble_kit.ensemble.meta_learner import MetaLearner

    stages = [("logreg", MetaLearner("logreg", layout="auto", seed=seed)),
              *_yandex_stages(metric=metric, n_trials=n_trials, seed=seed, storage=storage)]
    return {"stages": stages, "blend": "optuna", "calibrate": "auto", "thresholds": "auto"}


@register_recipe("yandex")
def yandex(*, metric: str, n_trials: int, seed: int, storage: Any) -> dict[str, Any]:
    """The Yandex solution: CatBoost + LightGBM + soft vote in a fixed 0.4/0.3/0.3 blend, then temperature or class offsets."""
    return {"stages": _yandex_stages(metric=metric, n_trials=n_trials, seed=seed, storage=storage),
            "blend": dict(YANDEX_WEIGHTS), "calibrate": "auto", "thresholds": "auto"}


@register_recipe("aoi")
def aoi(*, metric: str, n_trials: int, seed: int, storage: Any) -> dict[str, Any]:
    """The AOI champion: weighted soft vote, then "predict class 2 when p > 0.4"."""
    from ensemble_kit.decision.thresholds import ClassThresholds
    from ensemble_kit.ensemble.voting import SoftVoting

    vote = SoftVoting("optuna", temperature=True, metric=metric, n_trials=n_trials, seed=seed, storage=storage)
    return {"stages": [("soft_vote", vote)], "blend": "optuna", "calibrate": False,
            "thresholds": ClassThresholds(rules={2: 0.4})}


@register_recipe("average")
def average(*, metric: str, n_trials: int, seed: int, storage: Any) -> dict[str, Any]:
    """The plain mean of the models' probabilities (one model: its fold average), then temperature (log loss) or class offsets (label metrics)."""
    from ensemble_kit.ensemble.voting import SoftVoting

    return {"stages": [("average", SoftVoting("equal"))], "blend": "optuna", "calibrate": "auto", "thresholds": "auto"}


@register_recipe("hill_climb")
def hill_climb(*, metric: str, n_trials: int, seed: int, storage: Any) -> dict[str, Any]:
    """Caruana hill climbing (greedy ensemble selection with replacement)."""
    from ensemble_kit.ensemble.hill_climbing import HillClimbing

    return {"stages": [("hill_climbing", HillClimbing(metric=metric, seed=seed))], "blend": "optuna",
            "calibrate": False, "thresholds": None}
