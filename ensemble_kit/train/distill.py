"""Knowledge distillation into one student: the teachers' soft targets per fold, and the loss.

Honest by construction: the soft targets student fold ``k`` learns from must not carry fold
``k``'s labels, so they come from the teachers' fold-``k`` models, which never saw fold ``k``
(:func:`ensemble_kit.project.distill_targets_by_fold` computes them from the exported fold
models). For the student's own training rows those are the teachers' in-sample predictions;
for extra unlabelled images (e.g. the test set) their predictions of unseen images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import Dataset

from ensemble_kit.data.sources import ImageSource
from ensemble_kit.errors import ValidationError

__all__ = ["DistillationLoss", "SoftTargets"]


@dataclass(frozen=True)
class SoftTargets:
    """The teachers' softened class probabilities for one student fold.

    ``rows`` has one row per store training row (store order; rows of the student's
    validation fold are never read). ``images`` are optional extra unlabelled training images
    with their probabilities ``images_probs``: they add only to the soft part of the loss.
    """

    rows: NDArray[np.float32]
    images: ImageSource | None = None
    images_probs: NDArray[np.float32] | None = None

    def check(self, n_rows: int, n_classes: int, *, fold: int) -> None:
        where = f"soft_targets[{fold}]"
        if self.rows.shape != (n_rows, n_classes):
            raise ValidationError(f"{where}.rows must have shape ({n_rows}, {n_classes}) (store rows x classes); "
                                  f"got {self.rows.shape}.")
        if (self.images is None) != (self.images_probs is None):
            raise ValidationError(f"{where}: give images and images_probs together.")
        if self.images is not None and self.images_probs is not None \
                and self.images_probs.shape != (len(self.images), n_classes):
            raise ValidationError(f"{where}.images_probs must have shape ({len(self.images)}, {n_classes}); got "
                                  f"{self.images_probs.shape}.")


class SoftTargetDataset(Dataset):
    """``(image, [label, p_1 .. p_C])`` of a labelled dataset (label -1: unlabelled, soft loss only)."""

    def __init__(self, dataset: Dataset, probs: NDArray[np.float32]) -> None:
        self.dataset, self.probs = dataset, torch.as_tensor(np.asarray(probs, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.dataset[item]
        return image, torch.cat([torch.tensor([float(label)]), self.probs[item]])


class DistillationLoss(nn.Module):
    """``(1 - alpha) * hard(logits, labels) + alpha * T**2 * KL(soft || softmax(logits / T))``.

    The target is ``[label, p_1 .. p_C]`` per row (:class:`SoftTargetDataset`); rows labelled
    -1 (unlabelled images) add only to the soft part.

    Examples
    --------
    >>> loss = DistillationLoss(nn.CrossEntropyLoss(), alpha=0.0, temperature=2.0)
    >>> logits, labels = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    >>> target = torch.tensor([[0.0, 0.5, 0.5]])
    >>> bool(torch.isclose(loss(logits, target), nn.functional.cross_entropy(logits, labels)))
    True
    """

    def __init__(self, hard: nn.Module, *, alpha: float, temperature: float) -> None:
        super().__init__()
        self.hard, self.alpha, self.temperature = hard, alpha, temperature

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels, soft = target[:, 0].long(), target[:, 1:]
        labelled = labels >= 0
        hard = self.hard(logits[labelled], labels[labelled]) if labelled.any() else logits.sum() * 0.0
        t = self.temperature
        log_student = F.log_softmax(logits.float() / t, dim=1)
        soft_loss = F.kl_div(log_student, soft.float(), reduction="batchmean") * t * t
        return (1 - self.alpha) * hard + self.alpha * soft_loss
