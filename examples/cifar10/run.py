"""CIFAR-10 from scratch: ResNet + ViT backbones, torchvision recipe, 5-fold OOF logits, default stack.

    python examples/cifar10/run.py                                   # ImageFolder JPEGs in data/cifar10
    python examples/cifar10/run.py --set data.format=cifar10_batches --set data.root=/data/cifar
    python examples/cifar10/run.py --fold 3                          # one fold (one machine of several)

Every model is trained fold by fold into the store (a killed run resumes from its last
checkpoint), the default "full" stack is fitted on the OOF logits, and the report and a submission
are written. The CIFAR-10 test labels are known, so the leaderboard also shows held-out test
scores (they are never used for fitting).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ensemble_kit import LogitStore
from ensemble_kit.project import ProjectConfig, fit_stack, results_table, train_project, write_submission
from ensemble_kit.report import write_report

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=HERE / "config.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--fold", type=int, default=None, help="train only this fold, then stop (no stacking)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    cfg = ProjectConfig.from_yaml(args.config, overrides=args.set)
    train_project(cfg, folds=None if args.fold is None else [args.fold])
    store = LogitStore(cfg.store)
    if store.incomplete():
        print(f"trained fold {args.fold}; still missing: {store.incomplete()}")
        return
    stack = fit_stack(store, cfg.stack)
    report = write_report(store, stack=stack.name)
    out = write_submission(store, stack, Path(cfg.store).parent / "submission.csv", format=cfg.submission.format,
                           id_col=cfg.submission.id_col, label_col=cfg.submission.label_col)
    print(results_table(store, stack).to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep=""))
    if stack.info is not None and stack.info.held_out_test is not None:
        test = stack.info.held_out_test
        print(f"held-out test: accuracy {test['accuracy']:.4f}, log loss {test['log_loss']:.4f}")
    print(f"report: {report}\nsubmission: {out}")


if __name__ == "__main__":
    main()
