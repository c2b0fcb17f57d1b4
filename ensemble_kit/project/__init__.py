"""Projects: one YAML config (data, folds, models, stack) run end to end into a store.

This is the layer the CLI (``ensemble-kit train/stack/report/submit``) and the examples use.
"""

from ensemble_kit.project.config import (
    DataConfig,
    FoldsConfig,
    ModelSpec,
    ProjectConfig,
    PseudoLabelConfig,
    StackConfig,
    SubmissionConfig,
)
from ensemble_kit.project.pipeline import held_out_labels, open_project_store, open_sources, train_project
from ensemble_kit.project.results import StackResult, fit_stack, leaderboard, list_stacks, load_stack
from ensemble_kit.project.submission import submission_frame, write_submission

__all__ = [
    "DataConfig",
    "FoldsConfig",
    "ModelSpec",
    "ProjectConfig",
    "PseudoLabelConfig",
    "StackConfig",
    "StackResult",
    "SubmissionConfig",
    "fit_stack",
    "held_out_labels",
    "leaderboard",
    "list_stacks",
    "load_stack",
    "open_project_store",
    "open_sources",
    "submission_frame",
    "train_project",
    "write_submission",
]
