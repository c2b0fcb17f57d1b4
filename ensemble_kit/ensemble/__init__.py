"""Ensemblers that combine stored OOF logits, and the Stacker that chains them.

Names are imported on first use: the registries (recipes, backends) load without scikit-learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ensemble_kit._lazy import lazy_attribute

_EXPORTS = {
    "BaseEnsembler": "ensemble_kit.ensemble._base", "cross_fit": "ensemble_kit.ensemble._base",
    "LEARNERS": "ensemble_kit.ensemble._learners", "LearnerBackend": "ensemble_kit.ensemble._learners",
    "register_learner": "ensemble_kit.ensemble._learners",
    "RECIPES": "ensemble_kit.ensemble._recipes", "list_recipes": "ensemble_kit.ensemble._recipes",
    "register_recipe": "ensemble_kit.ensemble._recipes",
    "ENSEMBLERS": "ensemble_kit.ensemble._registry", "create_ensembler": "ensemble_kit.ensemble._registry",
    "list_ensemblers": "ensemble_kit.ensemble._registry", "register_ensembler": "ensemble_kit.ensemble._registry",
    "Blender": "ensemble_kit.ensemble.blending", "HillClimbing": "ensemble_kit.ensemble.hill_climbing",
    "MetaLearner": "ensemble_kit.ensemble.meta_learner", "Stacker": "ensemble_kit.ensemble.stacker",
    "SoftVoting": "ensemble_kit.ensemble.voting",
    "StackArtifact": "ensemble_kit.ensemble._persist", "read_stack": "ensemble_kit.ensemble._persist",
    "StackInfo": "ensemble_kit.ensemble._summary", "StackSummary": "ensemble_kit.ensemble._summary",
    "StageSummary": "ensemble_kit.ensemble._summary",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from ensemble_kit.ensemble._base import BaseEnsembler, cross_fit
    from ensemble_kit.ensemble._learners import LEARNERS, LearnerBackend, register_learner
    from ensemble_kit.ensemble._persist import StackArtifact, read_stack
    from ensemble_kit.ensemble._summary import StackInfo, StackSummary, StageSummary
    from ensemble_kit.ensemble._recipes import RECIPES, list_recipes, register_recipe
    from ensemble_kit.ensemble._registry import ENSEMBLERS, create_ensembler, list_ensemblers, register_ensembler
    from ensemble_kit.ensemble.blending import Blender
    from ensemble_kit.ensemble.hill_climbing import HillClimbing
    from ensemble_kit.ensemble.meta_learner import MetaLearner
    from ensemble_kit.ensemble.stacker import Stacker
    from ensemble_kit.ensemble.voting import SoftVoting


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return __all__
