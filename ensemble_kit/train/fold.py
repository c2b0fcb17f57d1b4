"""What one fold of a training run is made of, each part built in one function.

:func:`fold_data` gives the datasets (training rows plus any extra labelled rows, validation
rows, test rows) and their normalisation; :func:`build_fold_model` gives everything that learns
(model, optimiser, schedule, EMA, mixup, loss, AMP scaler). Neither depends on the other having
run first, and :func:`~ensemble_kit.train._rng.isolated_global_rngs` keeps the global RNGs the third-party parts draw
from (timm's Mixup: numpy; model init and dropout: torch) from leaking into the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import ConcatDataset

from ensemble_kit.data.sources import ImageSource
from ensemble_kit.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TorchImageDataset,
    build_eval_transform,
    build_train_transform,
    dataset_mean_std,
)
from ensemble_kit.errors import ValidationError
from ensemble_kit.store import LogitStore
from ensemble_kit.train.config import ScheduleConfig, TrainConfig
from ensemble_kit.train.distill import DistillationLoss, SoftTargetDataset, SoftTargets
from ensemble_kit.train.losses import create_loss
from ensemble_kit.train.models import build_model

__all__ = ["FoldData", "FoldModel", "build_fold_model", "fold_data", "fold_seed", "lr_schedule", "schedule_steps"]


@dataclass(frozen=True)
class FoldData:
    """The rows one fold trains, validates and predicts on, with their transforms."""

    train: Any                     # torch Dataset of the training rows (+ extra rows), repeated
    valid: TorchImageDataset
    test: TorchImageDataset | None
    train_labels: NDArray          # labels of ``train``, in its order (for a balanced sampler)
    store_train_labels: NDArray    # labels of the store's training rows only (for class weights)
    valid_labels: NDArray
    mean: tuple[float, ...]
    std: tuple[float, ...]
    n_extra: int


def fold_data(cfg: TrainConfig, store: LogitStore, source: ImageSource, train_index: NDArray,
              test: ImageSource | None, test_index: NDArray | None, extra: ImageSource | None, fold: int,
              soft: SoftTargets | None = None) -> FoldData:
    """Datasets of ``fold``: the other folds (+ ``extra``) to train on, ``fold`` to validate on.

    With ``soft`` (distillation) every training row also carries the teachers' probabilities,
    and ``soft.images`` join as unlabelled rows (their sampler label: the teachers' argmax).
    """
    rows_valid = store.fold_indices(fold)
    rows_train = np.flatnonzero(store.folds != fold)
    train_src, valid_src = train_index[rows_train], train_index[rows_valid]
    train_labels, valid_labels = store.y[rows_train], store.y[rows_valid]
    if cfg.normalize == "dataset":
        mean, std = dataset_mean_std(source, train_src, seed=cfg.seed)
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    train_tf = build_train_transform(cfg.augment, img_size=cfg.img_size, mean=mean, std=std)
    eval_tf = build_eval_transform(img_size=cfg.augment.test_img_size or cfg.img_size, mean=mean, std=std)
    parts: list[Any] = [TorchImageDataset(source, train_src, train_tf, targets=train_labels)]
    labels = [train_labels]
    if extra is not None:
        parts.append(TorchImageDataset(extra, np.arange(len(extra)), train_tf))
        labels.append(extra.targets)
    if soft is not None:
        parts[0] = SoftTargetDataset(parts[0], soft.rows[rows_train])
        if extra is not None:
            raise ValidationError("extra_train (pseudo-labels) and soft_targets (distillation) cannot be combined "
                                  "in one fold yet: give the unlabelled images as soft_targets images.")
        if soft.images is not None and soft.images_probs is not None:
            unlabelled = TorchImageDataset(soft.images, np.arange(len(soft.images)), train_tf,
                                           targets=np.full(len(soft.images), -1, dtype=np.int64))
            parts.append(SoftTargetDataset(unlabelled, soft.images_probs))
            labels.append(soft.images_probs.argmax(axis=1))
    repeat = cfg.augment.repeated_augment
    return FoldData(
        train=ConcatDataset(parts * repeat), valid=TorchImageDataset(source, valid_src, eval_tf, targets=valid_labels),
        test=None if test is None else TorchImageDataset(test, test_index, eval_tf),
        train_labels=np.concatenate(labels * repeat), store_train_labels=train_labels, valid_labels=valid_labels,
        mean=tuple(mean), std=tuple(std),
        n_extra=(0 if extra is None else len(extra)) + (0 if soft is None or soft.images is None else len(soft.images)))


@dataclass
class FoldModel:
    """Everything that learns during one fold; its state is what a checkpoint holds."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any | None
    mixup: Any | None
    loss_fn: nn.Module
    scaler: torch.amp.GradScaler
    use_amp: bool
    amp_dtype: torch.dtype

    def eval_model(self) -> nn.Module:
        """The weights that predict: the EMA copy when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


def build_fold_model(cfg: TrainConfig, *, n_classes: int, train_labels: NDArray, steps_per_epoch: int,
                     device: torch.device) -> FoldModel:
    """Model, optimiser, schedule, EMA, mixup, loss and scaler of one fold (draws from torch's global RNG)."""
    from timm.optim import create_optimizer_v2

    reg = cfg.regularization
    model = build_model(cfg.model, num_classes=n_classes, img_size=cfg.img_size, drop_rate=reg.drop_rate,
                        drop_path_rate=reg.drop_path_rate, pooling=cfg.pooling, pretrained=cfg.pretrained,
                        pretrained_path=cfg.pretrained_path, model_kwargs=cfg.model_kwargs).to(device)
    if cfg.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = cfg.optimizer
    opt_name = "momentum" if opt.name == "sgd" and not opt.nesterov else opt.name
    kwargs = {"momentum": opt.momentum} if opt_name in ("sgd", "momentum", "nesterov") else {}
    optimizer = create_optimizer_v2(model, opt=opt_name, lr=opt.lr, weight_decay=opt.weight_decay, **kwargs)
    ema = None
    if reg.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=reg.ema_decay)
    mixup = None
    if reg.mixup_alpha > 0 or reg.cutmix_alpha > 0:
        from timm.data import Mixup

        mixup = Mixup(mixup_alpha=reg.mixup_alpha, cutmix_alpha=reg.cutmix_alpha, prob=reg.mix_prob,
                      switch_prob=reg.switch_prob, label_smoothing=reg.label_smoothing, num_classes=n_classes)
    weights = None
    if cfg.class_weights == "balanced":
        counts = np.bincount(train_labels, minlength=n_classes).astype(np.float64)
        weights = torch.tensor(len(train_labels) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32,
                               device=device)
    # timm Mixup already smooths its soft targets
    smoothing = 0.0 if mixup is not None else reg.label_smoothing
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    return FoldModel(model=model, optimizer=optimizer, scheduler=lr_schedule(optimizer, cfg, steps_per_epoch), ema=ema,
                     mixup=mixup, loss_fn=_loss(cfg, smoothing, weights).to(device),
                     scaler=torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16),
                     use_amp=use_amp, amp_dtype=amp_dtype)


def _loss(cfg: TrainConfig, smoothing: float, weights: torch.Tensor | None) -> nn.Module:
    hard = create_loss(cfg, label_smoothing=smoothing, class_weights=weights)
    if cfg.distill is None:
        return hard
    return DistillationLoss(hard, alpha=cfg.distill.alpha, temperature=cfg.distill.temperature)


def lr_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> Any:
    """Linear warmup, then ``cfg.schedule.name``; stepped every optimiser step."""
    return schedule_steps(optimizer, cfg.schedule, lr=cfg.optimizer.lr, epochs=cfg.epochs,
                          steps_per_epoch=steps_per_epoch)


def schedule_steps(optimizer: torch.optim.Optimizer, sched: ScheduleConfig, *, lr: float, epochs: int,
                   steps_per_epoch: int) -> Any:
    """The scheduler of ``sched`` over ``epochs`` epochs of ``steps_per_epoch`` steps, peak ``lr``."""
    from torch.optim import lr_scheduler as S

    total = max(1, epochs * steps_per_epoch)
    warmup = min(total - 1, int(round(sched.warmup_epochs * steps_per_epoch)))
    if sched.name == "onecycle":
        return S.OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=max(warmup / total, 0.05),
                            final_div_factor=max(lr / max(sched.min_lr, 1e-12) / 25, 1.0))
    if sched.name == "cosine":
        main: Any = S.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup), eta_min=sched.min_lr)
    elif sched.name == "cosine_restarts":
        main = S.CosineAnnealingWarmRestarts(optimizer, T_0=max(1, sched.restart_epochs * steps_per_epoch),
                                             T_mult=sched.restart_mult, eta_min=sched.min_lr)
    elif sched.name == "constant":
        main = S.LambdaLR(optimizer, lambda _: 1.0)
    else:
        raise ValidationError(f"Unknown schedule {sched.name!r}.")
    if warmup <= 0:
        return main
    start = S.LinearLR(optimizer, start_factor=min(1.0, sched.warmup_lr / lr), end_factor=1.0, total_iters=warmup)
    return S.SequentialLR(optimizer, [start, main], milestones=[warmup])


def fold_seed(cfg: TrainConfig, fold: int) -> int:
    return cfg.seed * 7919 + fold
