"""Time to answer ``ensemble-kit --help`` and each command's ``--help`` (target: under 0.5 s).

Each is a fresh process (``python -m ensemble_kit.cli.main``), run ``--repeats`` times; the
median is printed next to the time of a bare ``python -c pass`` measured in the same run.

    python benchmarks/cli_startup.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _time(command: list[str], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "ensemble_kit.cli.main"]
    baseline = _time([sys.executable, "-c", "pass"], args.repeats)
    print(f"{'command':<28}{'seconds':>9}{'target':>9}  status   (bare python: {baseline:.3f} s)")
    for command in ([], ["init"], ["ls"], ["stack"], ["submit"], ["train"], ["predict"], ["bundle"], ["report"]):
        seconds = _time([*cli, *command, "--help"], args.repeats)
        label = "ensemble-kit " + " ".join([*command, "--help"])
        print(f"{label:<28}{seconds:>9.3f}{'< 0.5':>9}  {'OK' if seconds < 0.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
