"""Wall time of ``ensemble-kit demo`` phase by phase (target: under 5 minutes on a 2-core CPU).

Runs exactly the demo's steps — 3 timm backbones x 5 folds on the embedded digits, the
default ("full") stack for macro F1, report, submission — and prints the time of each phase, the total,
and the peak RSS.

    python benchmarks/demo_time.py [--out /tmp/demo-bench]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

from ensemble_kit import LogitStore
from ensemble_kit.cli._demo import demo_config
from ensemble_kit.project import fit_stack, results_table, train_project, write_submission
from ensemble_kit.report import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/demo-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    cfg = demo_config(args.out)
    phases = {}
    start = time.perf_counter()
    train_project(cfg)
    phases["train 3 backbones x 5 folds"] = time.perf_counter() - start
    store = LogitStore(cfg.store)
    t0 = time.perf_counter()
    stack = fit_stack(store, cfg.stack)
    phases["full stack (nested, f1_macro)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_report(store, stack=stack.name)
    phases["report"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_submission(store, stack, args.out / "submission.csv", format="labels")
    phases["submission"] = time.perf_counter() - t0
    total = time.perf_counter() - start
    print(results_table(store, stack).to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep=""))
    print("\n| phase | seconds |\n| --- | --- |")
    for name, seconds in phases.items():
        print(f"| {name} | {seconds:.1f} |")
    print(f"| **total** | **{total:.1f}** ({total / 300:.2f} of the 5-minute target) |")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"peak RSS: {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
