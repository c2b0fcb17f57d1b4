"""Projects: one YAML config (data, folds, models, stack) run end to end into a store.

This is the layer the CLI (``ensemble-kit train/stack/report/submit``) and the examples use.
Names are imported on first use: stacking, submitting and reporting a store need no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ensemble_kit._lazy import lazy_attribute

_EXPORTS = {
    **{name: "ensemble_kit.project.config" for name in (
        "DataConfig", "DistillSpec", "FoldsConfig", "ModelSpec", "PretrainConfig", "ProjectConfig",
        "PseudoLabelConfig", "StackConfig", "SubmissionConfig")},
    "distill_targets_by_fold": "ensemble_kit.project.distill",
    **{name: "ensemble_kit.project.pipeline" for name in ("open_project_store", "open_sources", "pretrain_project",
                                                          "train_fold", "train_project")},
    **{name: "ensemble_kit.project.executors" for name in ("EXECUTORS", "Executor", "TaskOutcome", "parse_executor")},
    **{name: "ensemble_kit.project.results" for name in (
        "StackResult", "fit_stack", "held_out_labels", "list_stacks", "load_stack", "results_table")},
    **{name: "ensemble_kit.project.submission" for name in ("submission_frame", "write_submission")},
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from ensemble_kit.project.config import (
        DataConfig,
        DistillSpec,
        FoldsConfig,
        ModelSpec,
        PretrainConfig,
        ProjectConfig,
        PseudoLabelConfig,
        StackConfig,
        SubmissionConfig,
    )
    from ensemble_kit.project.distill import distill_targets_by_fold
    from ensemble_kit.project.executors import EXECUTORS, Executor, TaskOutcome, parse_executor
    from ensemble_kit.project.pipeline import (
        open_project_store,
        open_sources,
        pretrain_project,
        train_fold,
        train_project,
    )
    from ensemble_kit.project.results import (
        StackResult,
        fit_stack,
        held_out_labels,
        list_stacks,
        load_stack,
        results_table,
    )
    from ensemble_kit.project.submission import submission_frame, write_submission


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return __all__
