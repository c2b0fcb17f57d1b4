"""Yandex ML-intensive recipe: six from-scratch models, Optuna soft vote + CatBoost + LightGBM, 0.4/0.3/0.3.

    python examples/yandex/run.py                     # data in data/yandex (see README.md)
    python examples/yandex/run.py --models miniconvnext,enet_v2_m --set models.*.epochs=50

Trains the six models fold by fold (TTA: identity + horizontal flip), fits the "yandex" stack
for macro F1 (stages: Optuna-weighted soft vote with per-model temperature, CatBoost and
LightGBM on the OOF log-probabilities; blend 0.4 CatBoost + 0.3 LightGBM + 0.3 soft vote;
then per-class decision offsets tuned for macro F1, nested on the folds), and writes the
report and submission.csv (image_id,label).
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
                           id_col=cfg.submission.id_col, label_col=cfg.submission.label_col)
    print(results_table(store, stack).to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep=""))
    summary = stack.summary
    print("blend:", summary.blend_weights)
    print("soft-vote weights:", next(s for s in summary.stages if s.name == "soft_vote").model_weights)
    print(f"report: {report}\nsubmission: {out}")


if __name__ == "__main__":
    main()
