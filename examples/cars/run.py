"""396-class car models, log loss: backbones at several resolutions, 5-view TTA, temperature-scaled stack.

    python examples/cars/run.py                       # data in data/cars (see README.md)
    python examples/cars/run.py --models convnext_base,resnet152d --set models.*.epochs=10

Training is resumable: kill it at any point and run the same command again; finished folds
are skipped and an interrupted fold continues from its last epoch checkpoint (bit-identical to
an uninterrupted run). The stack is the default "full" recipe: class-wise logistic / CatBoost /
LightGBM meta-learners (``layout="auto"`` picks class-wise above 20 classes) and the Optuna soft
vote, each tempered, under tuned blend weights, then a final temperature where it lowers the
nested log loss; the submission holds one
probability column per class, as the competition's sample_submission.csv.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from ensemble_kit import LogitStore
from ensemble_kit.project import ProjectConfig, fit_stack, results_table, train_project, write_submission
from ensemble_kit.report import write_report

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=HERE / "config.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--models", default=None, help="comma-separated subset of the config's models")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    cfg = ProjectConfig.from_yaml(args.config, overrides=args.set)
    models = args.models.split(",") if args.models else None
    train_project(cfg, models=models)
    store = LogitStore(cfg.store)
    stack = fit_stack(store, cfg.stack if models is None else replace(cfg.stack, models=tuple(models)))
    report = write_report(store, stack=stack.name)
    out = write_submission(store, stack, Path(cfg.store).parent / "submission.csv", format=cfg.submission.format,
                           id_col=cfg.submission.id_col)
    print(results_table(store, stack).to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep=""))
    kept = stack.summary.temperature or "not kept (it did not lower nested log loss)"
    print(f"final temperature: {kept}")
    print(f"report: {report}\nsubmission: {out} ({store.n_classes} probability columns)")


if __name__ == "__main__":
    main()
