"""Registry of ensemblers: ``create_ensembler("hill_climbing", n_iter=50)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ensemble_kit._registry import Registry

__all__ = ["ENSEMBLERS", "create_ensembler", "list_ensemblers", "register_ensembler"]

ENSEMBLERS: Registry[type] = Registry("ensembler", builtin_modules=(
    "ensemble_kit.ensemble.voting", "ensemble_kit.ensemble.hill_climbing", "ensemble_kit.ensemble.meta_learner",
    "ensemble_kit.ensemble.blending"))
T = TypeVar("T", bound=type)


def register_ensembler(name: str, *, replace: bool = False) -> Callable[[T], T]:
    """Class decorator adding an ensembler to the registry under ``name``."""
    return ENSEMBLERS.register(name, replace=replace)


def create_ensembler(name: str, **params: Any) -> Any:
    """Instantiate a registered ensembler by name.

    Examples
    --------
    >>> create_ensembler("hill_climbing", n_iter=20).n_iter
    20
    """
    return ENSEMBLERS.get(name)(**params)


def list_ensemblers() -> list[str]:
    """Names accepted by :func:`create_ensembler`."""
    return ENSEMBLERS.names()
