"""``ensemble-kit``: the command-line edge of the library. Only this module prints results."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ensemble_kit._version import __version__
from ensemble_kit.errors import EnsembleKitError

logger = logging.getLogger("ensemble_kit")


def _cmd_ls(args: argparse.Namespace) -> int:
    from ensemble_kit import LogitStore

    store = LogitStore.open(args.store)
    print(store)
    board = store.leaderboard(metric=args.metric)
    with pd.option_context("display.max_columns", 20, "display.width", 160):
        print(board.to_string(index=False, float_format=lambda v: f"{v:.5f}") if len(board) else "(no complete entries)")
    for name, missing in store.incomplete().items():
        print(f"incomplete: {name} (missing folds {list(missing)})")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from ensemble_kit import LogitStore

    store = LogitStore.open(args.store)
    store.verify()
    print(f"OK: {store.path} ({len(store.models())} complete entries, {len(store.incomplete())} incomplete)")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from ensemble_kit import LogitStore

    store = LogitStore.open(args.store)
    info = store.import_predictions(args.name, args.file, test=args.test, id_col=args.id_col,
                                    kind=args.kind, overwrite=args.overwrite)
    print(f"imported {info.name!r} into {store.path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ensemble_kit import LogitStore

    out = LogitStore.open(args.store).export(args.name, args.out, kind=args.kind)
    print(f"wrote {out}")
    return 0


def _cmd_stack(args: argparse.Namespace) -> int:
    from ensemble_kit import LogitStore, Stacker

    store = LogitStore.open(args.store)
    models = args.models.split(",") if args.models else None
    stacker = Stacker.from_store(store, models=models, recipe=args.recipe, metric=args.metric,
                                 n_trials=args.n_trials, seed=args.seed)
    with pd.option_context("display.max_columns", 20, "display.width", 160):
        print(stacker.report_.to_string(index=False, float_format=lambda v: f"{v:.5f}"))
    print(f"Optuna studies: {stacker.storage_}  (open with: ensemble-kit dashboard {store.path})")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from ensemble_kit.report import launch_dashboard, study_storage

    print(f"Serving {study_storage(args.store)} at http://{args.host}:{args.port} (Ctrl-C to stop)")
    launch_dashboard(args.store, host=args.host, port=args.port)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ensemble_kit.cli._demo import run_demo

    result = run_demo(args.out, seed=args.seed)
    print(f"\nStore: {result.store.path}")
    with pd.option_context("display.max_columns", 20, "display.width", 160):
        print(result.leaderboard.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for line in result.next_steps:
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ensemble-kit",
        description="Build image-classification ensembles from out-of-fold logits.",
    )
    parser.add_argument("--version", action="version", version=f"ensemble_kit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ls", help="leaderboard of a store's models (OOF scores)")
    p.add_argument("store", type=Path)
    p.add_argument("--metric", default="log_loss", help="metric to sort by (default: log_loss)")
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

    p = sub.add_parser("stack", help="fit a stacking recipe on a store's OOF logits; print the honest report")
    p.add_argument("store", type=Path)
    p.add_argument("--recipe", default="yandex", choices=["yandex", "aoi", "hill_climb", "logloss"])
    p.add_argument("--models", default=None, help="comma-separated entries (default: all complete)")
    p.add_argument("--metric", default="log_loss", choices=["log_loss", "accuracy", "f1_macro"])
    p.add_argument("--n-trials", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_stack)

    p = sub.add_parser("dashboard", help="open the store's Optuna studies in optuna-dashboard")
    p.add_argument("store", type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=_cmd_dashboard)

    p = sub.add_parser("demo", help="run the pipeline end to end on embedded data (no network)")
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="output directory (default: demo-output)")
    p.add_argument("--seed", type=int, default=0)
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
