"""Training base models fold by fold into the logit store."""

from ensemble_kit.train.config import (
    AugmentConfig,
    OptimizerConfig,
    RegularizationConfig,
    ScheduleConfig,
    TrainConfig,
    TTAConfig,
)
from ensemble_kit.train.models import GeM, create_model, register_model
from ensemble_kit.train.pseudo import pseudo_label
from ensemble_kit.train.trainer import resolve_device, train_cv

__all__ = [
    "AugmentConfig",
    "GeM",
    "OptimizerConfig",
    "RegularizationConfig",
    "ScheduleConfig",
    "TTAConfig",
    "TrainConfig",
    "create_model",
    "pseudo_label",
    "register_model",
    "resolve_device",
    "train_cv",
]
