"""Decision rules on top of probabilities: class thresholds and calibration."""

from ensemble_kit.decision.calibration import TemperatureScaling, fit_temperature
from ensemble_kit.decision.thresholds import ClassThresholds

__all__ = ["ClassThresholds", "TemperatureScaling", "fit_temperature"]
