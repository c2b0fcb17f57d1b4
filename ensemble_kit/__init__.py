"""ensemble_kit: competition-grade image-classification ensembles on a trustworthy logit store.

The public API is small: :class:`LogitStore` keeps every model's out-of-fold and test logits;
the subpackages hold the rest (``ensemble_kit.metrics``, ``ensemble_kit.data``, ...).
"""

from ensemble_kit._version import __version__
from ensemble_kit.decision import ClassThresholds, TemperatureScaling
from ensemble_kit.ensemble import (
    Blender,
    HillClimbing,
    MetaLearner,
    SoftVoting,
    Stacker,
    create_ensembler,
    list_ensemblers,
    list_recipes,
    register_recipe,
)
from ensemble_kit.errors import EnsembleKitError, StoreError, ValidationError
from ensemble_kit.store import LogitStore

__all__ = [
    "Blender",
    "ClassThresholds",
    "EnsembleKitError",
    "HillClimbing",
    "LogitStore",
    "MetaLearner",
    "SoftVoting",
    "Stacker",
    "StoreError",
    "TemperatureScaling",
    "ValidationError",
    "__version__",
    "create_ensembler",
    "list_ensemblers",
    "list_recipes",
    "register_recipe",
]
