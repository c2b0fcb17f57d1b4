"""Reports (self-contained HTML with figures) and the Optuna dashboard for a store's studies."""

from ensemble_kit.report.dashboard import launch_dashboard
from ensemble_kit.report.html import SECTIONS, write_report

__all__ = ["SECTIONS", "launch_dashboard", "write_report"]
