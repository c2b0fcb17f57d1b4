"""Ensemblers that combine stored OOF logits, and the Stacker that chains them."""

from ensemble_kit.ensemble._base import BaseEnsembler, cross_fit
from ensemble_kit.ensemble._learners import LEARNERS, LearnerBackend, register_learner
from ensemble_kit.ensemble._recipes import RECIPES, list_recipes, register_recipe
from ensemble_kit.ensemble._registry import ENSEMBLERS, create_ensembler, list_ensemblers, register_ensembler
from ensemble_kit.ensemble.blending import Blender
from ensemble_kit.ensemble.hill_climbing import HillClimbing
from ensemble_kit.ensemble.meta_learner import MetaLearner
from ensemble_kit.ensemble.stacker import Stacker
from ensemble_kit.ensemble.voting import SoftVoting

__all__ = [
    "ENSEMBLERS",
    "LEARNERS",
    "RECIPES",
    "BaseEnsembler",
    "Blender",
    "HillClimbing",
    "LearnerBackend",
    "MetaLearner",
    "SoftVoting",
    "Stacker",
    "create_ensembler",
    "cross_fit",
    "list_ensemblers",
    "list_recipes",
    "register_ensembler",
    "register_learner",
    "register_recipe",
]
