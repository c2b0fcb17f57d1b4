"""``ensemble-kit``: the command-line edge of the library. Only this module prints results."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ensemble_kit._version import __version__
from ensemble_kit.errors import EnsembleKitError

logger = logging.getLogger("ensemble_kit")


def _cmd_ls(args: argparse.Namespace) -> int:
    from ensemble_kit.store import LogitStore

    from ensemble_kit.project import list_stacks, load_stack, results_table

    store = LogitStore(args.store)
    print(store)
    board = store.leaderboard(metric=args.metric)
    with pd.option_context("display.max_columns", 20, "display.width", 160):
        print(board.to_string(index=False, float_format=lambda v: f"{v:.5f}") if len(board) else "(no complete entries)")
        stacks = list_stacks(store)
        if stacks and len(board):
            stack = load_stack(store, stacks[-1])
            print(f"\nstack {stack.name!r} (recipe {stack.summary['recipe']}, metric {stack.metric}); honest OOF CV:")
            print(_format(results_table(store, stack)))
    for name, missing in store.incomplete().items():
        print(f"incomplete: {name} (missing folds {list(missing)})")
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
    info = store.import_predictions(args.name, args.file, test=args.test, id_col=args.id_col,
                                    kind=args.kind, overwrite=args.overwrite)
    print(f"imported {info.name!r} into {store.path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ensemble_kit.store import LogitStore

    out = LogitStore(args.store).export(args.name, args.out, kind=args.kind)
    print(f"wrote {out}")
    return 0


def _format(table: pd.DataFrame) -> str:
    with pd.option_context("display.max_columns", 30, "display.width", 200):
        return table.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="")


def _cmd_train(args: argparse.Namespace) -> int:
    from ensemble_kit.project import ProjectConfig, train_project

    cfg = ProjectConfig.from_yaml(args.config, overrides=args.set)
    models = args.models.split(",") if args.models else None
    folds = None if args.fold is None else [args.fold]
    entries = train_project(cfg, models=models, folds=folds)
    for name, info in entries.items():
        state = "complete" if info.complete else f"folds {list(info.folds_present)} of {info.n_folds}"
        print(f"{name}: {state}")
    print(f"store: {cfg.store}  (next: ensemble-kit stack {cfg.store})")
    return 0


def _cmd_stack(args: argparse.Namespace) -> int:
    from ensemble_kit.store import LogitStore
    from ensemble_kit.project import StackConfig, fit_stack, results_table

    store = LogitStore(args.store)
    config = StackConfig(recipe=args.recipe, metric=args.metric, n_trials=args.n_trials, seed=args.seed,
                         models=tuple(args.models.split(",")) if args.models else None, name=args.name)
    stack = fit_stack(store, config)
    print(_format(results_table(store, stack)))
    print(f"saved: {stack.path}")
    print(f"Optuna studies: {stack.summary['optuna_storage']}  (open with: ensemble-kit dashboard {store.path})")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ensemble_kit.store import LogitStore
    from ensemble_kit.report import write_report

    path = write_report(LogitStore(args.store), stack=args.stack, out_dir=args.out)
    print(f"wrote {path}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from ensemble_kit.store import LogitStore
    from ensemble_kit.project import load_stack, write_submission

    store = LogitStore(args.store)
    stack = load_stack(store, args.stack)
    out = write_submission(store, stack, args.out, format=args.format, id_col=args.id_col, label_col=args.label_col)
    print(f"wrote {out} ({len(store.test_ids)} rows, stack {stack.name!r})")
    return 0


def _predictor(source: Path, args: argparse.Namespace) -> object:
    """A bundle folder, or a project config (its store's fold models and saved stack)."""
    from ensemble_kit.project.predict import BUNDLE_MANIFEST, Predictor

    options = {"device": args.device, "batch_size": args.batch_size, "num_workers": args.num_workers}
    if source.is_dir() and (source / BUNDLE_MANIFEST).exists():
        return Predictor.load(source, **options)
    return Predictor.from_project(source, stack=args.stack, overrides=args.set, **options)


def _cmd_predict(args: argparse.Namespace) -> int:
    from ensemble_kit.project.predict import image_source

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
    from ensemble_kit.store import LogitStore

    print(f"Serving {LogitStore(args.store).workspace.study_storage()} at http://{args.host}:{args.port} "
          "(Ctrl-C to stop)")
    launch_dashboard(args.store, host=args.host, port=args.port)
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
          f"  ensemble-kit predict {result.config} --images {result.new_images} --out {result.config.parent / 'predictions.csv'}")
    return 0


def _choices_help(registry: Any) -> str:
    return "; ".join(f"{name}: {registry.summary(name).rstrip('.')}" for name in registry.names())


def build_parser() -> argparse.ArgumentParser:
    from ensemble_kit.ensemble import RECIPES, list_recipes
    from ensemble_kit.ensemble._recipes import DEFAULT_RECIPE
    from ensemble_kit.metrics import METRICS, list_metrics

    parser = argparse.ArgumentParser(
        prog="ensemble-kit",
        description="Build image-classification ensembles from out-of-fold logits.",
    )
    parser.add_argument("--version", action="version", version=f"ensemble_kit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ls", help="leaderboard of a store's models (OOF scores)")
    p.add_argument("store", type=Path)
    p.add_argument("--metric", default="log_loss", choices=list_metrics(), metavar="METRIC",
                   help="metric to sort by (default: %(default)s); one of " + ", ".join(list_metrics()))
    p.set_defaults(func=_cmd_ls)

    p = sub.add_parser("verify", help="re-check every checksum and invariant of a store")
    p.add_argument("store", type=Path)
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("import-oof", help="import your own OOF/test predictions (CSV or Parquet)")
    p.add_argument("store", type=Path)
    p.add_argument("name", help="entry name to create")
    p.add_argument("file", type=Path, help="table with an id column and one column per class")
    p.add_argument("--test", type=Path, default=None, help="separate table of test predictions")
    p.add_argument("--id-col", default="id")
    p.add_argument("--kind", choices=["probs", "logits"], default="probs")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("export", help="write an entry as a CSV/Parquet table")
    p.add_argument("store", type=Path)
    p.add_argument("name")
    p.add_argument("out", type=Path)
    p.add_argument("--kind", choices=["probs", "logits"], default="probs")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("train", help="train the models of a project config into its store, fold by fold")
    p.add_argument("config", type=Path, help="project YAML (data, folds, models, stack)")
    p.add_argument("--fold", type=int, default=None, help="train only this fold (separate jobs share one store)")
    p.add_argument("--models", default=None, help="comma-separated model names (default: all, teachers first)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set models.resnet.epochs=3 or models.*.img_size=64")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("stack", help="fit a stacking recipe on a store's OOF logits; save it; print the honest report")
    p.add_argument("store", type=Path)
    p.add_argument("--recipe", default=DEFAULT_RECIPE, choices=list_recipes(), metavar="RECIPE",
                   help="stacking recipe (default: %(default)s): " + _choices_help(RECIPES))
    p.add_argument("--models", default=None, help="comma-separated entries (default: all complete)")
    p.add_argument("--metric", default="log_loss", choices=list_metrics(), metavar="METRIC",
                   help="what tuning optimises and the report is sorted by (default: %(default)s): "
                        + _choices_help(METRICS))
    p.add_argument("--n-trials", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="name of the saved stack (default: the recipe)")
    p.set_defaults(func=_cmd_stack)

    p = sub.add_parser("report", help="write a self-contained HTML report (plus PNGs) of a store and its stack")
    p.add_argument("store", type=Path)
    p.add_argument("--stack", default=None, help="saved stack to report (default: the latest)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: STORE/report)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("submit", help="write the competition submission of a saved stack")
    p.add_argument("store", type=Path)
    p.add_argument("--out", type=Path, required=True, help="CSV to write")
    p.add_argument("--stack", default=None, help="saved stack (default: the latest)")
    p.add_argument("--format", default="auto", choices=["auto", "labels", "probs"],
                   help="labels (id + label) or per-class probabilities; auto: probs for log-loss stacks")
    p.add_argument("--id-col", default="id")
    p.add_argument("--label-col", default="label")
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("predict", help="predict new images with every fold model, TTA and the saved stack")
    p.add_argument("source", type=Path, help="project YAML (its store's models and stack) or a bundle folder")
    p.add_argument("--images", type=Path, required=True,
                   help="a folder of images (flat, or one folder per class) or a CSV with a 'path' or 'id' column")
    p.add_argument("--stack", default=None, help="saved stack of the project (default: the latest)")
    p.add_argument("--sample-submission", type=Path, default=None,
                   help="align rows, id column and columns (probabilities or one label column) to this CSV")
    p.add_argument("--out", type=Path, default=Path("submission.csv"), help="CSV to write (default: %(default)s)")
    p.add_argument("--device", default="auto", help="torch device (default: auto: CUDA, then MPS, then CPU)")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default: 2x the training batch)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding images (default: 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the project config (as for train)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("bundle", help="write one folder with everything inference needs (no store, no network)")
    p.add_argument("config", type=Path, help="project YAML of a trained and stacked project")
    p.add_argument("out", type=Path, help="bundle folder to write")
    p.add_argument("--stack", default=None, help="saved stack (default: the latest)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the project config (as for train)")
    p.set_defaults(func=_cmd_bundle)

    p = sub.add_parser("dashboard", help="open the store's Optuna studies in optuna-dashboard")
    p.add_argument("store", type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=_cmd_dashboard)

    p = sub.add_parser("demo", help="train 3 timm backbones x 5 folds on embedded digits, stack, report (no network)")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output directory (default: demo-output)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--n-trials", type=int, default=60, help="Optuna trials per tuning run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the demo config, e.g. --set models.*.epochs=1")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except EnsembleKitError as exc:
        print(f"ensemble-kit {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
