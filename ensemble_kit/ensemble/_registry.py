"""Registry of ensemblers: ``create_ensembler("hill_climbing", n_iter=50)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ensemble_kit.errors import ValidationError

_REGISTRY: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_ensembler(name: str) -> Callable[[T], T]:
    """Class decorator adding an ensembler to the registry under ``name``."""

    def decorator(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValidationError(f"An ensembler named {name!r} is already registered ({_REGISTRY[name].__name__}).")
        _REGISTRY[name] = cls
        return cls

    return decorator


def create_ensembler(name: str, **params: Any) -> Any:
    """Instantiate a registered ensembler by name.

    Examples
    --------
    >>> create_ensembler("hill_climbing", n_iter=20).n_iter
    20
    """
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValidationError(f"Unknown ensembler {name!r}; registered: {list_ensemblers()}.") from None
    return cls(**params)


def list_ensemblers() -> list[str]:
    """Names accepted by :func:`create_ensembler`."""
    return sorted(_REGISTRY)
