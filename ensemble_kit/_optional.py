"""Lazy import of optional heavy dependencies with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from ensemble_kit.errors import MissingDependencyError

# module name -> (pip requirement, ensemble_kit extra that pulls it in or None)
_HINTS: dict[str, tuple[str, str | None]] = {
    "catboost": ("catboost", None),
    "lightgbm": ("lightgbm", None),
    "matplotlib": ("matplotlib", "report"),
    "matplotlib.pyplot": ("matplotlib", "report"),
    "optuna_dashboard": ("optuna-dashboard", "dashboard"),
    "pyarrow": ("pyarrow", "parquet"),
    "psycopg": ("psycopg[binary]", "postgres"),
    "distributed": ("distributed", "dask"),
    "ray": ("ray", "ray"),
    "submitit": ("submitit", "slurm"),
    "tensorboard": ("tensorboard", "tensorboard"),
    "torch.utils.tensorboard": ("tensorboard", "tensorboard"),
    **{name: (name, "train") for name in ("torch", "torchvision", "timm", "albumentations", "safetensors", "PIL")},
}


def import_optional(module: str, *, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming what to install.

    Parameters
    ----------
    module : str
        Dotted module name, e.g. ``"catboost"``.
    feature : str
        What the caller wanted to do, used in the message (e.g. ``"CatBoost meta-learner"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_dependency(module, feature=feature, cause=exc) from exc


def missing_dependency(module: str, *, feature: str, cause: BaseException) -> MissingDependencyError:
    """The error for an optional ``module`` that could not be imported, naming what to install."""
    requirement, extra = _HINTS.get(module, _HINTS.get(module.split(".")[0], (module.split(".")[0], None)))
    hint = f'pip install "ensemble_kit[{extra}]"' if extra else f"pip install {requirement}"
    return MissingDependencyError(
        f"{feature} needs the optional package {requirement!r}, which could not be "
        f"imported ({cause}). Install it with: {hint}"
    )


def is_optional(module: str) -> bool:
    """Whether ``module`` (or its top-level package) is an optional dependency of ensemble_kit."""
    return module in _HINTS or module.split(".")[0] in _HINTS
