"""Run a project config: open its data, create or reopen its store, train its models fold by fold."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from ensemble_kit.data.cifar import load_cifar10_batches
from ensemble_kit.data.embedded import load_digits_images
from ensemble_kit.data.sources import (
    ArrayImageSource,
    CsvImageSource,
    ImageDirSource,
    ImageFolderSource,
    ImageSource,
)
from ensemble_kit.ensemble._claims import masked_url
from ensemble_kit._progress import TrainProgress, bars_off, format_eta, progress, training_run
from ensemble_kit.errors import (
    EntryNotFoundError,
    FoldTaskError,
    NotAStoreError,
    StoreCorruptedError,
    StoreExistsError,
    ValidationError,
)
from ensemble_kit.project.config import DataConfig, PretrainConfig, ProjectConfig
from ensemble_kit.project.distill import distill_targets_by_fold
from ensemble_kit.project.executors import Executor, TaskOutcome, parse_executor
from ensemble_kit.store import EntryInfo, LogitStore
from ensemble_kit.project.results import TEST_LABELS
from ensemble_kit.store._files import write_npy, write_text
from ensemble_kit.train.models import check_model_inputs
from ensemble_kit.train.distill import SoftTargets
from ensemble_kit.train.pseudo import pseudo_labels_by_fold
from ensemble_kit.train.trainer import planned_images, train_cv

if TYPE_CHECKING:
    from ensemble_kit.train.mae import MAEResult

logger = logging.getLogger(__name__)

RESOLVED_CONFIG = "project.yaml"


def open_sources(data: DataConfig) -> tuple[ImageSource, ImageSource | None]:
    """The labelled training source and the test source (``None`` when the data has no test set)."""
    if data.format == "digits":
        train, test = load_digits_images(image_size=data.image_size, test_fraction=data.test_fraction)
        return (ArrayImageSource(train.images, [train.classes[k] for k in train.labels], ids=train.ids, classes=train.classes),
                ArrayImageSource(test.images, [test.classes[k] for k in test.labels], ids=test.ids, classes=test.classes))
    if data.format == "cifar10_batches":
        return load_cifar10_batches(data.root)
    if data.format == "folder":
        train_src = ImageFolderSource(data.path(data.train), cache=data.cache)
        if not data.test:
            return train_src, None
        test_root = data.path(data.test)
        has_class_folders = test_root.is_dir() and any(p.is_dir() for p in test_root.iterdir())
        if has_class_folders:
            return train_src, ImageFolderSource(test_root, classes=train_src.classes, cache=data.cache, ids=data.test_ids)
        return train_src, ImageDirSource(test_root, classes=train_src.classes, cache=data.cache)
    train_src = CsvImageSource(data.path(data.train), data.path(data.train_images), id_col=data.id_col,
                               label_col=data.label_col, ext=data.ext, cache=data.cache)
    if data.test:
        test_src: ImageSource | None = CsvImageSource(data.path(data.test), data.path(data.test_images), id_col=data.id_col,
                                                      ext=data.ext, classes=train_src.classes, cache=data.cache)
    elif data.test_images:
        test_src = ImageDirSource(data.path(data.test_images), classes=train_src.classes, cache=data.cache)
    else:
        test_src = None
    return train_src, test_src


def open_project_store(cfg: ProjectConfig, train: ImageSource, test: ImageSource | None) -> LogitStore:
    """Create the config's store, or reopen it after checking it matches the data and folds.

    The resolved config is written to ``STORE/project/project.yaml``; when the test source
    is labelled, its labels are kept beside it (``test_labels.npy``) for held-out scores in
    reports. They are never used for fitting.
    """
    path = Path(cfg.store)
    try:
        store = LogitStore(path)
    except NotAStoreError:
        if path.exists() and any(path.iterdir()):
            raise
        try:
            store = LogitStore.create(path, train.ids, train.labels, classes=train.classes, n_folds=cfg.folds.n_folds,
                                      seed=cfg.folds.seed, test_ids=None if test is None else test.ids)
        except StoreExistsError:  # another job (e.g. another fold) created it first: use theirs, if it matches
            store = LogitStore(path)
            _check_store_matches(store, cfg, train, test)
    else:
        _check_store_matches(store, cfg, train, test)
    project_dir = store.workspace.project_dir(create=True)
    saved = cfg if cfg.stack.storage is None else replace(cfg, stack=replace(cfg.stack, storage=masked_url(cfg.stack.storage)))
    saved.to_yaml(project_dir / RESOLVED_CONFIG)  # a store is shared: never a database password in it
    if test is not None and test.is_labelled:
        order = {str(i): k for k, i in enumerate(test.ids.tolist())}
        labels = np.asarray([test.targets[order[str(i)]] for i in store.test_ids.tolist()], dtype=np.int64)
        write_npy(project_dir / TEST_LABELS, labels)
    return store


def _check_store_matches(store: LogitStore, cfg: ProjectConfig, train: ImageSource, test: ImageSource | None) -> None:
    where = f"Store {str(store.path)!r}"
    if [str(c) for c in store.classes] != [str(c) for c in train.classes]:
        raise ValidationError(f"{where} has classes {store.classes}, the data has {train.classes}.")
    if sorted(map(str, store.train_ids.tolist())) != sorted(map(str, train.ids.tolist())):
        extra = sorted(set(map(str, train.ids.tolist())) - set(map(str, store.train_ids.tolist())))
        raise ValidationError(f"{where} was created for other training images ({len(store.train_ids)} ids vs "
                              f"{len(train)} in the data; e.g. not in the store: {extra[:5]}). Use a new store path.")
    if store.n_folds != cfg.folds.n_folds:
        raise ValidationError(f"{where} has {store.n_folds} folds; the config asks for folds.n_folds="
                              f"{cfg.folds.n_folds}. Folds are fixed when a store is created.")
    store_test = None if store.test_ids is None else sorted(map(str, store.test_ids.tolist()))
    data_test = None if test is None else sorted(map(str, test.ids.tolist()))
    if store_test != data_test:
        raise ValidationError(f"{where} holds a different test set than the data "
                              f"({0 if store_test is None else len(store_test)} vs {0 if data_test is None else len(data_test)} ids).")


def training_order(cfg: ProjectConfig, names: Sequence[str] | None = None) -> list[str]:
    """Models to train, teachers before their students (pseudo-labelled or distilled)."""
    wanted = [m.name for m in cfg.models] if names is None else list(names)
    for name in wanted:
        cfg.model(name)
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise ValidationError(f"Teachers (pseudo_label, distill) form a cycle: {' -> '.join(path + (name,))}.")
        spec = cfg.model(name)
        for teacher in spec.teachers:
            visit(teacher, path + (name,))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return [n for n in order if n in wanted]


def train_project(cfg: ProjectConfig, *, models: Sequence[str] | None = None, folds: Sequence[int] | None = None,
                  executor: str | Executor | None = None) -> dict[str, EntryInfo]:
    """Train the config's models (or ``models``) into its store; finished folds are skipped.

    Students with ``pseudo_label`` are trained after their teachers, whose test logits must be
    complete by then (when only some folds are requested, train the teachers' folds first).

    ``executor`` runs every ``(model, fold)`` as one task somewhere else: a spec such as
    ``"local:2"``, ``"dask"``, ``"dask:tcp://host:8786"``, ``"ray"`` or ``"slurm:PARTITION"``
    (:func:`~ensemble_kit.project.executors.parse_executor`), or an
    :class:`~ensemble_kit.project.executors.Executor`. Tasks run in waves, teachers before their
    students; each writes its fold into the store (``put_fold`` is safe for concurrent writers),
    so workers must see the store's folder (a shared filesystem; ``docs/scaling.md``). A task
    whose worker dies is run again and resumes from its last checkpoint; tasks that raise are
    listed in one :class:`~ensemble_kit.errors.FoldTaskError` after the others have finished.
    """
    runner = parse_executor(executor)
    if runner is not None:
        runner.check()  # a missing engine is named before any store is created
    train, test = open_sources(cfg.data)
    for images in (train, test):
        if images is not None:
            images.check()  # every image header, listing all bad files, before any model trains
    order = training_order(cfg, models)
    for name in order:
        check_model_inputs(cfg.model(name).train, len(train.classes))
    store = open_project_store(cfg, train, test)
    if folds is not None:
        for k in folds:
            if not 0 <= int(k) < store.n_folds:
                raise ValidationError(f"fold {k} is out of range: the store has folds 0..{store.n_folds - 1}.")
    if runner is None:
        # one position and ETA over every model and fold of this command (train_cv reports to it)
        tracker = TrainProgress(order)
        wanted = list(range(store.n_folds)) if folds is None else sorted({int(k) for k in folds})
        for name in order:
            stored = set(_stored_folds(store, name))
            tracker.plan(name, planned_images(cfg.model(name).train, store, [k for k in wanted if k not in stored]))
        with training_run(tracker):
            for i, name in enumerate(order, 1):
                spec = cfg.model(name)
                logger.info("training model %d/%d %s (%s)", i, len(order), name, spec.train.model)
                train_cv(spec.train, store, train, test, name=name, folds=folds,
                         extra_train=_pseudo_labelled(cfg, store, name, test, folds=folds),
                         soft_targets=_soft_targets(cfg, store, name, train, test, folds=folds))
    else:
        _train_on(runner, _portable(cfg), store, order, folds)
    return {name: store.entry(name) for name in order}


def _pseudo_labelled(cfg: ProjectConfig, store: LogitStore, name: str, test: ImageSource | None,
                     folds: Sequence[int] | None = None) -> dict[int, ImageSource | None] | None:
    """A student's pseudo-labelled extra training images per fold (``None`` for a model without
    ``pseudo_label``): fold ``k``'s come from the teachers' fold-``k`` models only."""
    spec = cfg.model(name)
    if spec.pseudo_label is None:
        return None
    _check_teachers(cfg, store, name)
    if test is None:
        raise ValidationError(f"Model {name!r} uses pseudo-labels, but the data has no test images.")
    p = spec.pseudo_label
    extras: dict[int, ImageSource | None] = dict(pseudo_labels_by_fold(
        store, p.teachers, test, folds=folds, threshold=p.threshold, top_fraction=p.top_fraction,
        per_class_cap=p.per_class_cap))
    for k, extra in extras.items():
        if extra is not None and len(extra) == 0:
            logger.warning("%s fold %d: no test image reaches the pseudo-label threshold %s; training on labelled "
                           "data only", name, k, p.threshold)
            extras[k] = None
    return extras


def _soft_targets(cfg: ProjectConfig, store: LogitStore, name: str, train: ImageSource, test: ImageSource | None,
                  folds: Sequence[int] | None = None) -> dict[int, SoftTargets] | None:
    """A distilled student's soft targets per fold (``None`` for a model without ``distill``):
    fold ``k``'s come from the teachers' fold-``k`` models only."""
    spec = cfg.model(name)
    if spec.distill is None or spec.train.distill is None:
        return None
    _check_teachers(cfg, store, name)
    if spec.distill.unlabeled and test is None:
        raise ValidationError(f"Model {name!r} distils on unlabelled test images (distill.unlabeled), but the data "
                              "has no test images.")
    wanted = [k for k in (range(store.n_folds) if folds is None else folds) if k not in _stored_folds(store, name)]
    return distill_targets_by_fold(store, spec.distill.teachers, train, temperature=spec.train.distill.temperature,
                                   unlabeled=test if spec.distill.unlabeled else None, folds=wanted,
                                   device=spec.train.device)


# ---------------------------------------------------------------------- fold tasks on an executor
def train_fold(cfg: ProjectConfig, model: str, fold: int, log_level: int = logging.INFO) -> str:
    """One task of :func:`train_project` on an executor: train fold ``fold`` of ``model`` into the store.

    Runs in a worker process: it opens the data and the store itself (they are not shipped), and
    resumes from the fold's last checkpoint when an earlier attempt died.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s [worker %(process)d] %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("ensemble_kit").setLevel(log_level)
    train, test = _worker_sources(cfg.data)
    store = LogitStore(cfg.store)
    spec = cfg.model(model)
    # a worker knows its own task only: "model i/M" counts the config's models, the ETA is this task's
    # (the submitting process logs the whole command's as tasks finish)
    names = [m.name for m in cfg.models]
    tracker = TrainProgress([model], n_models=len(names), first=names.index(model) + 1, scope="for this fold task")
    # workers share one console: log lines, never bars that overwrite each other
    with bars_off(), training_run(tracker):
        train_cv(spec.train, store, train, test, name=model, folds=[fold],
                 extra_train=_pseudo_labelled(cfg, store, model, test, folds=[fold]),
                 soft_targets=_soft_targets(cfg, store, model, train, test, folds=[fold]))
    return f"{model} fold {fold}"


@functools.lru_cache(maxsize=2)
def _worker_sources(data: DataConfig) -> tuple[ImageSource, ImageSource | None]:
    """A worker's data, opened once for all the fold tasks it runs."""
    return open_sources(data)


def _portable(cfg: ProjectConfig) -> ProjectConfig:
    """``cfg`` with every path absolute: a worker may start in another directory."""
    def absolute(path: str | None) -> str | None:
        return None if path is None else str(Path(path).expanduser().absolute())

    models = tuple(replace(spec, train=replace(spec.train, pretrained_path=absolute(spec.train.pretrained_path)))
                   for spec in cfg.models)
    return replace(cfg, store=absolute(cfg.store), data=replace(cfg.data, root=absolute(cfg.data.root)), models=models)


def _waves(cfg: ProjectConfig, order: Sequence[str]) -> list[list[str]]:
    """Models grouped so that each wave's teachers are all in earlier waves."""
    level: dict[str, int] = {}
    for name in order:  # teachers come first in training order
        spec = cfg.model(name)
        level[name] = 1 + max((level.get(t, -1) for t in spec.teachers), default=-1)
    return [[n for n in order if level[n] == w] for w in range(max(level.values(), default=-1) + 1)]


def _train_on(runner: Executor, cfg: ProjectConfig, store: LogitStore, order: Sequence[str],
              folds: Sequence[int] | None) -> None:
    wanted = list(range(store.n_folds)) if folds is None else sorted({int(k) for k in folds})
    level = logging.getLogger("ensemble_kit").getEffectiveLevel()
    # the command's ETA from finished tasks: seconds per task so far x tasks left (all waves)
    total = sum(len([k for k in wanted if k not in set(_stored_folds(store, name))]) for name in order)
    finished = [0]
    start = time.monotonic()

    def eta() -> str:
        if not finished[0]:
            return f"{finished[0]}/{total} fold tasks, ETA {format_eta(None)}"
        left = (time.monotonic() - start) / finished[0] * (total - finished[0])
        return f"{finished[0]}/{total} fold tasks, ETA {format_eta(left)}"

    for wave in _waves(cfg, order):
        for name in wave:  # a student's teachers are checked here, not once per task
            _check_teachers(cfg, store, name)
        tasks = []
        for name in wave:
            stored = set(_stored_folds(store, name))
            tasks += [(cfg, name, k, level) for k in wanted if k not in stored]
            if stored & set(wanted):
                logger.info("%s: folds %s already stored: skipped", name, sorted(stored & set(wanted)))
        if not tasks:
            continue
        logger.info("training %d fold task(s) of %s on %s", len(tasks), ", ".join(wave), runner.describe())
        bar = progress(range(len(tasks)), desc="fold tasks", total=len(tasks))

        def done(outcome: TaskOutcome) -> None:
            finished[0] += 1
            bar.set_postfix_str(eta(), refresh=False)
            bar.update(1)
            _, name, k, _ = outcome.args
            if outcome.error is None:
                logger.info("%s fold %d: done (%s)", name, k, eta())
            else:
                logger.error("%s fold %d failed: %s: %s (%s)", name, k, type(outcome.error).__name__, outcome.error,
                             eta())

        try:
            outcomes = runner.run(train_fold, tasks, on_done=done)
        finally:
            bar.close()
        failed = [o for o in outcomes if o.error is not None]
        if failed:
            lines = [f"{o.args[1]} fold {o.args[2]}: {type(o.error).__name__}: {o.error}" for o in failed]
            raise FoldTaskError(f"{len(failed)} of {len(tasks)} fold task(s) failed on {runner.describe()}:\n  "
                                + "\n  ".join(lines) + "\nFolds that finished are stored; fix the cause and run "
                                "again: stored folds are skipped and interrupted ones resume from their checkpoint.",
                                failures=[(o.args[1], o.args[2], o.error) for o in failed])


def _stored_folds(store: LogitStore, name: str) -> tuple[int, ...]:
    try:
        return tuple(store.entry(name).folds_present)
    except EntryNotFoundError:
        return ()


def _check_teachers(cfg: ProjectConfig, store: LogitStore, name: str) -> None:
    spec = cfg.model(name)
    if not spec.teachers:
        return
    complete, incomplete = set(store.models()), store.incomplete()
    missing = {t: incomplete.get(t) for t in spec.teachers if t not in complete}
    if missing:
        detail = ", ".join(f"{t} (missing folds {list(f) if f else 'all'})" for t, f in missing.items())
        how = "pseudo-labelled by" if spec.pseudo_label is not None else "distilled from"
        raise ValidationError(f"Model {name!r} is {how} teachers that are not complete in the store: {detail}. "
                              "Train every fold of the teachers first.")


def pretrain_project(cfg: PretrainConfig) -> MAEResult:
    """MAE pre-training on a project's images (train, and test unless ``images: train``); labels unread.

    The resolved config is saved as ``OUT/pretrain.yaml`` beside the encoder weights.
    """
    from ensemble_kit.train.mae import pretrain_mae

    train_src, test_src = open_sources(cfg.data)
    images = [train_src] + ([test_src] if test_src is not None and cfg.images == "train+test" else [])
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "pretrain.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return pretrain_mae(cfg.mae, images, out)
