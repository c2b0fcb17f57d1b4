"""Bundle size and cold-start time of the demo's three models (3 timm backbones x 5 folds + stack).

Runs the demo (or reuses ``--demo-dir`` from an earlier run), writes its bundle, and in a fresh
Python process times: importing ensemble_kit's predictor, ``Predictor.load(bundle)``, and the
first batch of 64 new images (decode, 15 fold models, stack). Prints the bundle's size by part.

    python benchmarks/bundle_cold_start.py                         # runs the demo first (~3 min)
    python benchmarks/bundle_cold_start.py --demo-dir demo-output  # reuse a finished demo
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

COLD = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    from ensemble_kit.data.sources import ImagePathSource
    from ensemble_kit.project.predict import Predictor
    t1 = time.perf_counter()
    predictor = Predictor.load(sys.argv[1], device="cpu")
    t2 = time.perf_counter()
    paths = sorted(__import__("pathlib").Path(sys.argv[2]).iterdir())[:64]
    predictor.predict(ImagePathSource(paths))
    t3 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "load": t2 - t1, "first_batch": t3 - t2}))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-dir", type=Path, default=None)
    args = parser.parse_args()
    demo = args.demo_dir
    if demo is None:
        from ensemble_kit.cli._demo import run_demo

        demo = Path(tempfile.mkdtemp(prefix="bundle_bench_")) / "demo"
        start = time.perf_counter()
        run_demo(demo)
        print(f"demo trained and stacked in {time.perf_counter() - start:.0f} s")
    from ensemble_kit.project.predict import Predictor

    bundle = Predictor.from_project(demo / "demo.yaml", device="cpu").save_bundle(demo.parent / "demo-bundle")
    sizes: dict[str, int] = {}
    for path in bundle.rglob("*"):
        if path.is_file():
            part = path.relative_to(bundle).parts[0] if len(path.relative_to(bundle).parts) > 1 else "manifest"
            part = "/".join(path.relative_to(bundle).parts[:2]) if part == "models" else part
            sizes[part] = sizes.get(part, 0) + path.stat().st_size
    print(f"bundle {bundle}: {sum(sizes.values()) / 1e6:.2f} MB")
    for part, size in sorted(sizes.items()):
        print(f"  {part:<28} {size / 1e6:>8.2f} MB")
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", COLD, str(bundle), str(demo / "new_images")], capture_output=True,
                             text=True, check=True)
        timing = json.loads(out.stdout.strip().splitlines()[-1])
        timing["process"] = time.perf_counter() - start
        runs.append(timing)
    best = {key: min(r[key] for r in runs) for key in runs[0]}
    print("cold start (fresh process, best of 3): " + ", ".join(f"{k} {v:.2f} s" for k, v in best.items()))


if __name__ == "__main__":
    main()
