"""Lazy package exports (PEP 562): a name is imported from its module on first access.

Used by the packages whose modules pull in heavy optional stacks (``train``: torch, timm,
torchvision; ``project``: the trainer), so that importing one light module of them, e.g.
``ensemble_kit.train.config`` or ``ensemble_kit.project.results``, does not load the rest.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ensemble_kit._optional import is_optional, missing_dependency

__all__ = ["lazy_attribute"]


def lazy_attribute(package: str, exports: Mapping[str, str], name: str) -> Any:
    """The export ``name`` of ``package``, imported from the module ``exports`` maps it to."""
    try:
        module = exports[name]
    except KeyError:
        raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and is_optional(exc.name):
            raise missing_dependency(exc.name, feature=f"{package}.{name}", cause=exc) from exc
        raise
    value = getattr(loaded, name)
    setattr(importlib.import_module(package), name, value)  # cached: the next access is a plain lookup
    return value
