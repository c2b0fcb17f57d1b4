"""Training losses; all accept hard (class index) or soft (mixup/cutmix) targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ensemble_kit._registry import Registry
from ensemble_kit.errors import ValidationError


def _soft(target: torch.Tensor, n_classes: int, smoothing: float) -> torch.Tensor:
    if target.ndim == 1:
        target = F.one_hot(target, n_classes).float()
    return target * (1 - smoothing) + smoothing / n_classes if smoothing else target


class CrossEntropy(nn.Module):
    """Cross-entropy with label smoothing and class weights, hard or soft targets."""

    def __init__(self, *, label_smoothing: float = 0.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=self.weight, label_smoothing=self.label_smoothing)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017): ``-sum t_c (1 - p_c)^gamma log p_c``."""

    def __init__(self, *, gamma: float = 2.0, label_smoothing: float = 0.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)
        t = _soft(target, logits.shape[1], self.label_smoothing)
        loss = -(t * (1 - log_p.exp()).pow(self.gamma) * log_p)
        if self.weight is not None:
            loss = loss * self.weight
        return loss.sum(dim=1).mean()


def _tempered_log(x: torch.Tensor, t: float) -> torch.Tensor:
    return torch.log(x) if t == 1.0 else (x.pow(1 - t) - 1) / (1 - t)


def _tempered_exp(x: torch.Tensor, t: float) -> torch.Tensor:
    return torch.exp(x) if t == 1.0 else torch.relu(1 + (1 - t) * x).pow(1 / (1 - t))


def _tempered_softmax(logits: torch.Tensor, t: float, iters: int = 5) -> torch.Tensor:
    """Tempered softmax for t > 1 by fixed-point normalisation (Amid et al., 2019)."""
    if t == 1.0:
        return logits.softmax(dim=1)
    mu = logits.max(dim=1, keepdim=True).values
    shifted = logits - mu
    z = shifted
    for _ in range(iters):
        partition = _tempered_exp(z, t).sum(dim=1, keepdim=True)
        z = shifted * partition.pow(1 - t)
    partition = _tempered_exp(z, t).sum(dim=1, keepdim=True)
    normaliser = -_tempered_log(1 / partition, t) + mu
    return _tempered_exp(logits - normaliser, t)


class BiTemperedLoss(nn.Module):
    """Bi-tempered logistic loss (Amid et al., 2019), robust to label noise; t1 <= 1 <= t2."""

    def __init__(self, *, t1: float = 0.8, t2: float = 1.2, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not (0 < t1 <= 1 <= t2):
            raise ValidationError(f"bi-tempered loss needs 0 < t1 <= 1 <= t2; got t1={t1}, t2={t2}.")
        self.t1, self.t2, self.label_smoothing = t1, t2, label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = _soft(target, logits.shape[1], self.label_smoothing)
        p = _tempered_softmax(logits.float(), self.t2)
        t1 = self.t1
        loss = (t * _tempered_log(t + 1e-10, t1) - t * _tempered_log(p, t1)
                - (t.pow(2 - t1) - p.pow(2 - t1)) / (2 - t1))
        return loss.sum(dim=1).mean()


LossFactory = Callable[..., nn.Module]
LOSSES: Registry[LossFactory] = Registry("loss")


def register_loss(name: str, factory: LossFactory | None = None, *, replace: bool = False) -> Any:
    """Register ``factory(*, label_smoothing, class_weights, cfg) -> nn.Module`` as ``loss: name``.

    ``cfg`` is the :class:`~ensemble_kit.train.TrainConfig` (for loss-specific keys such as
    ``focal_gamma``); ``class_weights`` is a tensor or ``None``. Usable as a decorator.
    """
    return LOSSES.register(name, factory, replace=replace)


@register_loss("ce")
def _cross_entropy(*, label_smoothing: float, class_weights: torch.Tensor | None, cfg: Any) -> nn.Module:
    """Cross-entropy, with label smoothing and class weights."""
    return CrossEntropy(label_smoothing=label_smoothing, weight=class_weights)


@register_loss("focal")
def _focal(*, label_smoothing: float, class_weights: torch.Tensor | None, cfg: Any) -> nn.Module:
    """Focal loss (Lin et al., 2017) with exponent focal_gamma."""
    return FocalLoss(gamma=cfg.focal_gamma, label_smoothing=label_smoothing, weight=class_weights)


@register_loss("bi_tempered")
def _bi_tempered(*, label_smoothing: float, class_weights: torch.Tensor | None, cfg: Any) -> nn.Module:
    """Bi-tempered logistic loss (Amid et al., 2019) with bi_tempered_t1 <= 1 <= bi_tempered_t2; robust to label noise."""
    return BiTemperedLoss(t1=cfg.bi_tempered_t1, t2=cfg.bi_tempered_t2, label_smoothing=label_smoothing)


def create_loss(cfg: Any, *, label_smoothing: float, class_weights: torch.Tensor | None = None) -> nn.Module:
    """The loss ``cfg.loss`` names (a :class:`~ensemble_kit.train.TrainConfig`), built from the registry."""
    return LOSSES.get(cfg.loss)(label_smoothing=label_smoothing, class_weights=class_weights, cfg=cfg)
