"""K-fold training of one base model, writing OOF and test logits into the logit store."""

from __future__ import annotations

import copy
import csv
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, RandomSampler, WeightedRandomSampler
from tqdm.auto import tqdm

from ensemble_kit._version import __version__
from ensemble_kit.data.sources import ImageSource, positions_of
from ensemble_kit.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TorchImageDataset,
    build_eval_transform,
    build_train_transform,
    dataset_mean_std,
)
from ensemble_kit.errors import CheckpointError, EntryNotFoundError, ValidationError
from ensemble_kit.store import EntryInfo, LogitStore, check_name
from ensemble_kit.store._files import check_not_link
from ensemble_kit.store._paths import case_collision, safe_dir
from ensemble_kit.train.checkpoint import (
    PREFIX,
    list_checkpoints,
    load_checkpoint_state,
    prune_checkpoints,
    save_checkpoint_state,
)
from ensemble_kit.train.config import TrainConfig
from ensemble_kit.train.losses import create_loss
from ensemble_kit.train.models import check_model_inputs, create_model
from ensemble_kit.train.tta import predict_views

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = PREFIX


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then CPU; anything else is passed to torch."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ValidationError(f"Config key 'device': {name!r} is not a torch device ({exc}).") from exc


def train_cv(cfg: TrainConfig, store: LogitStore, source: ImageSource, test: ImageSource | None = None, *,
             name: str, folds: Sequence[int] | None = None, output_dir: str | Path | None = None,
             extra_train: ImageSource | None = None) -> EntryInfo:
    """Train ``cfg.model`` on every fold of ``store`` and write OOF/test logits as entry ``name``.

    Parameters
    ----------
    cfg : TrainConfig
    store : LogitStore
        Its folds, labels and classes are authoritative; ``source`` must hold exactly its train ids.
    source : ImageSource
        Labelled training images (ids = ``store.train_ids``, in any order).
    test : ImageSource, optional
        Test images (ids = ``store.test_ids``); required when the store has a test set.
    name : str
        Store entry to write.
    folds : sequence of int, optional
        Train only these folds (separate jobs, e.g. on several machines); default all.
        Folds already stored are never retrained.
    output_dir : path, optional
        Checkpoints, per-epoch metrics and the resolved config (default ``STORE/runs/<name>``).
    extra_train : ImageSource, optional
        Extra labelled samples (e.g. from :func:`pseudo_label`) added to every fold's training
        set and never to a validation fold.

    Returns
    -------
    EntryInfo
        The entry after the requested folds were written.
    """
    fold_list = list(range(store.n_folds)) if folds is None else [int(k) for k in folds]
    for k in fold_list:
        if not 0 <= k < store.n_folds:
            raise ValidationError(f"fold {k} is out of range: the store has folds 0..{store.n_folds - 1}.")
    train_index = positions_of(store.train_ids, source, what="training source")
    _check_labels(store, source, train_index)
    test_index = None
    if store.test_ids is not None:
        if test is None:
            raise ValidationError(f"The store has {len(store.test_ids)} test ids: pass test=<ImageSource of them>.")
        test_index = positions_of(store.test_ids, test, what="test source")
    if extra_train is not None:
        _check_extra(store, source, extra_train)
    # every file's header and every input size before the first epoch: faults are named now, not mid-fold
    for images in (source, test, extra_train):
        if images is not None:
            images.check()
    check_model_inputs(cfg, store.n_classes)
    check_name(name, what="model name")
    other = case_collision(name, [*store.models(), *store.incomplete(), *store.problems()])
    if other is not None:
        raise ValidationError(f"Model name {name!r} differs only in case from the stored entry {other!r}; on case-"
                              "insensitive file systems (macOS, Windows) both would share one folder.")
    if output_dir is None:
        run_dir = store.workspace.run_dir(name, create=True)
    else:
        run_dir = Path(output_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(run_dir / "config.yaml")
    try:
        done = set(store.entry(name).folds_present)
    except EntryNotFoundError:
        done = set()
    device = resolve_device(cfg.device)
    for k in fold_list:
        if k in done:
            logger.info("%s fold %d already stored: skipped", name, k)
            continue
        result = _FoldRun(cfg, store, source, train_index, test, test_index, extra_train, k,
                          safe_dir(run_dir, f"fold{k}", create=True),
                          device, name).run()
        store.put_fold(name, k, result["oof"], result["test"], ids=store.train_ids[store.fold_indices(k)],
                       kind="logits", meta=result["meta"])
    return store.entry(name)


def _check_labels(store: LogitStore, source: ImageSource, index: NDArray) -> None:
    if [str(c) for c in source.classes] != [str(c) for c in store.classes]:
        raise ValidationError(f"Source classes {source.classes} differ from the store's {store.classes}.")
    if source.targets is None:
        raise ValidationError("The training source has no labels.")
    wrong = np.flatnonzero(source.targets[index] != store.y)
    if len(wrong):
        raise ValidationError(
            f"{len(wrong)} source labels disagree with the store's, e.g. id {store.train_ids[wrong[0]]!r}: "
            f"source {source.classes[source.targets[index[wrong[0]]]]!r}, store {store.classes[store.y[wrong[0]]]!r}."
        )


def _check_extra(store: LogitStore, source: ImageSource, extra: ImageSource) -> None:
    if extra.targets is None or [str(c) for c in extra.classes] != [str(c) for c in store.classes]:
        raise ValidationError("extra_train must be labelled with the store's classes.")
    clash = set(map(str, extra.ids.tolist())) & set(map(str, store.train_ids.tolist()))
    if clash:
        raise ValidationError(f"extra_train ids collide with training ids: {sorted(clash)[:5]}.")


@dataclass
class _Progress:
    epoch: int = 0
    global_step: int = 0
    best_loss: float = math.inf
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)


class _FoldRun:
    """One fold: build everything, resume from the last checkpoint, train, predict."""

    def __init__(self, cfg: TrainConfig, store: LogitStore, source: ImageSource, train_index: NDArray,
                 test: ImageSource | None, test_index: NDArray | None, extra: ImageSource | None, fold: int,
                 fold_dir: Path, device: torch.device, name: str) -> None:
        self.cfg, self.store, self.source, self.fold, self.dir, self.device, self.name = (
            cfg, store, source, fold, fold_dir, device, name)
        self.dir = safe_dir(fold_dir.parent, fold_dir.name, create=True)
        rows_valid = store.fold_indices(fold)
        rows_train = np.flatnonzero(store.folds != fold)
        self.train_src_idx, self.valid_src_idx = train_index[rows_train], train_index[rows_valid]
        self.train_labels, self.valid_labels = store.y[rows_train], store.y[rows_valid]
        self.test, self.test_idx, self.extra = test, test_index, extra

    # ------------------------------------------------------------------ building blocks
    def datasets(self) -> tuple[Any, TorchImageDataset]:
        cfg = self.cfg
        if cfg.normalize == "dataset":
            mean, std = dataset_mean_std(self.source, self.train_src_idx, seed=cfg.seed)
        else:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        self.mean, self.std = mean, std
        train_tf = build_train_transform(cfg.augment, img_size=cfg.img_size, mean=mean, std=std)
        self.eval_tf = build_eval_transform(img_size=cfg.augment.test_img_size or cfg.img_size, mean=mean, std=std)
        parts = [TorchImageDataset(self.source, self.train_src_idx, train_tf, targets=self.train_labels)]
        if self.extra is not None:
            parts.append(TorchImageDataset(self.extra, np.arange(len(self.extra)), train_tf))
        train = ConcatDataset(parts * cfg.augment.repeated_augment)
        valid = TorchImageDataset(self.source, self.valid_src_idx, self.eval_tf, targets=self.valid_labels)
        return train, valid

    def _train_labels_all(self) -> NDArray:
        labels = [self.train_labels] + ([self.extra.targets] if self.extra is not None else [])
        return np.concatenate(labels * self.cfg.augment.repeated_augment)

    def loader(self, dataset: Any, epoch: int) -> DataLoader:
        cfg = self.cfg
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.fold * 1009 + epoch)
        if cfg.balanced_sampler:
            labels = self._train_labels_all()
            counts = np.bincount(labels, minlength=self.store.n_classes).astype(np.float64)
            weights = 1.0 / counts[labels]
            sampler: Any = WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(labels), replacement=True,
                                                 generator=generator)
        else:
            sampler = RandomSampler(dataset, generator=generator)
        mixing = cfg.regularization.mixup_alpha > 0 or cfg.regularization.cutmix_alpha > 0
        return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                          pin_memory=self.device.type == "cuda", drop_last=mixing and len(dataset) >= cfg.batch_size,
                          worker_init_fn=_seed_worker, persistent_workers=False,
                          generator=torch.Generator().manual_seed(cfg.seed + epoch))

    def eval_loader(self, dataset: Any) -> DataLoader:
        return DataLoader(dataset, batch_size=self.cfg.batch_size * 2, shuffle=False, num_workers=self.cfg.num_workers,
                          pin_memory=self.device.type == "cuda")

    def build(self, steps_per_epoch: int) -> None:
        cfg = self.cfg
        reg = cfg.regularization
        # timm Mixup draws from numpy's global RNG and albumentations from python's: seed all three
        fold_seed = cfg.seed * 7919 + self.fold
        torch.manual_seed(fold_seed)
        np.random.seed(fold_seed)
        random.seed(fold_seed)
        self.model = create_model(cfg.model, num_classes=self.store.n_classes, img_size=cfg.img_size,
                                  drop_rate=reg.drop_rate, drop_path_rate=reg.drop_path_rate, pooling=cfg.pooling,
                                  pretrained=cfg.pretrained, pretrained_path=cfg.pretrained_path,
                                  model_kwargs=cfg.model_kwargs).to(self.device)
        if cfg.channels_last and self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        from timm.optim import create_optimizer_v2

        opt = cfg.optimizer
        opt_name = "momentum" if opt.name == "sgd" and not opt.nesterov else opt.name
        kwargs = {"momentum": opt.momentum} if opt_name in ("sgd", "momentum", "nesterov") else {}
        self.optimizer = create_optimizer_v2(self.model, opt=opt_name, lr=opt.lr, weight_decay=opt.weight_decay, **kwargs)
        self.scheduler = _scheduler(self.optimizer, cfg, steps_per_epoch)
        self.ema = None
        if reg.ema_decay:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=reg.ema_decay)
        self.mixup = None
        if reg.mixup_alpha > 0 or reg.cutmix_alpha > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=reg.mixup_alpha, cutmix_alpha=reg.cutmix_alpha, prob=reg.mix_prob,
                               switch_prob=reg.switch_prob, label_smoothing=reg.label_smoothing,
                               num_classes=self.store.n_classes)
        weights = None
        if cfg.class_weights == "balanced":
            counts = np.bincount(self.train_labels, minlength=self.store.n_classes).astype(np.float64)
            weights = torch.tensor(len(self.train_labels) / (self.store.n_classes * np.maximum(counts, 1)),
                                   dtype=torch.float32, device=self.device)
        # timm Mixup already smooths its soft targets
        smoothing = 0.0 if self.mixup is not None else reg.label_smoothing
        self.loss_fn = create_loss(cfg.loss, label_smoothing=smoothing, class_weights=weights,
                                   focal_gamma=cfg.focal_gamma, t1=cfg.bi_tempered_t1, t2=cfg.bi_tempered_t2).to(self.device)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)

    # ------------------------------------------------------------------ checkpoints
    def save(self, progress: _Progress) -> Path:
        state = {
            "epoch": progress.epoch, "global_step": progress.global_step, "best_loss": progress.best_loss,
            "best_epoch": progress.best_epoch, "best_state": progress.best_state, "history": progress.history,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "config": self.cfg.to_dict(),
        }
        path = save_checkpoint_state(self.dir / f"{CHECKPOINT_PREFIX}{progress.epoch:04d}", state)
        prune_checkpoints(self.dir, keep=self.cfg.keep_checkpoints)
        return path

    def resume(self) -> _Progress:
        checkpoints = list_checkpoints(self.dir)
        if not checkpoints:
            return _Progress()
        path = checkpoints[-1]
        state = load_checkpoint_state(path, map_location=self.device)
        if state.get("config") != self.cfg.to_dict():
            raise ValidationError(
                f"Checkpoint {str(path)!r} was written with a different config; remove "
                f"{str(self.dir)!r} to start this fold afresh."
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            rng = state["rng"]
            torch.set_rng_state(rng["torch"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])
            if rng["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            progress = _Progress(epoch=int(state["epoch"]) + 1, global_step=int(state["global_step"]),
                                 best_loss=float(state["best_loss"]), best_epoch=int(state["best_epoch"]),
                                 best_state=state["best_state"], history=list(state["history"]))
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
            raise CheckpointError(
                f"Checkpoint {str(path)!r} does not fit this model and training run ({type(exc).__name__}: {exc}). "
                f"Remove {str(self.dir)!r} to start this fold afresh."
            ) from exc
        logger.info("%s fold %d: resumed after epoch %d", self.name, self.fold, progress.epoch - 1)
        return progress

    # ------------------------------------------------------------------ training
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def train_epoch(self, loader: DataLoader, progress: _Progress) -> tuple[float, int]:
        cfg = self.cfg
        accum = cfg.optimizer.accumulation_steps
        self.model.train()
        total, seen = 0.0, 0
        self.optimizer.zero_grad(set_to_none=True)
        batches = tqdm(loader, desc=f"{self.name} fold {self.fold} epoch {progress.epoch + 1}/{cfg.epochs}",
                       leave=False, disable=None)
        n_batches = len(loader)
        for i, (images, targets) in enumerate(batches):
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            if cfg.channels_last and self.device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            if self.mixup is not None and len(images) % 2 == 0:
                images, targets = self.mixup(images, targets)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                loss = self.loss_fn(self.model(images), targets)
            self.scaler.scale(loss / accum).backward()
            if (i + 1) % accum == 0 or i + 1 == n_batches:
                if cfg.optimizer.clip_grad_norm:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optimizer.clip_grad_norm)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                progress.global_step += 1
                if self.ema is not None:
                    self.ema.update(self.model, step=progress.global_step)
            total += float(loss.detach()) * len(images)
            seen += len(images)
        return total / max(seen, 1), seen

    @torch.no_grad()
    def predict(self, dataset: Any, views: Sequence[str]) -> NDArray:
        model = self.eval_model()
        model.eval()
        out = []
        for images, _ in self.eval_loader(dataset):
            images = images.to(self.device)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                out.append(predict_views(model, images, views).cpu())
        return torch.cat(out, dim=1).numpy()  # (V, n, C)

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        train_set, valid_set = self.datasets()
        steps_per_epoch = math.ceil(len(self.loader(train_set, 0)) / cfg.optimizer.accumulation_steps)
        self.build(steps_per_epoch)
        progress = self.resume()
        history_path = self.dir / "history.csv"
        if progress.epoch == 0 and history_path.exists():
            history_path.unlink()
        patience = cfg.regularization.early_stopping_patience
        start = time.perf_counter()
        images_seen, train_seconds = 0, 0.0
        y_valid = torch.as_tensor(self.valid_labels)
        epochs = tqdm(range(progress.epoch, cfg.epochs), desc=f"{self.name} fold {self.fold}", disable=None)
        for epoch in epochs:
            progress.epoch = epoch
            t0 = time.perf_counter()
            train_loss, seen = self.train_epoch(self.loader(train_set, epoch), progress)
            train_time = time.perf_counter() - t0
            images_seen += seen
            train_seconds += train_time
            valid_logits = torch.from_numpy(self.predict(valid_set, ("identity",))[0])
            val_loss = float(nn.functional.cross_entropy(valid_logits, y_valid))
            val_acc = float((valid_logits.argmax(1) == y_valid).float().mean())
            if val_loss < progress.best_loss:
                progress.best_loss, progress.best_epoch = val_loss, epoch
                if patience is not None:
                    progress.best_state = copy.deepcopy(self.eval_model().state_dict())
            row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"], "train_loss": train_loss,
                   "val_loss": val_loss, "val_accuracy": val_acc, "seconds": time.perf_counter() - t0,
                   "train_images_per_second": seen / max(train_time, 1e-9)}
            progress.history.append(row)
            _append_csv(history_path, row)
            epochs.set_postfix(val_loss=f"{val_loss:.4f}", val_acc=f"{val_acc:.4f}")
            self.save(progress)
            if patience is not None and epoch - progress.best_epoch >= patience:
                logger.info("%s fold %d: early stop at epoch %d (best %d)", self.name, self.fold, epoch, progress.best_epoch)
                break
        if patience is not None and progress.best_state is not None:
            self.eval_model().load_state_dict(progress.best_state)
        views = cfg.tta.views
        oof_views = self.predict(valid_set, views)
        test_views = None
        if self.test is not None:
            test_set = TorchImageDataset(self.test, self.test_idx, self.eval_tf)
            test_views = self.predict(test_set, views)
        meta: dict[str, Any] = {
            "config": cfg.to_dict(), "library_version": __version__, "torch_version": torch.__version__,
            "model": cfg.model, "img_size": cfg.img_size, "device": str(self.device),
            "best_epoch": progress.best_epoch, "epochs_run": progress.epoch + 1,
            "val_loss": progress.best_loss, "train_seconds": time.perf_counter() - start,
            "train_images_per_second": images_seen / max(train_seconds, 1e-9),
            "normalize_mean": list(self.mean), "normalize_std": list(self.std),
            "n_train": len(self.train_labels), "n_extra_train": 0 if self.extra is None else len(self.extra),
            "tta_views": list(views),
            # per-epoch curves travel with the entry, so reports need no access to this run folder
            "history": {key: [row[key] for row in progress.history] for key in (progress.history[0] if progress.history else {})},
        }
        if cfg.tta.keep_views:
            path = self.dir / "tta_views.npz"
            check_not_link(path, what="TTA views file")
            np.savez(path, views=np.array(views), oof=oof_views, test=test_views if test_views is not None else np.zeros(0))
            meta["tta_views_file"] = str(path)
        return {"oof": oof_views.mean(axis=0), "test": None if test_views is None else test_views.mean(axis=0), "meta": meta}


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> Any:
    from torch.optim import lr_scheduler as S

    sched = cfg.schedule
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(total - 1, int(round(sched.warmup_epochs * steps_per_epoch)))
    lr = cfg.optimizer.lr
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


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    check_not_link(path, what="Training history")
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
