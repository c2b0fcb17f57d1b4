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


#: Where the demo's duration was measured: ``/usr/bin/time ensemble-kit demo`` with the default
#: settings on a quiet machine, interpreter start and imports included (benchmarks/README.md,
#: ``demo_time.py``: training 104.5 s, the stack 73.2 s, the report 1.6 s).
MEASURED_ON = "a 2-core x86_64 CPU (AMD EPYC, KVM), no GPU"
MEASURED_SECONDS = 186.0
#: That run in parts: wall seconds per fold-epoch (5 x (6 + 8 + 8) = 110 of them, validation and
#: predictions included; the three backbones cost about the same at 32 px), the stack (5 folds x
#: 60 trials) and the rest (start, imports, data, report, submission, the new images).
_FOLD_EPOCH_SECONDS = 104.5 / 110
_STACK_SECONDS = 73.2
_OTHER_SECONDS = MEASURED_SECONDS - 104.5 - 73.2


def expected_seconds(cfg: ProjectConfig, n_trials: int = 60) -> float:
    """The demo's wall time on the machine of :data:`MEASURED_ON`, scaled from that measurement
    by the resolved config: epochs and folds of each model (training images per fold ~ (K-1)/K),
    and folds x trials of the stack. Other overrides (image size, batch size) are not modelled."""
    k = cfg.folds.n_folds
    train = sum(spec.train.epochs * k * _FOLD_EPOCH_SECONDS * ((k - 1) / k) / (4 / 5) for spec in cfg.models)
    return train + _STACK_SECONDS * (n_trials / 60) * (k / 5) + _OTHER_SECONDS


def expected_duration_line(out: Path, *, seed: int = 0, n_folds: int = 5, n_trials: int = 60,
                           overrides: list[str] | None = None) -> str:
    """``expected duration: about X min on a 2-core CPU (measured ...)``, printed when the demo starts."""
    cfg = demo_config(Path(out), seed=seed, n_folds=n_folds, n_trials=n_trials, overrides=overrides)
    seconds = expected_seconds(cfg, n_trials)
    about = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds >= 600 else \
        f"{round(seconds / 30) / 2:g} min"
    measured = f"{int(MEASURED_SECONDS // 60)} min {int(MEASURED_SECONDS % 60)} s"
    note = (f"measured: {measured} with the default settings on {MEASURED_ON}; scaled to these folds, epochs "
            "and trials" if (n_folds, n_trials) != (5, 60) or overrides else
            f"measured: {measured} on {MEASURED_ON}")
    other = [o for o in (overrides or []) if not o.split("=", 1)[0].endswith(".epochs")]
    if other:
        note += "; other --set values are not accounted for"
    return f"expected duration: about {about} on a 2-core CPU ({note})"


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
