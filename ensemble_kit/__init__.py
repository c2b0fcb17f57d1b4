"""ensemble_kit: competition-grade image-classification ensembles on a trustworthy logit store.

The public API is small: :class:`LogitStore` keeps every model's out-of-fold and test logits,
:class:`Stacker` turns them into an ensemble; the subpackages hold the rest
(``ensemble_kit.metrics``, ``ensemble_kit.train``, ...). Names are imported on first use, so
``import ensemble_kit`` (and the CLI's ``--help``) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ensemble_kit._lazy import lazy_attribute
from ensemble_kit._version import __version__

_EXPORTS = {
    "ClassThresholds": "ensemble_kit.decision", "TemperatureScaling": "ensemble_kit.decision",
    **{name: "ensemble_kit.ensemble" for name in (
        "Blender", "HillClimbing", "MetaLearner", "SoftVoting", "Stacker", "create_ensembler", "list_ensemblers",
        "list_recipes", "register_recipe")},
    **{name: "ensemble_kit.errors" for name in ("EnsembleKitError", "StoreError", "ValidationError")},
    "LogitStore": "ensemble_kit.store",
}
__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return __all__
