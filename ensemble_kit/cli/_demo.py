"""``ensemble-kit demo``: the whole pipeline on embedded digits, with no network and no files to fetch.

Three timm backbones x 5 folds are trained from scratch into a store, the default ``"full"``
stack is fitted for macro F1 (so class thresholds are tuned), and a leaderboard, a report and a
submission are written. The demo's config is saved as ``OUT/demo.yaml``: the same run is
``ensemble-kit train OUT/demo.yaml`` + ``stack`` + ``report`` + ``submit``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ensemble_kit.data.embedded import load_digits_images
from ensemble_kit.errors import ValidationError
from ensemble_kit.project import ProjectConfig, fit_stack, results_table, train_project, write_submission
from ensemble_kit.project.pipeline import RESOLVED_CONFIG
from ensemble_kit.report import write_report
from ensemble_kit.store import LogitStore, Workspace

logger = logging.getLogger(__name__)

_COMMON: dict[str, Any] = {
    "img_size": 32, "batch_size": 64, "device": "cpu", "amp": False,
    "schedule": {"name": "cosine", "warmup_epochs": 1},
    # Digits are not mirror-symmetric: no flips; mild crops only.
    "augment": {"random_resized_crop": True, "crop_scale_min": 0.8, "hflip": 0.0},
    "regularization": {"label_smoothing": 0.1},
}
DEMO_MODELS: dict[str, dict[str, Any]] = {
    "resnet10t": {"model": "resnet10t", "epochs": 6, "optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.05}},
    "convnext": {"model": "test_convnext", "epochs": 8, "optimizer": {"name": "adamw", "lr": 4e-3, "weight_decay": 0.05}},
    "efficientnet": {"model": "test_efficientnet", "epochs": 8,
                     "optimizer": {"name": "adamw", "lr": 4e-3, "weight_decay": 0.02}},
}


@dataclass(frozen=True)
class DemoResult:
    store: LogitStore
    leaderboard: pd.DataFrame
    report: Path
    submission: Path
    config: Path
    new_images: Path


def demo_config(out: Path, *, seed: int = 0, n_folds: int = 5, n_trials: int = 60,
                overrides: list[str] | None = None) -> ProjectConfig:
    """The demo's project: embedded digits at 32 px, three timm backbones, the default stack for macro F1."""
    models = {}
    for name, spec in DEMO_MODELS.items():
        models[name] = {**_COMMON, **spec, "seed": seed}
    return ProjectConfig.from_dict({
        "store": str(out / "store"),
        "data": {"format": "digits", "image_size": 32},
        "folds": {"n_folds": n_folds, "seed": seed},
        "models": models,
        "stack": {"recipe": "full", "metric": "f1_macro", "n_trials": n_trials, "seed": seed},
        "submission": {"format": "labels", "id_col": "id", "label_col": "digit"},
    }, overrides=overrides or [])


def run_demo(out: Path, *, seed: int = 0, n_folds: int = 5, n_trials: int = 60,
             overrides: list[str] | None = None) -> DemoResult:
    """Train, stack, report and submit on the embedded digits under ``out`` (replacing an earlier demo)."""
    out = Path(out)
    cfg = demo_config(out, seed=seed, n_folds=n_folds, n_trials=n_trials, overrides=overrides)
    _remove_earlier_demo(Path(cfg.store))
    config_path = cfg.to_yaml(out / "demo.yaml")
    train_project(cfg)
    store = LogitStore(cfg.store)
    stack = fit_stack(store, cfg.stack)
    report = write_report(store, stack=stack.name)
    submission = write_submission(store, stack, out / "submission.csv", format=cfg.submission.format,
                                  id_col=cfg.submission.id_col, label_col=cfg.submission.label_col)
    return DemoResult(store, results_table(store, stack), report, submission, config_path,
                      _write_new_images(out / "new_images"))


def _write_new_images(folder: Path) -> Path:
    """The held-out digits as PNG files: new images for `ensemble-kit predict` to try on."""
    from PIL import Image

    _, test = load_digits_images(image_size=32)  # the same split open_sources makes: the store's test ids
    folder.mkdir(parents=True, exist_ok=True)
    for image, image_id in zip(test.images, test.ids):
        Image.fromarray(image).save(folder / f"{image_id}.png")
    return folder


def _remove_earlier_demo(path: Path) -> None:
    """Delete the store of an earlier demo run; refuse to delete anything else."""
    if not path.exists():
        return
    if not (Workspace(path).project_dir() / RESOLVED_CONFIG).is_file():
        raise ValidationError(f"{str(path)!r} exists and is not the store of an earlier demo; choose another --out.")
    shutil.rmtree(path)
