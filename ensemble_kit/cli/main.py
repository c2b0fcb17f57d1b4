"""``ensemble-kit``: the command-line edge of the library. Only this module prints results.

Every command that takes a store of a project reads the project's saved settings
(``STORE/project/project.yaml``: its ``stack:`` and ``submission:`` sections) by default; a flag
given on the command line overrides them, and what was used is saved next to the output.
Imports are lazy, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ensemble_kit._version import __version__
from ensemble_kit.errors import DestinationError, EnsembleKitError, ValidationError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("ensemble_kit")

# Messages speak the Python API; on the command line they name the flags instead.
_FLAG_WORDING = [
    (re.compile(r"\bput\(\.\.\., overwrite=True\)"), "--overwrite"),
    (re.compile(r"\boverwrite=True\b"), "--overwrite"),
    (re.compile(r"\bid_col=\.\.\."), "--id-col ..."),
    (re.compile(r"\bkind='(probs|logits)'"), r"--kind \1"),
    (re.compile(r"\bmodels=\.\.\."), "--models ..."),
]


def _cli_wording(message: str) -> str:
    for pattern, flag in _FLAG_WORDING:
        message = pattern.sub(flag, message)
    return message


def _format(table: pd.DataFrame) -> str:
    import pandas as pd

    with pd.option_context("display.max_columns", 30, "display.width", 200):
        return table.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="")


def _readable_board(board: pd.DataFrame, *, meta: bool) -> pd.DataFrame:
    """The leaderboard without metadata columns (``--meta`` keeps them) and with problems only when any."""
    keep = [c for c in board.columns if meta or not (c.startswith("meta.") or c in ("created", "updated"))]
    if "problem" in keep and not board["problem"].fillna("").astype(bool).any():
        keep.remove("problem")
    return board[keep]


# ---------------------------------------------------------------------- store commands
def _cmd_init(args: argparse.Namespace) -> int:
    """``init STORE --labels CSV`` (a store for your own predictions) or ``init PROJECT.yaml --images
    DATA`` / ``--train DIR`` (an image project): the flags choose the form."""
    if args.images is not None or args.train is not None:
        return _init_image_project(args)
    if args.labels is None:
        raise ValidationError("give --labels CSV to start a store for your own predictions (init STORE --labels "
                              "train.csv), or --images DATA / --train DIR to write an image project (init PROJECT.yaml "
                              "--images data/)")
    misplaced = [flag for flag, value in (("--test", args.test), ("--store", args.project_store)) if value is not None]
    if misplaced:
        raise ValidationError(f"{misplaced[0]} belongs to an image project (init PROJECT.yaml --images DATA or --train "
                              "DIR); a store for your own predictions takes --labels, --test-ids or --sample-submission")
    return _init_store(args, id_col=args.id_col or "id", label_col=args.label_col or "label")


def _init_store(args: argparse.Namespace, *, id_col: str, label_col: str) -> int:
    from ensemble_kit.project.config import SubmissionConfig, write_store_defaults
    from ensemble_kit.store import LogitStore
    from ensemble_kit.store._tables import load_table

    labels = load_table(args.labels, what="--labels", id_col=id_col)
    missing = [c for c in (id_col, label_col, args.fold_col) if c is not None and c not in labels.columns]
    if missing:
        raise ValidationError(f"--labels {args.labels}: no column(s) {missing}; columns are {list(labels.columns)[:20]}. "
                     "Name them with --id-col / --label-col / --fold-col.")
    y = labels[label_col].to_numpy()
    classes = args.classes.split(",") if args.classes else sorted(set(y.tolist()), key=lambda c: (str(type(c)), c))
    test_ids, submission = None, SubmissionConfig(id_col=id_col)
    if args.test_ids is not None:
        test_ids = load_table(args.test_ids, what="--test-ids", id_col=id_col)[id_col].astype(str).to_numpy()
    elif args.sample_submission is not None:
        sample = load_table(args.sample_submission, what="--sample-submission", id_col=None)
        sample = load_table(args.sample_submission, what="--sample-submission", id_col=str(sample.columns[0]))
        test_ids = sample.iloc[:, 0].astype(str).to_numpy()
        submission = SubmissionConfig(id_col=str(sample.columns[0]))
    folds = None if args.fold_col is None else labels[args.fold_col].to_numpy()
    store = LogitStore.create(args.target, labels[id_col].astype(str).to_numpy(), y, classes,
                              n_folds=args.folds, seed=args.seed, folds=folds, test_ids=test_ids)
    write_store_defaults(store.path, submission, sample_submission=args.sample_submission)
    mapping = "" if store.fold_labels == list(range(store.n_folds)) else \
        f" (fold labels {store.fold_labels} -> 0..{store.n_folds - 1})"
    print(f"created {store.path}: {len(store.train_ids)} training ids, {len(classes)} classes, {store.n_folds} folds"
          f"{mapping}, {0 if store.test_ids is None else len(store.test_ids)} test ids")
    print(f"next: ensemble-kit import-oof {store.path} NAME oof.csv --test test.csv")
    return 0


_SAMPLE_NAMES = ("sample_submission.csv", "samplesubmission.csv")


def _child_folder(data: Path, name: str) -> Path | None:
    """The folder ``data/<name>`` (any case), or ``None``."""
    matches = sorted(p for p in data.iterdir() if p.is_dir() and p.name.lower() == name)
    return matches[0] if matches else None


def _image_side(paths: list[Path]) -> int | None:
    """The median short side of a few images (headers only), or ``None`` when none can be read."""
    from PIL import Image, UnidentifiedImageError

    sides = []
    for path in paths[:: max(1, len(paths) // 25)][:25]:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except (OSError, UnidentifiedImageError, ValueError):
            continue
    return int(sorted(sides)[len(sides) // 2]) if sides else None


def _init_image_project(args: argparse.Namespace) -> int:
    """Write a commented, validated project YAML for an ImageFolder train set (+ test folder, + sample submission)."""
    import os

    import numpy as np

    from ensemble_kit.data.sources import ImageDirSource, ImageFolderSource
    from ensemble_kit.project.config import ImageProjectDraft, ProjectConfig, image_project_yaml
    from ensemble_kit.project.submission import image_extension, match_sample_ids, sample_layout

    store_only = [flag for flag, value in (("--labels", args.labels), ("--id-col", args.id_col),
                                           ("--label-col", args.label_col), ("--classes", args.classes),
                                           ("--test-ids", args.test_ids), ("--fold-col", args.fold_col))
                  if value is not None]
    if store_only:
        raise ValidationError(f"{store_only[0]} belongs to a store for your own predictions (init STORE --labels CSV); "
                              "an image project takes its classes from the train folder and its ids and columns "
                              "from the test folder and the sample submission")
    if args.images is not None and args.test is not None:
        raise ValidationError("--test goes with --train DIR; --images DATA finds DATA/train and DATA/test itself")
    target: Path = args.target
    if target.suffix.lower() not in (".yaml", ".yml"):
        raise ValidationError(f"an image project is a YAML file: name it like PROJECT.yaml (got {str(target)!r})")
    if target.exists() or target.is_symlink():
        raise ValidationError(f"{str(target)!r} already exists; init never overwrites a file: remove it or choose "
                              "another name")
    sample = args.sample_submission
    if args.images is not None:
        data = args.images
        if not data.is_dir():
            raise ValidationError(f"--images {str(data)!r}: not a folder (expected DATA/train/<class>/<image>, "
                                  "DATA/test/<image> and DATA/sample_submission.csv)")
        train = _child_folder(data, "train")
        if train is None:
            raise ValidationError(f"--images {str(data)!r}: no 'train' folder (expected {data}/train/<class>/<image>, "
                                  f"and optionally {data}/test/ and {data}/sample_submission.csv); for another layout "
                                  "give --train DIR [--test DIR] [--sample-submission CSV]")
        test = _child_folder(data, "test")
        if sample is None:
            found = sorted(p for p in data.iterdir() if p.is_file() and p.name.lower() in _SAMPLE_NAMES)
            sample = found[0] if found else None
        root, train_rel, test_rel = str(data), train.name, None if test is None else test.name
    else:
        train, test = args.train, args.test
        for flag, folder in (("--train", train), ("--test", test)):
            if folder is not None and not folder.is_dir():
                raise ValidationError(f"{flag} {str(folder)!r}: not a folder")
        parent = train.parent
        if test is None or test.parent == parent:
            root, train_rel, test_rel = str(parent), train.name, None if test is None else test.name
        else:
            root, train_rel, test_rel = ".", str(train), str(test)
    train_src = ImageFolderSource(train)
    classes = [str(c) for c in train_src.classes]
    counts = np.bincount(train_src.targets, minlength=len(classes)).tolist()
    n_folds = 5 if args.folds is None else args.folds
    small = [(c, n) for c, n in zip(classes, counts) if n < n_folds]
    if small:
        listed = ", ".join(f"{c!r} has {n}" for c, n in small[:5])
        fewest = min(n for _, n in small)
        hint = f"use --folds {fewest}" if fewest >= 2 else "every class needs at least 2 images"
        raise ValidationError(f"stratified {n_folds}-fold CV needs at least {n_folds} images per class; {listed} "
                              f"({train}): {hint}")
    test_src = None
    if test is not None:
        class_folders = any(p.is_dir() for p in test.iterdir())
        # the ids `train` gives these images (pipeline.open_sources, data.test_ids: auto)
        test_src = (ImageFolderSource(test, classes=classes, ids="auto") if class_folders
                    else ImageDirSource(test, classes=classes))
    layout = None
    if sample is not None:
        layout = sample_layout(sample, classes)
        if test_src is not None:
            try:
                match_sample_ids(test_src.ids, layout.ids)
            except ValidationError as exc:
                raise ValidationError(f"--sample-submission {str(sample)!r} does not list the images of {str(test)!r}: "
                                      f"{exc}") from exc
    sample_example = None  # the sample's ids carry an extension: the file keeps them so
    if layout is not None and len(layout.ids) and image_extension(layout.ids[0]):
        sample_example = str(layout.ids[0])
    side = _image_side(train_src.paths)
    draft = ImageProjectDraft(
        store=str(args.project_store or Path("runs") / target.stem / "store"), root=root, train=train_rel,
        test=test_rel, classes=tuple(classes), counts=tuple(counts), n_test=0 if test_src is None else len(test_src),
        test_id_example=None if test_src is None else str(test_src.ids[0]),
        img_size=32 if side is not None and side <= 40 else 64, image_side=side, n_folds=n_folds, seed=args.seed,
        sample=None if sample is None else str(sample), sample_format=None if layout is None else layout.format,
        id_col="id" if layout is None else layout.id_col,
        label_col=layout.label_col if layout is not None and layout.label_col else "label",
        sample_id_example=sample_example)
    text = image_project_yaml(draft, cwd=os.getcwd())
    import yaml

    ProjectConfig.from_dict(yaml.safe_load(text))  # never write a file that `train` would refuse
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(target, "x", encoding="utf-8") as fh:
            fh.write(text)
    except FileExistsError as exc:
        raise ValidationError(f"{str(target)!r} already exists; init never overwrites a file") from exc
    cfg = ProjectConfig.from_yaml(target)  # the file as written
    shape = "" if layout is None else (
        f"; sample submission: {'probabilities' if layout.format == 'probs' else f'labels in {layout.label_col!r}'}, "
        f"id column {layout.id_col!r}, {len(layout.frame)} rows")
    print(f"wrote {target}: {len(classes)} classes, {sum(counts)} training images, {draft.n_test} test images, "
          f"{n_folds} folds{shape}")
    print(f"models: {', '.join(m.name for m in cfg.models)} at {draft.img_size} px, {cfg.models[0].train.epochs} "
          f"epochs (starters for a CPU: every section of the file says what to change)")
    print(f"next: ensemble-kit train {target}")
    submit = f"ensemble-kit submit {cfg.store}" + ("" if sample is None else f" --sample-submission {sample}")
    print(f"then: ensemble-kit stack {cfg.store} && {submit}")
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    from ensemble_kit.project.results import list_stacks, load_stack, results_table
    from ensemble_kit.store import LogitStore

    store = LogitStore(args.store)
    print(store)
    if store.fold_labels != list(range(store.n_folds)):
        print(f"fold labels: {store.fold_labels} (fold index i is label fold_labels[i])")
    board = store.leaderboard(metric=args.metric)
    print(_format(_readable_board(board, meta=args.meta)) if len(board) else "(no complete entries)")
    stacks = list_stacks(store)
    if stacks and store.models():
        stack = load_stack(store, stacks[-1])
        recipe = f"recipe {stack.info.recipe}, " if stack.info is not None and stack.info.recipe else ""
        print(f"\nstack {stack.name!r} ({recipe}metric {stack.metric}); honest OOF CV:")
        print(_format(results_table(store, stack)))
    for name, missing in store.incomplete().items():
        print(f"incomplete: {name} (missing folds {list(missing)})")
    for name, problem in store.problems().items():
        print(f"damaged: {name}: {problem}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from ensemble_kit.store import LogitStore

    store = LogitStore(args.store)
    store.verify()
    print(f"OK: {store.path} ({len(store.models())} complete entries, {len(store.incomplete())} incomplete)")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from ensemble_kit.store import LogitStore

    store = LogitStore(args.store)
    info = store.import_predictions(args.name, args.file, test=args.test, id_col=args.id_col, kind=args.kind,
                                    overwrite=args.overwrite)
    print(f"imported {info.name!r} into {store.path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ensemble_kit.store import LogitStore

    out = LogitStore(args.store).export(args.name, args.out, kind=args.kind)
    print(f"wrote {out}")
    return 0


# ---------------------------------------------------------------------- project commands
def _cmd_train(args: argparse.Namespace) -> int:
    from ensemble_kit.project import ProjectConfig, train_project

    cfg = ProjectConfig.from_yaml(args.config, overrides=args.set)
    models = args.models.split(",") if args.models else None
    folds = None if args.fold is None else [args.fold]
    entries = train_project(cfg, models=models, folds=folds, executor=args.executor)
    for name, info in entries.items():
        state = "complete" if info.complete else f"folds {list(info.folds_present)} of {info.n_folds}"
        print(f"{name}: {state}")
    print(f"store: {cfg.store}  (next: ensemble-kit stack {cfg.store})")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from ensemble_kit.project.config import PretrainConfig
    from ensemble_kit.project.pipeline import pretrain_project

    result = pretrain_project(PretrainConfig.from_yaml(args.config, overrides=args.set))
    if result.history:
        first, last = result.history[0], result.history[-1]
        print(f"MAE loss {first['loss']:.4f} (epoch 1) -> {last['loss']:.4f} (epoch {len(result.history)})")
    print(f"encoder: {result.encoder_path}  (fine-tune with pretrained_path: {result.encoder_path})")
    return 0


def _given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options the user gave (flags default to None so the store's settings can fill the rest)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _stack_source(source: Path) -> tuple[Any, Any]:
    """The store and stack settings of ``STORE`` (its saved settings, never their storage) or of a
    project ``CONFIG.yaml`` (yours: its ``stack.storage`` is used)."""
    from ensemble_kit.project.config import project_settings, stored_settings
    from ensemble_kit.store import LogitStore

    if source.is_file():
        store_path, settings, _ = project_settings(source)
        return LogitStore(store_path), settings
    store = LogitStore(source)
    return store, stored_settings(store.path)[0]


def _cmd_stack(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ensemble_kit.project.results import fit_stack, results_table

    store, saved = _stack_source(args.store)
    given = _given(args, "recipe", "metric", "n_trials", "seed", "name", "storage")
    if args.models is not None:
        given["models"] = tuple(args.models.split(","))
    config = replace(saved, **given)
    stack = fit_stack(store, config)
    print(_format(results_table(store, stack)))
    print(f"saved: {stack.path}  (recipe {config.recipe}, metric {config.metric}, {config.n_trials} trials; "
          "the settings used are in its stack.json)")
    reopen = f"ensemble-kit dashboard {args.store}" + ("" if config.storage is None or args.store.is_file()
                                                         else " --storage URL")
    from ensemble_kit.ensemble._claims import masked_url

    storage = masked_url(config.storage) if config.storage is not None else store.workspace.study_storage()
    print(f"Optuna studies: {storage}  (open with: {reopen})")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ensemble_kit.report import write_report
    from ensemble_kit.store import LogitStore

    path = write_report(LogitStore(args.store), stack=args.stack, out_dir=args.out)
    print(f"wrote {path}")
    return 0


def _output_file(path: Path, *, what: str) -> Path:
    """A file a command may write: not a folder, not inside a store (``DestinationError`` otherwise)."""
    from ensemble_kit.store._artifacts import check_output_file

    return check_output_file(path, what=what)


def _write_csv(frame: pd.DataFrame, out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out, index=False)
    except OSError as exc:
        raise DestinationError(f"{str(out)!r} cannot be written ({exc.strerror or exc}).") from exc


def _is_submission_settings(path: Path) -> bool:
    """Whether ``path`` is a settings file an earlier ``submit`` wrote (safe to replace)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and {"stack", "format", "sample_submission"} <= set(document)


def _cmd_submit(args: argparse.Namespace) -> int:
    from dataclasses import asdict, replace

    from ensemble_kit.project.config import stored_settings
    from ensemble_kit.project.results import load_stack
    from ensemble_kit.project.submission import write_submission
    from ensemble_kit.store import LogitStore
    from ensemble_kit.store._files import write_text

    store = LogitStore(args.store)
    out = _output_file(args.out, what="--out")
    settings_file = _output_file(out.with_suffix(".json"), what="the settings file")
    if settings_file.exists() and not _is_submission_settings(settings_file):
        raise DestinationError(f"{str(settings_file)!r} exists and is not the settings file of an earlier `submit`; "
                               "submit writes the settings it used there. Move it, or choose another --out.")
    _, saved, sample = stored_settings(store.path)
    settings = replace(saved, **_given(args, "format", "id_col", "label_col"))
    sample = args.sample_submission or sample
    stack = load_stack(store, args.stack)
    out = write_submission(store, stack, out, format=settings.format, id_col=settings.id_col,
                           label_col=settings.label_col, sample_submission=sample)
    used = {"stack": stack.name, **asdict(settings), "sample_submission": None if sample is None else str(sample)}
    write_text(settings_file, json.dumps(used, indent=2) + "\n")
    print(f"wrote {out} ({len(store.test_ids)} rows, stack {stack.name!r}; settings in {out.with_suffix('.json')})")
    return 0


_PROJECT_KEYS = ("store", "data", "folds", "models", "stack", "submission")
_BUNDLE_MANIFEST = "bundle.json"  # predict.BUNDLE_MANIFEST, named here so arguments are checked before torch loads


def _check_set(overrides: Sequence[str], *, reads: Sequence[str], why: str) -> None:
    """Refuse a ``--set`` the command would not use: an unknown top-level key (with a did-you-mean), or
    a key outside ``reads``. ``submission.*`` keys are validated at once (did-you-mean, values)."""
    import difflib

    from ensemble_kit.project.config import SubmissionConfig, submission_with_overrides

    for assignment in overrides:
        key, sep, _ = assignment.partition("=")
        head = key.strip().split(".")[0]
        if not sep or not head:
            raise ValidationError(f"--set {assignment!r} must look like KEY=VALUE (e.g. submission.format=labels)")
        if head not in _PROJECT_KEYS:
            close = difflib.get_close_matches(head, _PROJECT_KEYS, n=2)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValidationError(f"--set {assignment!r}: unknown key {head!r}.{hint} The keys of a project are "
                                  f"{list(_PROJECT_KEYS)}")
        if head not in reads:
            raise ValidationError(f"--set {assignment!r}: {why}")
    submission_with_overrides(SubmissionConfig(), _submission_overrides(overrides))


def _submission_overrides(overrides: Sequence[str]) -> list[str]:
    return [a for a in overrides if a.partition("=")[0].strip().split(".")[0] == "submission"]


def _is_bundle(source: Path) -> bool:
    return source.is_dir() and (source / _BUNDLE_MANIFEST).is_file()


def _cmd_predict(args: argparse.Namespace) -> int:
    from ensemble_kit.project.config import ProjectConfig, check_image_paths, submission_with_overrides

    source: Path = args.source
    bundle = _is_bundle(source)
    if not bundle and not source.is_file():
        raise ValidationError(f"{str(source)!r} is neither a project YAML nor a bundle folder (one holding "
                              f"{_BUNDLE_MANIFEST}; write one with `ensemble-kit bundle CONFIG OUT`)"
                              if source.is_dir() else f"{str(source)!r} does not exist (a project YAML or a bundle)")
    if bundle:
        _check_set(args.set, reads=("submission",),
                   why="a bundle's models, classes and stack are fixed when it is written: on a bundle, --set "
                       "takes submission.* keys only (the format of --submission); rewrite the bundle for the rest")
    else:
        _check_set(args.set, reads=("store", "submission"),
                   why="predict reads the project's store and submission.* only: its fold models and stack were "
                       "fixed by `train` and `stack` (retrain for models.*, data.*, folds.*; --stack NAME picks "
                       "a saved stack)")
    shaping = _submission_overrides(args.set)
    if shaping and not args.submission:
        raise ValidationError(f"--set {shaping[0]!r}: the submission: settings shape only the --submission file (the "
                              "default output is the prediction table, and a --sample-submission has its own "
                              "layout); add --submission")
    if args.stack is not None and bundle:
        raise ValidationError("--stack picks a saved stack of a project; a bundle holds exactly one")
    check_image_paths(args.images)  # a missing, unreadable or non-image path is named at once, before torch loads
    out = _output_file(args.out or Path("submission.csv" if args.sample_submission is not None or args.submission
                                        else "predictions.csv"), what="--out")
    if args.sample_submission is not None and not args.sample_submission.is_file():
        raise ValidationError(f"--sample-submission {str(args.sample_submission)!r}: no such file")
    config = None if bundle else ProjectConfig.from_yaml(source, overrides=args.set)

    from ensemble_kit.project.predict import Predictor, image_source

    # every file is listed, and every header read, before any model loads: a bad image is named at once
    images = image_source(args.images)
    images.check()
    options = {"device": args.device, "batch_size": args.batch_size, "num_workers": args.num_workers}
    if bundle:
        predictor = Predictor.load(source, **options)
        predictor.submission_config = submission_with_overrides(predictor.submission_config, args.set)
    else:
        predictor = Predictor.from_project(config, stack=args.stack, **options)
    if images.is_labelled and [str(c) for c in images.classes] != [str(c) for c in predictor.classes]:
        images = image_source(args.images, classes=predictor.classes)  # class folders in the models' class order
    if args.sample_submission is not None:
        frame, what = predictor.submission(images, sample_submission=args.sample_submission), \
            f"shaped like {args.sample_submission}"
    elif args.submission:
        frame, what = predictor.submission(images), f"submission format {predictor.submission_config.format!r}"
    else:
        frame, what = predictor.predictions(images), (f"id, label, confidence and {len(predictor.classes)} class "
                                                      "probabilities")
    _write_csv(frame, out)
    print(f"wrote {out} ({len(frame)} rows: {what}; {len(predictor.models)} models x "
          f"{sum(len(m.folds) for m in predictor.models)} fold models)")
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    _check_set(args.set, reads=("store", "submission"),
               why="bundle reads the project's store and submission.* only: the fold models and the stack it "
                   "packs were fixed by `train` and `stack`")
    from ensemble_kit.project.predict import Predictor

    out = Predictor.from_project(args.config, stack=args.stack, overrides=args.set, device="cpu").save_bundle(args.out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB): ensemble-kit predict {out} --images IMAGES --out predictions.csv")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from ensemble_kit.report import launch_dashboard

    store, settings = _stack_source(args.store)
    storage = args.storage or settings.storage

    def ready(url: str) -> None:
        print(f"Serving the Optuna studies of {args.store} at {url} (Ctrl-C to stop)", flush=True)

    launch_dashboard(store, host=args.host, port=args.port, storage=storage, on_ready=ready)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ensemble_kit.cli._demo import expected_duration_line, run_demo

    print(expected_duration_line(args.out, seed=args.seed, n_folds=args.folds, n_trials=args.n_trials,
                                 overrides=args.set), flush=True)
    result = run_demo(args.out, seed=args.seed, n_folds=args.folds, n_trials=args.n_trials, overrides=args.set)
    print(f"\nLeaderboard (honest OOF CV on {len(result.store.train_ids)} digits; test_* on "
          f"{len(result.store.test_ids)} held-out digits):")
    print(_format(result.leaderboard))
    print(f"\nstore:      {result.store.path}")
    print(f"config:     {result.config}   (rerun: ensemble-kit train {result.config})")
    print(f"report:     {result.report}")
    print(f"submission: {result.submission}")
    print(f"dashboard:  ensemble-kit dashboard {result.store.path}")
    print(f"\npredict new images with what was just fitted (every fold model, TTA and the stack):\n"
          f"  ensemble-kit predict {result.config} --images {result.new_images} "
          f"--out {result.config.parent / 'predictions.csv'}")
    return 0


# ---------------------------------------------------------------------- parser
def _choices_help(registry: Any) -> str:
    return "; ".join(f"{name}: {registry.summary(name).rstrip('.')}" for name in registry.names())


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the project config, e.g. --set models.resnet.epochs=3 or "
                        "models.*.img_size=64 (repeatable)")


def _add_predict_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="torch device (default: auto: CUDA, then MPS, then CPU)")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default: 2x the training batch)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding images (default: 0)")


def build_parser() -> argparse.ArgumentParser:
    # registries are light modules: their names and help texts load without scikit-learn or torch
    from ensemble_kit.ensemble._recipes import DEFAULT_RECIPE, RECIPES
    from ensemble_kit.metrics import METRICS
    from ensemble_kit.project.executors import EXECUTORS

    parser = argparse.ArgumentParser(prog="ensemble-kit",
                                     description="Build image-classification ensembles from out-of-fold logits.")
    parser.add_argument("--version", action="version", version=f"ensemble_kit {__version__}")
    # -v/-q work before or after the command: `ensemble-kit -q stack S` and `ensemble-kit stack S -q`
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                           help="log details (DEBUG)")
    verbosity.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                           help="no progress bars or progress lines; warnings only")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (DEBUG)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or progress lines; warnings only")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name: str, **options: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[verbosity], **options)

    p = add_command("init", help="start an image project (a commented project YAML) or a store for your own predictions",
                    description="Two forms. An image project: `init PROJECT.yaml --images DATA` (DATA/train/<class>/, "
                                "DATA/test/, DATA/sample_submission.csv) or `--train DIR [--test DIR] "
                                "[--sample-submission CSV]` writes a validated, commented project YAML ready for "
                                "`ensemble-kit train`. A store for your own predictions (no images, no torch): "
                                "`init STORE --labels CSV`.")
    p.add_argument("target", type=Path, metavar="PROJECT.yaml|STORE",
                   help="project YAML to write (with --images/--train; never overwritten), or store folder to create "
                        "(with --labels)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--images", type=Path, default=None, metavar="DATA",
                      help="image project: a folder holding train/<class>/<image> and optionally test/ and "
                           "sample_submission.csv")
    form.add_argument("--train", type=Path, default=None, metavar="DIR",
                      help="image project: the training images, one folder per class")
    form.add_argument("--labels", type=Path, default=None,
                      help="store form: CSV with one row per training sample: id and label")
    p.add_argument("--test", type=Path, default=None, metavar="DIR",
                   help="image project (with --train): the test images (a flat folder, or one folder per class)")
    p.add_argument("--store", dest="project_store", type=Path, default=None, metavar="STORE",
                   help="image project: the store path written in the YAML (default: runs/<PROJECT>/store)")
    p.add_argument("--id-col", default=None, help="store form: id column of --labels and --test-ids (default: id)")
    p.add_argument("--label-col", default=None, help="store form: label column of --labels (default: label)")
    p.add_argument("--classes", default=None,
                   help="store form: comma-separated classes in column order (default: sorted labels)")
    test = p.add_mutually_exclusive_group()
    test.add_argument("--test-ids", type=Path, default=None, help="store form: CSV whose id column lists the test samples")
    test.add_argument("--sample-submission", type=Path, default=None,
                      help="the competition's sample submission: its first column gives the test ids and the id "
                           "column, its other columns the format (probabilities or one label column); an image "
                           "project checks that it lists the test images")
    folds = p.add_mutually_exclusive_group()
    folds.add_argument("--folds", type=int, default=None, help="number of stratified folds (default: 5)")
    folds.add_argument("--fold-col", default=None,
                       help="store form: column of --labels holding each sample's fold (any integers, e.g. 1..4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stratified folds (default: %(default)s)")
    p.set_defaults(func=_cmd_init)

    p = add_command("ls", help="leaderboard of a store's models (OOF scores) and its latest stack")
    p.add_argument("store", type=Path, help="store folder")
    p.add_argument("--metric", default="log_loss", choices=METRICS.names(), metavar="METRIC",
                   help="metric to sort by (default: %(default)s); one of " + ", ".join(METRICS.names()))
    p.add_argument("--meta", action="store_true", help="also show each entry's metadata columns")
    p.set_defaults(func=_cmd_ls)

    p = add_command("verify", help="re-check every checksum and invariant of a store")
    p.add_argument("store", type=Path, help="store folder")
    p.set_defaults(func=_cmd_verify)

    p = add_command("import-oof", help="import your own OOF/test predictions (CSV or Parquet)")
    p.add_argument("store", type=Path, help="store folder (create one with ensemble-kit init)")
    p.add_argument("name", help="entry name to create")
    p.add_argument("file", type=Path, help="table with an id column and one column per class")
    p.add_argument("--test", type=Path, default=None, help="separate table of test predictions")
    p.add_argument("--id-col", default="id", help="id column of the tables (default: %(default)s)")
    p.add_argument("--kind", choices=["probs", "logits"], default="probs",
                   help="what the class columns hold (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an entry of that name")
    p.set_defaults(func=_cmd_import)

    p = add_command("export", help="write an entry as a CSV/Parquet table")
    p.add_argument("store", type=Path, help="store folder")
    p.add_argument("name", help="entry to export")
    p.add_argument("out", type=Path, help="table to write (.csv or .parquet)")
    p.add_argument("--kind", choices=["probs", "logits"], default="probs",
                   help="write probabilities or log-softmax logits (default: %(default)s)")
    p.set_defaults(func=_cmd_export)

    p = add_command("train", help="train the models of a project config into its store, fold by fold")
    p.add_argument("config", type=Path, help="project YAML (data, folds, models, stack)")
    p.add_argument("--fold", type=int, default=None, help="train only this fold (separate jobs share one store)")
    p.add_argument("--models", default=None, help="comma-separated model names (default: all, teachers first)")
    p.add_argument("--executor", default=None, metavar="SPEC",
                   help="run every (model, fold) as a task on an engine (default: one after another here): "
                        + _choices_help(EXECUTORS) + ". Workers must see the store's folder")
    _add_set(p)
    p.set_defaults(func=_cmd_train)

    p = add_command("pretrain", help="MAE pre-training of a ViT encoder on a project's images (no labels read)")
    p.add_argument("config", type=Path, help="YAML with out (folder), mae (MAE settings) and data (a project's data "
                                             "section); images: train or train+test (default)")
    _add_set(p)
    p.set_defaults(func=_cmd_pretrain)

    p = add_command("stack", help="fit a stacking recipe on a store's OOF logits; save it; print the honest report")
    p.add_argument("store", type=Path, metavar="STORE|CONFIG",
                   help="store folder (its saved settings), or a project YAML (its store and stack: section)")
    p.add_argument("--recipe", default=None, choices=RECIPES.names(), metavar="RECIPE",
                   help=f"stacking recipe (default: the project's stack.recipe, else {DEFAULT_RECIPE}): "
                        + _choices_help(RECIPES))
    p.add_argument("--models", default=None, help="comma-separated entries (default: the project's, else all complete)")
    p.add_argument("--metric", default=None, choices=METRICS.names(), metavar="METRIC",
                   help="what tuning optimises and the report is sorted by (default: the project's stack.metric, "
                        "else log_loss): " + _choices_help(METRICS))
    p.add_argument("--n-trials", type=int, default=None,
                   help="Optuna trials per tuning run (default: the project's stack.n_trials, else 200)")
    p.add_argument("--seed", type=int, default=None, help="seed of every tuning run (default: the project's, else 0)")
    p.add_argument("--name", default=None, help="name of the saved stack (default: the project's stack.name, else "
                                                "the recipe)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage of the studies, e.g. postgresql://user:${PGPASSWORD}@host/db ($VARS are "
                        "expanded; default: a project YAML's stack.storage, else STORE/optuna.db). Processes "
                        "stacking one store on one database split the studies")
    p.set_defaults(func=_cmd_stack)

    p = add_command("report", help="write a self-contained HTML report (plus PNGs) of a store and its stack")
    p.add_argument("store", type=Path, help="store folder")
    p.add_argument("--stack", default=None, help="saved stack to report (default: the latest)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: STORE/report)")
    p.set_defaults(func=_cmd_report)

    p = add_command("submit", help="write the competition submission of a saved stack")
    p.add_argument("store", type=Path, help="store folder")
    p.add_argument("--out", type=Path, default=Path("submission.csv"), help="CSV to write (default: %(default)s)")
    p.add_argument("--stack", default=None, help="saved stack (default: the latest)")
    p.add_argument("--sample-submission", type=Path, default=None,
                   help="shape rows, id column and columns like this CSV (default: the one `init` kept, if any)")
    p.add_argument("--format", default=None, choices=["auto", "labels", "probs"],
                   help="labels (id + class) or per-class probabilities; auto: probs for log-loss stacks "
                        "(default: the project's submission.format)")
    p.add_argument("--id-col", default=None, help="id column name (default: the project's submission.id_col, else id)")
    p.add_argument("--label-col", default=None,
                   help="label column name (default: the project's submission.label_col, else label)")
    p.set_defaults(func=_cmd_submit)

    p = add_command("predict", help="predict new images with every fold model, TTA and the saved stack")
    p.add_argument("source", type=Path, metavar="CONFIG|BUNDLE",
                   help="project YAML (its store's models and stack) or a bundle folder")
    p.add_argument("--images", type=Path, nargs="+", required=True, metavar="PATH",
                   help="one or more image files, or one folder of images (flat, or one folder per class), or one "
                        "CSV with a 'path' or 'id' column; checked before any model loads")
    p.add_argument("--stack", default=None, help="saved stack of the project (default: the latest)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--sample-submission", type=Path, default=None,
                       help="write the competition file shaped like this CSV: its rows, id column and columns "
                            "(probabilities or one label column)")
    shape.add_argument("--submission", action="store_true",
                       help="write the competition file of the project's (or bundle's) submission: section instead "
                            "of the prediction table")
    p.add_argument("--out", type=Path, default=None,
                   help="CSV to write (default: predictions.csv: id, label, confidence and one probability column "
                        "per class; submission.csv with --sample-submission or --submission)")
    _add_predict_options(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the project's store or submission.* (used by --submission); on a bundle, "
                        "submission.* only; any other key is refused (repeatable)")
    p.set_defaults(func=_cmd_predict)

    p = add_command("bundle", help="write one folder with everything inference needs (no store, no network)")
    p.add_argument("config", type=Path, help="project YAML of a trained and stacked project")
    p.add_argument("out", type=Path, help="bundle folder to write")
    p.add_argument("--stack", default=None, help="saved stack (default: the latest)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the project's store or submission.* (the format the bundle carries); any other "
                        "key is refused (repeatable)")
    p.set_defaults(func=_cmd_bundle)

    p = add_command("dashboard", help="open the store's Optuna studies in optuna-dashboard")
    p.add_argument("store", type=Path, metavar="STORE|CONFIG", help="store folder, or a project YAML")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage to open (default: a project YAML's stack.storage, else STORE/optuna.db)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default: %(default)s)")
    p.set_defaults(func=_cmd_dashboard)

    p = add_command("demo", help="train 3 timm backbones x 5 folds on embedded digits, stack, report (no network)")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output directory (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds, training and tuning (default: %(default)s)")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default: %(default)s)")
    p.add_argument("--n-trials", type=int, default=60, help="Optuna trials per tuning run (default: %(default)s)")
    _add_set(p)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose else logging.INFO)
    # other libraries stay at warnings; ensemble_kit's progress lines show unless -q
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("ensemble_kit").setLevel(level)
    from contextlib import nullcontext

    from ensemble_kit._progress import bars_off

    # -q holds for this command only: main() called from Python (a notebook, a test) leaves bars as they were
    with bars_off() if args.quiet else nullcontext():
        try:
            return args.func(args)
        except EnsembleKitError as exc:
            print(f"ensemble-kit {args.command}: error: {_cli_wording(str(exc))}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C: what was stored stays stored; no traceback
            print(f"ensemble-kit {args.command}: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
