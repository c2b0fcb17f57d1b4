"""AOI defect classification end to end: teachers -> pseudo-labels -> student -> soft vote + class-2 rule
(-> optionally one distilled model with the same rule).

    python examples/aoi/run.py                      # data in data/aoi (see README.md)
    python examples/aoi/run.py --set data.root=/data/aoi --set models.*.epochs=5
    python examples/aoi/run.py --distill            # also the single deployable model

Steps: train the three teachers (5 folds x 5 TTA views each) into the store; pseudo-label the
test images the teachers agree on (mean probability >= 0.95) and train the student on
labelled + pseudo-labelled images (pseudo-labelled images never enter a validation fold);
fit the "aoi" stack (Optuna-weighted soft vote, then "class 2 whenever p > 0.4"); write the
report and submission.csv (ID,Label). With ``--distill``: train ``deploy``, one model distilled
from the four (fold k from their fold-k models only, the test images as extra unlabelled data),
and fit the same soft vote + class-2 rule on it alone (stack ``aoi_deploy``,
``submission_deploy.csv``): one model's inference cost instead of the ensemble's.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from ensemble_kit import LogitStore
from ensemble_kit.project import ProjectConfig, fit_stack, results_table, train_project, write_submission
from ensemble_kit.report import write_report

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=HERE / "config.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--out", type=Path, default=None, help="submission CSV (default: next to the store)")
    parser.add_argument("--distill", action="store_true", help="also distil the ensemble into the deploy model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    cfg = ProjectConfig.from_yaml(args.config, overrides=args.set)
    teachers = list(cfg.model("student").pseudo_label.teachers)
    train_project(cfg, models=teachers)            # step 1: teachers, all folds
    train_project(cfg, models=["student"])         # step 2: pseudo-labels + student
    store = LogitStore(cfg.store)
    pseudo = store.entry("student").meta.get("n_extra_train")  # pseudo-labelled images per fold
    stack = fit_stack(store, cfg.stack)            # step 3: weighted soft vote + class-2 rule
    report = write_report(store, stack=stack.name)
    out = args.out or Path(cfg.store).parent / "submission.csv"
    write_submission(store, stack, out, format=cfg.submission.format, id_col=cfg.submission.id_col,
                     label_col=cfg.submission.label_col)

    print(results_table(store, stack).to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep=""))
    weights = next(s for s in stack.summary.stages if s.name == "soft_vote").model_weights
    print("soft-vote weights:", ", ".join(f"{k}={v:.2f}" for k, v in weights.items()))
    print(f"class {store.classes[2]!r} predicted for {int(np.sum(stack.test_labels == 2))} of "
          f"{len(stack.test_labels)} test images (rule p > 0.4)")
    if pseudo is not None:
        print(f"student trained with {pseudo} pseudo-labelled test images")
    print(f"report: {report}\nsubmission: {out}")
    if args.distill:                               # step 4: one model, the same rule
        train_project(cfg, models=["deploy"])
        single = fit_stack(store, replace(cfg.stack, models=("deploy",), name="aoi_deploy"))
        deploy_out = out.with_name("submission_deploy.csv")
        write_submission(store, single, deploy_out, format=cfg.submission.format, id_col=cfg.submission.id_col,
                         label_col=cfg.submission.label_col)
        print(results_table(store, single).to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep=""))
        print(f"distilled single model: {deploy_out}")


if __name__ == "__main__":
    main()
