"""K-fold training of one base model, writing OOF and test logits into the logit store."""

from __future__ import annotations

import copy
import csv
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from ensemble_kit._optional import import_optional
from ensemble_kit._progress import interactive
from ensemble_kit._progress import progress as progress_bar
from ensemble_kit._version import __version__
from ensemble_kit.data.sources import ImageSource, positions_of
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
from ensemble_kit.train.distill import SoftTargets
from ensemble_kit.train.export import EXPORT_DIR, export_fold_model
from ensemble_kit.train._rng import global_rng_state, isolated_global_rngs, set_global_rng_state
from ensemble_kit.train.fold import FoldData, FoldModel, build_fold_model, fold_data, fold_seed
from ensemble_kit.train.models import check_model_inputs
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
             extra_train: ImageSource | Mapping[int, ImageSource | None] | None = None,
             soft_targets: Mapping[int, SoftTargets] | None = None) -> EntryInfo:
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
    extra_train : ImageSource or dict fold -> ImageSource, optional
        Extra labelled samples added to the training set (never the validation set): one source
        for every fold, or each fold its own (what :func:`pseudo_labels_by_fold` returns:
        pseudo-labels of fold ``k`` come from teacher models that never saw fold ``k``).
    soft_targets : dict fold -> SoftTargets, optional
        The teachers' soft targets of every trained fold, required when ``cfg.distill`` is set
        (:func:`ensemble_kit.project.distill_targets_by_fold`: fold ``k``'s come from the
        teachers' fold-``k`` models, which never saw fold ``k``).

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
    extras = _extras_by_fold(extra_train, fold_list)
    try:
        done = set(store.entry(name).folds_present)
    except EntryNotFoundError:
        done = set()
    softs = _soft_targets_by_fold(cfg, soft_targets, [k for k in fold_list if k not in done], store)
    for extra in extras.values():
        if extra is not None:
            _check_extra(store, source, extra)
    # every file's header and every input size before the first epoch: faults are named now, not mid-fold
    for images in (source, test, *extras.values(), *(t.images for t in softs.values() if t is not None)):
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
    device = resolve_device(cfg.device)
    for k in fold_list:
        if k in done:
            logger.info("%s fold %d already stored: skipped", name, k)
            continue
        fold_dir = safe_dir(run_dir, f"fold{k}", create=True)
        result = _FoldRun(cfg, store, source, train_index, test, test_index, extras[k], k, fold_dir, device,
                          name, soft=softs.get(k)).run()
        ids = store.train_ids[store.fold_indices(k)]
        if cfg.tta.keep_views:  # every view as an entry of its own: checksummed data the stack can use
            for v, view in enumerate(cfg.tta.views):
                store.put_fold(view_entry(name, view), k, result["oof_views"][v],
                               None if result["test_views"] is None else result["test_views"][v], ids=ids,
                               kind="logits", meta={"view_of": name, "view": view}, overwrite=True)
        store.put_fold(name, k, result["oof"], result["test"], ids=ids, kind="logits", meta=result["meta"])
        logger.info("%s fold %d stored: best epoch %d, val loss %.4f, %.0fs", name, k, result["meta"]["best_epoch"],
                    result["meta"]["val_loss"], result["meta"]["train_seconds"])
        # the fold is stored and its model exported: resume checkpoints are no longer needed
        prune_checkpoints(fold_dir, keep=0)
    return store.entry(name)


def view_entry(name: str, view: str) -> str:
    """The store entry holding one TTA view of a model's predictions (``tta.keep_views``)."""
    return check_name(f"{name}@{view}", what="TTA view entry name")


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


def _extras_by_fold(extra: ImageSource | Mapping[int, ImageSource | None] | None,
                    folds: Sequence[int]) -> dict[int, ImageSource | None]:
    if not isinstance(extra, Mapping):
        return {k: extra for k in folds}
    missing = [k for k in folds if k not in extra]
    if missing:
        raise ValidationError(f"extra_train gives extra images per fold, but none for fold(s) {missing}; give every "
                              "trained fold an entry (None for no extra images).")
    return {k: extra[k] for k in folds}


def _soft_targets_by_fold(cfg: TrainConfig, soft: Mapping[int, SoftTargets] | None, folds: Sequence[int],
                          store: LogitStore) -> dict[int, SoftTargets | None]:
    if cfg.distill is None:
        if soft is not None:
            raise ValidationError("soft_targets were given, but the config has no distill section (set "
                                  "distill: {alpha: ..., temperature: ...}).")
        return {k: None for k in folds}
    if soft is None:
        raise ValidationError("The config distills (distill is set): pass soft_targets={fold: SoftTargets} "
                              "(ensemble_kit.project.distill_targets_by_fold makes them from the teachers).")
    missing = [k for k in folds if k not in soft]
    if missing:
        raise ValidationError(f"soft_targets has none for fold(s) {missing}.")
    for k in folds:
        soft[k].check(len(store.train_ids), store.n_classes, fold=k)
    return {k: soft[k] for k in folds}


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
    """One fold: build its data and model, resume from the last checkpoint, train, predict.

    ``__init__`` only stores what the fold needs; :meth:`run` builds every part (in one place,
    :mod:`ensemble_kit.train.fold`) inside :func:`isolated_global_rngs`, so a fold is reproducible
    and leaves the caller's global random state untouched.
    """

    def __init__(self, cfg: TrainConfig, store: LogitStore, source: ImageSource, train_index: NDArray,
                 test: ImageSource | None, test_index: NDArray | None, extra: ImageSource | None, fold: int,
                 fold_dir: Path, device: torch.device, name: str, soft: SoftTargets | None = None) -> None:
        self.cfg, self.store, self.source, self.train_index = cfg, store, source, train_index
        self.soft = soft
        self.test, self.test_index, self.extra = test, test_index, extra
        self.fold, self.device, self.name = fold, device, name
        self.dir = safe_dir(fold_dir.parent, fold_dir.name, create=True)

    def data(self) -> FoldData:
        return fold_data(self.cfg, self.store, self.source, self.train_index, self.test, self.test_index, self.extra,
                         self.fold, soft=self.soft)

    # ------------------------------------------------------------------ loaders
    def loader(self, data: FoldData, epoch: int) -> DataLoader:
        cfg = self.cfg
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.fold * 1009 + epoch)
        if cfg.balanced_sampler:
            counts = np.bincount(data.train_labels, minlength=self.store.n_classes).astype(np.float64)
            weights = 1.0 / counts[data.train_labels]
            sampler: Any = WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(data.train_labels),
                                                 replacement=True, generator=generator)
        else:
            sampler = RandomSampler(data.train, generator=generator)
        mixing = cfg.regularization.mixup_alpha > 0 or cfg.regularization.cutmix_alpha > 0
        n, size = len(data.train), cfg.batch_size
        # mixing pairs images within a batch; and a last batch of one image cannot train BatchNorm
        # where maps are 1x1 (one value per channel), e.g. 449 training images in batches of 64
        drop_last = (mixing and n >= size) or (n > size and n % size == 1)
        return DataLoader(data.train, batch_size=size, sampler=sampler, num_workers=cfg.num_workers,
                          pin_memory=self.device.type == "cuda", drop_last=drop_last,
                          worker_init_fn=_seed_worker, persistent_workers=False,
                          generator=torch.Generator().manual_seed(cfg.seed + epoch))

    def eval_loader(self, dataset: Any) -> DataLoader:
        return DataLoader(dataset, batch_size=self.cfg.batch_size * 2, shuffle=False, num_workers=self.cfg.num_workers,
                          pin_memory=self.device.type == "cuda")

    # ------------------------------------------------------------------ checkpoints
    def save(self, parts: FoldModel, progress: _Progress) -> Path:
        state = {
            "epoch": progress.epoch, "global_step": progress.global_step, "best_loss": progress.best_loss,
            "best_epoch": progress.best_epoch, "best_state": progress.best_state, "history": progress.history,
            **parts.state(), "rng": global_rng_state(), "config": self.cfg.to_dict(),
        }
        path = save_checkpoint_state(self.dir / f"{CHECKPOINT_PREFIX}{progress.epoch:04d}", state)
        prune_checkpoints(self.dir, keep=self.cfg.keep_checkpoints)
        return path

    def resume(self, parts: FoldModel) -> _Progress:
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
            parts.load_state(state)
            set_global_rng_state(state["rng"])
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
    def train_epoch(self, parts: FoldModel, loader: DataLoader, progress: _Progress) -> tuple[float, int]:
        cfg = self.cfg
        accum = cfg.optimizer.accumulation_steps
        parts.model.train()
        total, seen = 0.0, 0
        parts.optimizer.zero_grad(set_to_none=True)
        batches = progress_bar(loader, desc=f"{self.name} fold {self.fold} epoch {progress.epoch + 1}/{cfg.epochs}",
                                leave=False)
        n_batches = len(loader)
        for i, (images, targets) in enumerate(batches):
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            if cfg.channels_last and self.device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            if parts.mixup is not None and len(images) % 2 == 0:
                images, targets = parts.mixup(images, targets)
            with torch.autocast(self.device.type, dtype=parts.amp_dtype, enabled=parts.use_amp):
                loss = parts.loss_fn(parts.model(images), targets)
            parts.scaler.scale(loss / accum).backward()
            if (i + 1) % accum == 0 or i + 1 == n_batches:
                if cfg.optimizer.clip_grad_norm:
                    parts.scaler.unscale_(parts.optimizer)
                    nn.utils.clip_grad_norm_(parts.model.parameters(), cfg.optimizer.clip_grad_norm)
                parts.scaler.step(parts.optimizer)
                parts.scaler.update()
                parts.optimizer.zero_grad(set_to_none=True)
                parts.scheduler.step()
                progress.global_step += 1
                if parts.ema is not None:
                    parts.ema.update(parts.model, step=progress.global_step)
            total += float(loss.detach()) * len(images)
            seen += len(images)
        return total / max(seen, 1), seen

    @torch.no_grad()
    def predict(self, parts: FoldModel, dataset: Any, views: Sequence[str]) -> NDArray:
        model = parts.eval_model()
        model.eval()
        out = []
        for images, _ in self.eval_loader(dataset):
            images = images.to(self.device)
            with torch.autocast(self.device.type, dtype=parts.amp_dtype, enabled=parts.use_amp):
                out.append(predict_views(model, images, views).cpu())
        return torch.cat(out, dim=1).numpy()  # (V, n, C)

    def _tensorboard(self) -> Any:
        """A SummaryWriter on ``<fold dir>/tensorboard`` when ``log: tensorboard`` (the tensorboard extra)."""
        if self.cfg.log != "tensorboard":
            return None
        module = import_optional("torch.utils.tensorboard", feature="Training logs for TensorBoard (log: tensorboard)")
        return module.SummaryWriter(log_dir=str(safe_dir(self.dir, "tensorboard", create=True)))

    def run(self) -> dict[str, Any]:
        # CPU results depend on the thread count (reductions split differently): a fixed
        # cpu_threads makes a fold bit-identical wherever it runs (this process, a pool, Dask, Ray)
        threads = torch.get_num_threads()
        if self.cfg.cpu_threads is not None:
            torch.set_num_threads(self.cfg.cpu_threads)
        try:
            with isolated_global_rngs(fold_seed(self.cfg, self.fold)):
                return self._run()
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        data = self.data()
        steps_per_epoch = math.ceil(len(self.loader(data, 0)) / cfg.optimizer.accumulation_steps)
        parts = build_fold_model(cfg, n_classes=self.store.n_classes, train_labels=data.store_train_labels,
                                 steps_per_epoch=steps_per_epoch, device=self.device)
        progress = self.resume(parts)
        history_path = self.dir / "history.csv"
        if progress.epoch == 0 and history_path.exists():
            history_path.unlink()
        patience = cfg.regularization.early_stopping_patience
        board = self._tensorboard()
        start = time.perf_counter()
        images_seen, train_seconds = 0, 0.0
        y_valid = torch.as_tensor(data.valid_labels)
        epochs = progress_bar(range(progress.epoch, cfg.epochs), desc=f"{self.name} fold {self.fold}")
        for epoch in epochs:
            progress.epoch = epoch
            t0 = time.perf_counter()
            train_loss, seen = self.train_epoch(parts, self.loader(data, epoch), progress)
            train_time = time.perf_counter() - t0
            images_seen += seen
            train_seconds += train_time
            valid_logits = torch.from_numpy(self.predict(parts, data.valid, ("identity",))[0])
            val_loss = float(nn.functional.cross_entropy(valid_logits, y_valid))
            val_acc = float((valid_logits.argmax(1) == y_valid).float().mean())
            if val_loss < progress.best_loss:
                progress.best_loss, progress.best_epoch = val_loss, epoch
                if patience is not None:
                    progress.best_state = copy.deepcopy(parts.eval_model().state_dict())
            row = {"epoch": epoch, "lr": parts.optimizer.param_groups[0]["lr"], "train_loss": train_loss,
                   "val_loss": val_loss, "val_accuracy": val_acc, "seconds": time.perf_counter() - t0,
                   "train_images_per_second": seen / max(train_time, 1e-9)}
            progress.history.append(row)
            _append_csv(history_path, row)
            if board is not None:
                for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"),
                                 ("accuracy/val", "val_accuracy"), ("lr", "lr"),
                                 ("throughput/train_images_per_second", "train_images_per_second")):
                    board.add_scalar(tag, row[key], epoch)
                board.flush()
            epochs.set_postfix(val_loss=f"{val_loss:.4f}", val_acc=f"{val_acc:.4f}")
            if not interactive():  # no bar to show it: one log line per epoch
                logger.info("%s fold %d epoch %d/%d: train loss %.4f, val loss %.4f, val accuracy %.4f (%.1fs)",
                            self.name, self.fold, epoch + 1, cfg.epochs, train_loss, val_loss, val_acc, row["seconds"])
            self.save(parts, progress)
            if patience is not None and epoch - progress.best_epoch >= patience:
                logger.info("%s fold %d: early stop at epoch %d (best %d)", self.name, self.fold, epoch, progress.best_epoch)
                break
        if board is not None:
            board.close()
        if patience is not None and progress.best_state is not None:
            parts.eval_model().load_state_dict(progress.best_state)
        # the weights that make this fold's stored predictions, for inference on new images
        export_fold_model(self.dir / EXPORT_DIR, parts.eval_model(), config=cfg, classes=self.store.classes,
                          fold=self.fold, mean=data.mean, std=data.std)
        views = cfg.tta.views
        oof_views = self.predict(parts, data.valid, views)
        test_views = None if data.test is None else self.predict(parts, data.test, views)
        meta: dict[str, Any] = {
            "config": cfg.to_dict(), "library_version": __version__, "torch_version": torch.__version__,
            "model": cfg.model, "img_size": cfg.img_size, "device": str(self.device),
            "best_epoch": progress.best_epoch, "epochs_run": progress.epoch + 1,
            "val_loss": progress.best_loss, "train_seconds": time.perf_counter() - start,
            "train_images_per_second": images_seen / max(train_seconds, 1e-9),
            "normalize_mean": list(data.mean), "normalize_std": list(data.std),
            "n_train": len(data.store_train_labels), "n_extra_train": data.n_extra,
            "tta_views": list(views),
            # per-epoch curves travel with the entry, so reports need no access to this run folder
            "history": {key: [row[key] for row in progress.history] for key in (progress.history[0] if progress.history else {})},
        }
        return {"oof": oof_views.mean(axis=0), "test": None if test_views is None else test_views.mean(axis=0),
                "oof_views": oof_views, "test_views": test_views, "meta": meta}


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
