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
from ensemble_kit._progress import TrainProgress, current_run, interactive
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
from ensemble_kit.train._threads import ThreadChoice, choose_threads, switch_threads, use_threads
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
    # the position and ETA of the whole train command (train_project's), else of this call alone
    tracker = current_run() or TrainProgress([name])
    tracker.plan(name, planned_images(cfg, store, [k for k in fold_list if k not in done], extras, softs))
    tracker.start_model(name)
    logged: ThreadChoice | None = None
    for k in fold_list:
        if k in done:
            logger.info("%s: already stored, skipped", tracker.position(fold=(k, store.n_folds)))
            continue
        # chosen per fold (the machine's load changes over a long run); logged when it changes
        threads = choose_threads(cfg.cpu_threads)
        if logged is None or (threads.torch, threads.blas) != (logged.torch, logged.blas):
            logger.info("%s: %s", tracker.position() if logged is None else tracker.position(fold=(k, store.n_folds)),
                        threads.describe())
            logged = threads
        fold_dir = safe_dir(run_dir, f"fold{k}", create=True)
        result = _FoldRun(cfg, store, source, train_index, test, test_index, extras[k], k, fold_dir, device,
                          name, soft=softs.get(k), tracker=tracker, threads=threads).run()
        ids = store.train_ids[store.fold_indices(k)]
        if cfg.tta.keep_views:  # every view as an entry of its own: checksummed data the stack can use
            for v, view in enumerate(cfg.tta.views):
                store.put_fold(view_entry(name, view), k, result["oof_views"][v],
                               None if result["test_views"] is None else result["test_views"][v], ids=ids,
                               kind="logits", meta={"view_of": name, "view": view}, overwrite=True)
        store.put_fold(name, k, result["oof"], result["test"], ids=ids, kind="logits", meta=result["meta"])
        logger.info("%s stored: best epoch %d of %d, val loss %.4f, %.0f s", tracker.position(epoch=False),
                    result["meta"]["best_epoch"], result["meta"]["epochs_run"], result["meta"]["val_loss"],
                    result["meta"]["train_seconds"])
        # the fold is stored and its model exported: resume checkpoints are no longer needed
        prune_checkpoints(fold_dir, keep=0)
    return store.entry(name)


def planned_images(cfg: TrainConfig, store: LogitStore, folds: Sequence[int],
                   extras: Mapping[int, ImageSource | None] | None = None,
                   softs: Mapping[int, SoftTargets | None] | None = None) -> dict[int, int]:
    """Training images each of ``folds`` will train, over all its epochs (for the ETA; a resumed
    fold's exact count replaces it when the fold starts)."""
    repeat = cfg.augment.repeated_augment
    plan = {}
    for k in folds:
        rows = int(np.sum(store.folds != k))
        extra = (extras or {}).get(k)
        soft = (softs or {}).get(k)
        rows += (0 if extra is None else len(extra)) + (0 if soft is None or soft.images is None else len(soft.images))
        plan[k] = rows * repeat * cfg.epochs
    return plan


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
    threads: int | None = None  # torch threads the fold's earlier epochs ran with (from its checkpoint)


class _FoldRun:
    """One fold: build its data and model, resume from the last checkpoint, train, predict.

    ``__init__`` only stores what the fold needs; :meth:`run` builds every part (in one place,
    :mod:`ensemble_kit.train.fold`) inside :func:`isolated_global_rngs`, so a fold is reproducible
    and leaves the caller's global random state untouched.
    """

    def __init__(self, cfg: TrainConfig, store: LogitStore, source: ImageSource, train_index: NDArray,
                 test: ImageSource | None, test_index: NDArray | None, extra: ImageSource | None, fold: int,
                 fold_dir: Path, device: torch.device, name: str, soft: SoftTargets | None = None,
                 tracker: TrainProgress | None = None, threads: ThreadChoice | None = None) -> None:
        self.cfg, self.store, self.source, self.train_index = cfg, store, source, train_index
        self.tracker = tracker if tracker is not None else TrainProgress([name])
        if tracker is None:
            self.tracker.start_model(name)
        self.threads = threads if threads is not None else choose_threads(cfg.cpu_threads)
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
            **parts.state(), "rng": global_rng_state(), "config": self.cfg.to_dict(), "threads": self.threads.torch,
        }
        # named after the epoch it follows, counted from 1 like the log and history.csv; state.json
        # keeps the 0-based counter (internal, and what older checkpoints hold)
        path = save_checkpoint_state(self.dir / f"{CHECKPOINT_PREFIX}{progress.epoch + 1:04d}", state)
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
                                 best_state=state["best_state"], history=_numbered_from_one(state["history"]),
                                 threads=state.get("threads"))
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
            raise CheckpointError(
                f"Checkpoint {str(path)!r} does not fit this model and training run ({type(exc).__name__}: {exc}). "
                f"Remove {str(self.dir)!r} to start this fold afresh."
            ) from exc
        logger.info("%s: resumed after epoch %d/%d", self.tracker.position(epoch=False), progress.epoch, self.cfg.epochs)
        return progress

    # ------------------------------------------------------------------ training
    def train_epoch(self, parts: FoldModel, loader: DataLoader, progress: _Progress) -> tuple[float, int]:
        cfg = self.cfg
        accum = cfg.optimizer.accumulation_steps
        parts.model.train()
        total, seen = 0.0, 0
        parts.optimizer.zero_grad(set_to_none=True)
        n_batches = len(loader)
        tracker = self.tracker
        tracker.start_epoch(progress.epoch, n_batches)
        batches = progress_bar(loader, desc=tracker.position(), leave=False)
        bar = interactive()
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
            tracker.batch(i + 1, len(images))
            if bar:
                batches.set_postfix_str(tracker.speed_eta(), refresh=False)
        return total / max(seen, 1), seen

    @torch.no_grad()
    def predict(self, parts: FoldModel, dataset: Any, views: Sequence[str], what: str = "validation") -> NDArray:
        model = parts.eval_model()
        model.eval()
        out = []
        loader = self.eval_loader(dataset)
        for b, (images, _) in enumerate(loader):
            if b:  # a long validation or prediction pass still logs every LOG_INTERVAL seconds
                self.tracker.heartbeat(f"{what}, batch {b + 1}/{len(loader)}")
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
        # threads chosen so the CPU is not oversubscribed (ensemble_kit.train._threads), restored after.
        # CPU results depend on the thread count (reductions split differently): a fixed
        # cpu_threads makes a fold bit-identical wherever it runs (this process, a pool, Dask, Ray)
        with use_threads(self.threads), isolated_global_rngs(fold_seed(self.cfg, self.fold)):
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        data = self.data()
        steps_per_epoch = math.ceil(len(self.loader(data, 0)) / cfg.optimizer.accumulation_steps)
        parts = build_fold_model(cfg, n_classes=self.store.n_classes, train_labels=data.store_train_labels,
                                 steps_per_epoch=steps_per_epoch, device=self.device)
        tracker = self.tracker
        tracker.start_fold(self.fold, self.store.n_folds, n_epochs=cfg.epochs, first_epoch=0, images_per_epoch=0)
        progress = self.resume(parts)
        if cfg.cpu_threads is None and isinstance(progress.threads, int) and progress.threads >= 1 \
                and progress.threads != self.threads.torch:
            # a resumed fold goes on with the thread count its first epochs had: CPU results depend on
            # it, and the resumed fold then ends as the uninterrupted one would have
            self.threads = ThreadChoice(progress.threads, progress.threads,
                                        "as before this fold's resume; set cpu_threads to choose")
            switch_threads(self.threads)
            logger.info("%s: %s", tracker.position(epoch=False), self.threads.describe())
        tracker.start_fold(self.fold, self.store.n_folds, n_epochs=cfg.epochs, first_epoch=progress.epoch,
                           images_per_epoch=_images_per_epoch(len(data.train), self.loader(data, 0)))
        history_path = self.dir / "history.csv"
        # the checkpoint's history is the truth: a row appended after the last checkpoint (killed
        # before it was saved) would otherwise appear twice once its epoch runs again
        if history_path.exists():
            check_not_link(history_path, what="Training history")
            history_path.unlink()
        for row in progress.history:
            _append_csv(history_path, row)
        patience = cfg.regularization.early_stopping_patience
        board = self._tensorboard()
        start = time.perf_counter()
        images_seen, train_seconds = 0, 0.0
        y_valid = torch.as_tensor(data.valid_labels)
        epochs = progress_bar(range(progress.epoch, cfg.epochs), desc=tracker.position(epoch=False),
                              total=cfg.epochs, initial=progress.epoch)
        for epoch in epochs:
            progress.epoch = epoch
            t0 = time.perf_counter()
            train_loss, seen = self.train_epoch(parts, self.loader(data, epoch), progress)
            train_time = time.perf_counter() - t0
            images_seen += seen
            train_seconds += train_time
            valid_logits = torch.from_numpy(self.predict(parts, data.valid, ("identity",), "validation")[0])
            val_loss = float(nn.functional.cross_entropy(valid_logits, y_valid))
            val_acc = float((valid_logits.argmax(1) == y_valid).float().mean())
            if val_loss < progress.best_loss:
                progress.best_loss, progress.best_epoch = val_loss, epoch
                if patience is not None:
                    progress.best_state = copy.deepcopy(parts.eval_model().state_dict())
            # epochs are counted from 1 wherever a user reads them: log lines, history.csv, the
            # store's history (the report's curves) and best_epoch
            row = {"epoch": epoch + 1, "lr": parts.optimizer.param_groups[0]["lr"], "train_loss": train_loss,
                   "val_loss": val_loss, "val_accuracy": val_acc, "seconds": time.perf_counter() - t0,
                   "train_images_per_second": seen / max(train_time, 1e-9)}
            progress.history.append(row)
            _append_csv(history_path, row)
            if board is not None:
                for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"),
                                 ("accuracy/val", "val_accuracy"), ("lr", "lr"),
                                 ("throughput/train_images_per_second", "train_images_per_second")):
                    board.add_scalar(tag, row[key], epoch + 1)
                board.flush()
            epochs.set_postfix_str(f"val loss {val_loss:.4f}, val acc {val_acc:.4f}, {tracker.speed_eta()}")
            # off a terminal: the epoch's line (position, speed, ETA, then its figures)
            tracker.end_epoch(f"train loss {train_loss:.4f}, val loss {val_loss:.4f}, val accuracy {val_acc:.4f} "
                              f"({row['seconds']:.1f} s)")
            self.save(parts, progress)
            if patience is not None and epoch - progress.best_epoch >= patience:
                logger.info("%s: early stop after epoch %d/%d (best epoch %d)", tracker.position(epoch=False),
                            epoch + 1, cfg.epochs, progress.best_epoch + 1)
                break
        tracker.end_fold()
        if board is not None:
            board.close()
        if patience is not None and progress.best_state is not None:
            parts.eval_model().load_state_dict(progress.best_state)
        # the weights that make this fold's stored predictions, for inference on new images
        export_fold_model(self.dir / EXPORT_DIR, parts.eval_model(), config=cfg, classes=self.store.classes,
                          fold=self.fold, mean=data.mean, std=data.std)
        views = cfg.tta.views
        oof_views = self.predict(parts, data.valid, views, "OOF predictions")
        test_views = None if data.test is None else self.predict(parts, data.test, views, "test predictions")
        meta: dict[str, Any] = {
            "config": cfg.to_dict(), "library_version": __version__, "torch_version": torch.__version__,
            "model": cfg.model, "img_size": cfg.img_size, "device": str(self.device),
            "best_epoch": progress.best_epoch + 1, "epochs_run": len(progress.history),
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


def _images_per_epoch(n_train: int, loader: DataLoader) -> int:
    """Training images one epoch feeds (a dropped last batch is not trained)."""
    if loader.drop_last and loader.batch_size:
        return n_train // loader.batch_size * loader.batch_size
    return n_train


def _numbered_from_one(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The history rows of a checkpoint, epochs counted from 1 (checkpoints written before epochs
    were counted from 1 everywhere start at epoch 0: shifted)."""
    rows = [dict(row) for row in history]
    if rows and rows[0].get("epoch") == 0:
        for row in rows:
            row["epoch"] = int(row["epoch"]) + 1
    return rows


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
