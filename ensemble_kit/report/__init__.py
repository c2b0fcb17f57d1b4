"""Reports and the Optuna dashboard for a store's studies."""

from ensemble_kit.report.dashboard import launch_dashboard, study_storage

__all__ = ["launch_dashboard", "study_storage"]
