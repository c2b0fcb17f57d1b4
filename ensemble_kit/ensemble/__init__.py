"""Ensemblers that combine stored OOF logits, and the Stacker that chains them."""

from ensemble_kit.ensemble._base import BaseEnsembler
from ensemble_kit.ensemble._registry import create_ensembler, list_ensemblers, register_ensembler
from ensemble_kit.ensemble.blending import Blender
from ensemble_kit.ensemble.hill_climbing import HillClimbing
from ensemble_kit.ensemble.meta_learner import MetaLearner
from ensemble_kit.ensemble.stacker import Stacker
from ensemble_kit.ensemble.voting import SoftVoting

__all__ = [
    "BaseEnsembler",
    "Blender",
    "HillClimbing",
    "MetaLearner",
    "SoftVoting",
    "Stacker",
    "create_ensembler",
    "list_ensemblers",
    "register_ensembler",
]
