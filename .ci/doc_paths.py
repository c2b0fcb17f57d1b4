"""Run the getting-started guide's own commands, verbatim, in a virtualenv made by the install it names.

    python .ci/doc_paths.py core   --venv VENV   # section 3: OOF CSVs -> submission (`pip install -e .`)
    python .ci/doc_paths.py images --venv VENV   # section 2: images -> submission, predict (`.[train,report]`)
    python .ci/doc_paths.py core --print-install  # the install the guide names for a section

A fenced block of docs/getting-started.md runs here when the line before it (blank lines aside)
is ``<!-- ci: SECTION -->``; ``<!-- ci: SECTION file=NAME -->`` writes the block to NAME instead
(the guide's "save this config as digits.yaml"). Blocks run in the guide's order, in a fresh
folder, with VENV's ``bin`` first on PATH, so ``ensemble-kit`` and ``python`` are the ones that
install made. Every command of a bash block (continuation lines joined, a heredoc kept whole)
runs on its own, is timed, and must exit 0; nothing is appended to it.

Section 3 needs the reader's files (labels, teammates' OOF and test CSVs, a sample submission):
they are made here, tiny, from the file list the guide gives. Section 2 makes its own images.
Afterwards the outputs are checked (a submission shaped like the sample submission, one row per
test image, one per new image). The last line is ``docs: N passed, N failed``.

Only the standard library runs here (the venvs have their own packages); the core section's
input files are written with the venv's numpy and pandas.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "getting-started.md"
# The install each section names (checked to appear, verbatim, in that section's text).
INSTALLS = {"core": "pip install -e .", "images": 'pip install -e ".[train,report]"'}
# What the install must and must not make importable: the core path is the one without torch and
# pyarrow (pyarrow is the `parquet` extra), so this run is what proves the core needs neither.
IMPORTABLE = {"core": {"torch": False, "pyarrow": False},
              "images": {"torch": True, "timm": True, "matplotlib": True, "pyarrow": False}}
# The path each section must walk end to end: a marker dropped from one of these commands fails CI.
REQUIRED = {"core": ("init", "import-oof", "stack", "submit"), "images": ("train", "stack", "submit", "predict")}
MARKER = re.compile(r"^<!-- ci: (?P<section>[a-z]+)(?: file=(?P<file>[\w.-]+))? -->$")


@dataclass(frozen=True)
class Block:
    section: str
    heading: str          # the "## ..." heading the block sits under
    line: int             # 1-based line of the block's opening fence
    language: str
    text: str
    file: str | None      # write the block to this file instead of running it


def blocks(section: str, guide: Path = GUIDE) -> list[Block]:
    """The guide's blocks marked for ``section``, in order."""
    lines = guide.read_text(encoding="utf-8").splitlines()
    found, heading, pending = [], "", None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            heading = line
        marker = MARKER.match(line.strip())
        if marker:
            pending = marker
        elif line.startswith("```"):  # a block, marked or not: skipped whole (its lines are no markdown)
            start = i
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            if end is None:
                raise SystemExit(f"{guide}:{start + 1}: unclosed code block")
            if pending is not None and pending["section"] == section:
                found.append(Block(section, heading, start + 1, line[3:].strip(), "\n".join(lines[start + 1:end]) + "\n",
                                   pending["file"]))
            pending, i = None, end
        elif line.strip() and pending is not None:
            raise SystemExit(f"{guide}:{i + 1}: a '<!-- ci: ... -->' marker must be followed by a code block")
        i += 1
    return found


def section_text(heading: str, guide: Path = GUIDE) -> str:
    text = guide.read_text(encoding="utf-8")
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def commands(block: Block) -> list[str]:
    """One shell command per logical line: ``\\`` continuations joined, a heredoc kept with its command."""
    found: list[str] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].strip() or lines[i].lstrip().startswith("#"):
            i += 1
            continue
        command = [lines[i]]
        while command[-1].rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            command.append(lines[i])
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", command[0])
        if heredoc:
            while i + 1 < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
                command.append(lines[i])
            if command[-1].strip() != heredoc.group(1):
                raise SystemExit(f"{GUIDE}:{block.line}: heredoc {heredoc.group(1)} is not closed")
        found.append("\n".join(command))
        i += 1
    return found


# The core section's inputs: a 3-class competition, 60 training images in 4 labelled folds (1..4,
# as after a competition's fold 0 was held out), 20 test images; ids are zero-padded text.
_CORE_INPUTS = textwrap.dedent("""
    import numpy as np, pandas as pd
    rng = np.random.default_rng(0)
    classes, n_train, n_test = ["cat", "dog", "fox"], 60, 20
    train_ids = [f"{i:04d}" for i in range(n_train)]
    test_ids = [f"{i:04d}" for i in range(n_train, n_train + n_test)]
    y = rng.integers(0, len(classes), n_train)
    pd.DataFrame({"image_id": train_ids, "label": [classes[k] for k in y],
                  "fold": np.arange(n_train) % 4 + 1}).to_csv("train.csv", index=False)
    pd.DataFrame({"image_id": test_ids, **{c: 1 / len(classes) for c in classes}}).to_csv(
        "sample_submission.csv", index=False)
    for name, skill in (("alice", 2.0), ("bob", 1.0)):
        for split, ids, labels in (("oof", train_ids, y), ("test", test_ids, rng.integers(0, 3, n_test))):
            logits = skill * np.eye(len(classes))[labels] + rng.normal(size=(len(ids), len(classes)))
            probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            table = pd.DataFrame(probs, columns=classes)
            table.insert(0, "image_id", ids)
            table.sample(frac=1.0, random_state=0).to_csv(f"{name}_{split}.csv", index=False)  # any row order
""")

_CHECKS = {
    # the submission is the sample submission's shape, ids and columns, with probabilities
    "core": textwrap.dedent("""
        import numpy as np, pandas as pd
        sample = pd.read_csv("sample_submission.csv", dtype=str)
        sub = pd.read_csv("submission.csv", dtype={"image_id": str})
        assert sub.shape == sample.shape, (sub.shape, sample.shape)
        assert list(sub.columns) == list(sample.columns), list(sub.columns)
        assert sub["image_id"].tolist() == sample["image_id"].tolist(), "ids differ from the sample submission"
        assert np.allclose(sub.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-4)
        print(f"submission.csv: {sub.shape[0]} rows x {sub.shape[1]} columns, as sample_submission.csv")
    """),
    # one labelled row per test image and per new image, ids the file names
    "images": textwrap.dedent("""
        from pathlib import Path
        import pandas as pd
        for out, folder in (("submission.csv", "data/digits/test"), ("new_predictions.csv", "data/digits/new")):
            table = pd.read_csv(out, dtype=str)
            stems = sorted(p.stem for p in Path(folder).glob("*.png"))
            assert stems and sorted(table["id"]) == stems, (out, len(table), len(stems))
            assert set(table["label"]) <= {str(k) for k in range(10)}, set(table["label"])
            print(f"{out}: {len(table)} rows, one per image of {folder}, labels {sorted(set(table['label']))}")
        assert Path("runs/digits/store/report/report.html").is_file()
    """),
}


def _env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_section(section: str, venv: Path, work: Path) -> int:
    venv = venv.resolve()
    env = _env(venv)
    marked = blocks(section)
    if not marked:
        print(f"doc-paths: no block of {GUIDE.name} is marked '<!-- ci: {section} -->'", file=sys.stderr)
        return 1
    install = INSTALLS[section]
    headings = {b.heading for b in marked}
    unnamed = [h for h in headings if f"`{install}`" not in section_text(h)]
    if unnamed:
        print(f"doc-paths: {unnamed} must name the install that CI makes for it: `{install}`", file=sys.stderr)
        return 1
    to_run = [c for b in marked if not b.file for c in commands(b)]
    walked = {m.group(1) for c in to_run for m in re.finditer(r"(?:^|\n)ensemble-kit ([a-z-]+)", c)}
    if set(REQUIRED[section]) - walked:
        print(f"doc-paths: the blocks marked '<!-- ci: {section} -->' must run ensemble-kit "
              f"{', '.join(REQUIRED[section])}; they run {sorted(walked)}", file=sys.stderr)
        return 1
    if shutil.which("ensemble-kit", path=env["PATH"]) != str(venv / "bin" / "ensemble-kit"):
        print(f"doc-paths: ensemble-kit is not installed in {venv}", file=sys.stderr)
        return 1
    probe = "import importlib.util, sys; print(*[importlib.util.find_spec(m) is not None for m in sys.argv[1:]])"
    wanted = IMPORTABLE[section]
    got = subprocess.run([str(venv / "bin" / "python"), "-c", probe, *wanted], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    wrong = [m for m, g in zip(wanted, got) if (g == "True") != wanted[m]]
    if wrong:
        print(f"doc-paths: {venv} is not `{install}`: {', '.join(wrong)} "
              f"{'missing' if wanted[wrong[0]] else 'importable'} (expected {wanted})", file=sys.stderr)
        return 1

    work.mkdir(parents=True, exist_ok=True)
    print(f"doc-paths: {section}: {len(marked)} block(s) of {GUIDE.relative_to(ROOT)} in {work}, "
          f"`{install}` in {venv}", flush=True)
    timings: list[tuple[str, float, int]] = []

    def step(label: str, argv: list[str]) -> int:
        print(f"+ {label}", flush=True)
        started = time.perf_counter()
        rc = subprocess.run(argv, cwd=work, env=env).returncode
        timings.append((label, time.perf_counter() - started, rc))
        return rc

    if section == "core":
        rc = step("(CI) write train.csv, {alice,bob}_{oof,test}.csv, sample_submission.csv",
                  [str(venv / "bin" / "python"), "-c", _CORE_INPUTS])
        if rc:
            return _summary(section, timings)
    for block in marked:
        if block.file:
            (work / block.file).write_text(block.text, encoding="utf-8")
            print(f"+ (guide line {block.line}) wrote {block.file}", flush=True)
            continue
        if block.language not in ("bash", "sh", "console"):
            print(f"doc-paths: {GUIDE.name}:{block.line}: a ```{block.language} block needs file=NAME", file=sys.stderr)
            return 1
        for command in commands(block):
            if step(command, ["bash", "-euo", "pipefail", "-c", command]):
                return _summary(section, timings)
    step("(CI) check the outputs", [str(venv / "bin" / "python"), "-c", _CHECKS[section]])
    return _summary(section, timings)


def _summary(section: str, timings: list[tuple[str, float, int]]) -> int:
    failed = sum(rc != 0 for _, _, rc in timings)
    print(f"\ndoc-paths: {section}: time of each step")
    for label, seconds, rc in timings:
        first = label.splitlines()[0]
        print(f"  {seconds:7.1f} s  {'ok  ' if rc == 0 else f'rc={rc}'}  {first[:110]}")
    print(f"docs: {len(timings) - failed} passed, {failed} failed")  # the plain closing line CI reads
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("section", choices=sorted(INSTALLS))
    parser.add_argument("--print-install", action="store_true", help="print the install the guide names, and exit")
    parser.add_argument("--venv", type=Path, help="virtualenv made with that install")
    parser.add_argument("--work", type=Path, help="folder to run in (default: a new temporary folder)")
    args = parser.parse_args(argv)
    if args.print_install:
        print(INSTALLS[args.section])
        return 0
    if args.venv is None:
        parser.error("--venv is required")
    work = args.work or Path(tempfile.mkdtemp(prefix=f"doc-{args.section}-"))
    return run_section(args.section, args.venv, work)


if __name__ == "__main__":
    sys.exit(main())
