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
from ensemble_kit.errors import EnsembleKitError, ValidationError

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
    import numpy as np

    from ensemble_kit.project.config import SubmissionConfig, write_store_defaults
    from ensemble_kit.store import LogitStore
    from ensemble_kit.store._tables import load_table

    labels = load_table(args.labels, what="--labels", id_col=args.id_col)
    missing = [c for c in (args.id_col, args.label_col, args.fold_col) if c is not None and c not in labels.columns]
    if missing:
        raise ValidationError(f"--labels {args.labels}: no column(s) {missing}; columns are {list(labels.columns)[:20]}. "
                     "Name them with --id-col / --label-col / --fold-col.")
    y = labels[args.label_col].to_numpy()
    classes = args.classes.split(",") if args.classes else sorted(set(y.tolist()), key=lambda c: (str(type(c)), c))
    test_ids, submission = None, SubmissionConfig(id_col=args.id_col)
    if args.test_ids is not None:
        test_ids = load_table(args.test_ids, what="--test-ids", id_col=args.id_col)[args.id_col].astype(str).to_numpy()
    elif args.sample_submission is not None:
        sample = load_table(args.sample_submission, what="--sample-submission", id_col=None)
        sample = load_table(args.sample_submission, what="--sample-submission", id_col=str(sample.columns[0]))
        test_ids = sample.iloc[:, 0].astype(str).to_numpy()
        submission = SubmissionConfig(id_col=str(sample.columns[0]))
    folds = None if args.fold_col is None else labels[args.fold_col].to_numpy()
    store = LogitStore.create(args.store, labels[args.id_col].astype(str).to_numpy(), y, classes,
                              n_folds=args.folds, seed=args.seed, folds=folds, test_ids=test_ids)
    write_store_defaults(store.path, submission, sample_submission=args.sample_submission)
    mapping = "" if store.fold_labels == list(range(store.n_folds)) else \
        f" (fold labels {store.fold_labels} -> 0..{store.n_folds - 1})"
    print(f"created {store.path}: {len(store.train_ids)} training ids, {len(classes)} classes, {store.n_folds} folds"
          f"{mapping}, {0 if store.test_ids is None else len(store.test_ids)} test ids")
    print(f"next: ensemble-kit import-oof {store.path} NAME oof.csv --test test.csv")
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


def _cmd_submit(args: argparse.Namespace) -> int:
    from dataclasses import asdict, replace

    from ensemble_kit.project.config import stored_settings
    from ensemble_kit.project.results import load_stack
    from ensemble_kit.project.submission import write_submission
    from ensemble_kit.store import LogitStore

    store = LogitStore(args.store)
    _, saved, sample = stored_settings(store.path)
    settings = replace(saved, **_given(args, "format", "id_col", "label_col"))
    sample = args.sample_submission or sample
    stack = load_stack(store, args.stack)
    out = write_submission(store, stack, args.out, format=settings.format, id_col=settings.id_col,
                           label_col=settings.label_col, sample_submission=sample)
    used = {"stack": stack.name, **asdict(settings), "sample_submission": None if sample is None else str(sample)}
    out.with_suffix(".json").write_text(json.dumps(used, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out} ({len(store.test_ids)} rows, stack {stack.name!r}; settings in {out.with_suffix('.json')})")
    return 0


def _predictor(source: Path, args: argparse.Namespace) -> Any:
    """A bundle folder, or a project config (its store's fold models and saved stack)."""
    from ensemble_kit.project.predict import BUNDLE_MANIFEST, Predictor

    options = {"device": args.device, "batch_size": args.batch_size, "num_workers": args.num_workers}
    if source.is_dir() and (source / BUNDLE_MANIFEST).exists():
        return Predictor.load(source, **options)
    return Predictor.from_project(source, stack=args.stack, overrides=args.set, **options)


def _cmd_predict(args: argparse.Namespace) -> int:
    from ensemble_kit.project.predict import image_source

    image_source(args.images)  # a missing folder or a FIFO among the images is named before any model loads
    predictor = _predictor(args.source, args)
    images = image_source(args.images, classes=predictor.classes)
    frame = predictor.submission(images, sample_submission=args.sample_submission)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    print(f"wrote {args.out} ({len(frame)} rows; {len(predictor.models)} models x "
          f"{sum(len(m.folds) for m in predictor.models)} fold models)")
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    from ensemble_kit.project.predict import Predictor

    out = Predictor.from_project(args.config, stack=args.stack, overrides=args.set, device="cpu").save_bundle(args.out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB): ensemble-kit predict {out} --images IMAGES --out submission.csv")
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
    from ensemble_kit.cli._demo import run_demo

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

    p = add_command("init", help="start a store for your own predictions from a labels CSV")
    p.add_argument("store", type=Path, help="store folder to create")
    p.add_argument("--labels", type=Path, required=True, help="CSV with one row per training sample: id and label")
    p.add_argument("--id-col", default="id", help="id column of --labels and --test-ids (default: %(default)s)")
    p.add_argument("--label-col", default="label", help="label column of --labels (default: %(default)s)")
    p.add_argument("--classes", default=None, help="comma-separated classes in column order (default: sorted labels)")
    test = p.add_mutually_exclusive_group()
    test.add_argument("--test-ids", type=Path, default=None, help="CSV whose id column lists the test samples")
    test.add_argument("--sample-submission", type=Path, default=None,
                      help="the competition's sample submission: its first column gives the test ids, and `submit` "
                           "shapes the submission like it")
    folds = p.add_mutually_exclusive_group()
    folds.add_argument("--folds", type=int, default=None, help="number of stratified folds to make (default: 5)")
    folds.add_argument("--fold-col", default=None,
                       help="column of --labels holding each sample's fold (any integers, e.g. 1..4)")
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
    p.add_argument("source", type=Path, help="project YAML (its store's models and stack) or a bundle folder")
    p.add_argument("--images", type=Path, required=True,
                   help="a folder of images (flat, or one folder per class) or a CSV with a 'path' or 'id' column")
    p.add_argument("--stack", default=None, help="saved stack of the project (default: the latest)")
    p.add_argument("--sample-submission", type=Path, default=None,
                   help="align rows, id column and columns (probabilities or one label column) to this CSV")
    p.add_argument("--out", type=Path, default=Path("submission.csv"), help="CSV to write (default: %(default)s)")
    _add_predict_options(p)
    _add_set(p)
    p.set_defaults(func=_cmd_predict)

    p = add_command("bundle", help="write one folder with everything inference needs (no store, no network)")
    p.add_argument("config", type=Path, help="project YAML of a trained and stacked project")
    p.add_argument("out", type=Path, help="bundle folder to write")
    p.add_argument("--stack", default=None, help="saved stack (default: the latest)")
    _add_set(p)
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
    if args.quiet:
        from ensemble_kit._progress import quiet

        quiet(True)
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
