"""Test-time augmentation: named views of a batch, averaged in logit space."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ensemble_kit._registry import Registry
from ensemble_kit.errors import ValidationError

#: Named TTA views of an ``(N, C, H, W)`` batch (plus ``scale<factor>``, e.g. ``scale1.15``).
VIEWS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("TTA view")
for _name, _view in {
    "identity": lambda x: x,
    "hflip": lambda x: x.flip(3),
    "vflip": lambda x: x.flip(2),
    "hvflip": lambda x: x.flip(2).flip(3),
    "rot90": lambda x: x.rot90(1, dims=(2, 3)),
    "rot270": lambda x: x.rot90(3, dims=(2, 3)),
}.items():
    VIEWS.register(_name, _view)


def check_views(views: Sequence[str]) -> None:
    if not views:
        raise ValidationError("tta.views must list at least one view (e.g. ['identity']).")
    for view in views:
        if view not in VIEWS and not _scale_factor(view):
            raise ValidationError(
                f"Unknown TTA view {view!r}; use {VIEWS.names()} or 'scale<factor>' (e.g. 'scale1.15')."
            )
    if len(set(views)) != len(views):
        raise ValidationError(f"tta.views lists a view twice: {list(views)}.")


def _scale_factor(view: str) -> float | None:
    if not view.startswith("scale"):
        return None
    try:
        factor = float(view[len("scale"):])
    except ValueError:
        return None
    return factor if factor > 0 else None


def view_size(view: str, size: int) -> int:
    """Side of a square ``size`` input after ``view`` (only ``scaleF`` views change it)."""
    factor = _scale_factor(view)
    return size if factor is None else max(1, round(size * factor))


def apply_view(view: str, batch: torch.Tensor) -> torch.Tensor:
    """One named view of an ``(N, C, H, W)`` batch; ``scaleF`` resizes by ``F`` (bilinear)."""
    factor = _scale_factor(view)
    if factor is not None:
        size = [max(1, round(s * factor)) for s in batch.shape[2:]]
        return F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
    return VIEWS.get(view)(batch)


@torch.no_grad()
def predict_views(model: torch.nn.Module, batch: torch.Tensor, views: Sequence[str]) -> torch.Tensor:
    """Logits of every view, shape ``(V, N, C)``."""
    return torch.stack([model(apply_view(v, batch)).float() for v in views])
