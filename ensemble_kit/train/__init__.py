"""Training base models fold by fold into the logit store (needs the ``train`` extra: torch, timm).

Names are imported on first use, so ``ensemble_kit.train.config`` alone does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ensemble_kit._lazy import lazy_attribute

_EXPORTS = {
    **{name: "ensemble_kit.train.config" for name in (
        "AugmentConfig", "DistillConfig", "MAEConfig", "OptimizerConfig", "RegularizationConfig", "ScheduleConfig", "TTAConfig",
        "TrainConfig")},
    "DistillationLoss": "ensemble_kit.train.distill", "SoftTargets": "ensemble_kit.train.distill",
    "MAEResult": "ensemble_kit.train.mae", "pretrain_mae": "ensemble_kit.train.mae",
    "LOSSES": "ensemble_kit.train.losses", "register_loss": "ensemble_kit.train.losses",
    "MODEL_FACTORIES": "ensemble_kit.train.models", "GeM": "ensemble_kit.train.models",
    "build_model": "ensemble_kit.train.models", "register_model_factory": "ensemble_kit.train.models",
    "pseudo_label": "ensemble_kit.train.pseudo",
    "pseudo_labels_by_fold": "ensemble_kit.train.pseudo",
    "resolve_device": "ensemble_kit.train.trainer", "train_cv": "ensemble_kit.train.trainer",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from ensemble_kit.train.config import (
        AugmentConfig,
        DistillConfig,
        MAEConfig,
        OptimizerConfig,
        RegularizationConfig,
        ScheduleConfig,
        TrainConfig,
        TTAConfig,
    )
    from ensemble_kit.train.distill import DistillationLoss, SoftTargets
    from ensemble_kit.train.losses import LOSSES, register_loss
    from ensemble_kit.train.mae import MAEResult, pretrain_mae
    from ensemble_kit.train.models import MODEL_FACTORIES, GeM, build_model, register_model_factory
    from ensemble_kit.train.pseudo import pseudo_label, pseudo_labels_by_fold
    from ensemble_kit.train.trainer import resolve_device, train_cv


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return __all__
