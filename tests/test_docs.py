"""The docs cannot drift from the code: the API page is generated, every command they show exists."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = sorted([*ROOT.glob("docs/**/*.md"), ROOT / "README.md", *ROOT.glob("examples/*/README.md")])


def test_api_page_is_generated_from_the_code():
    generator = runpy.run_path(str(ROOT / "docs" / "generate_api.py"))
    assert (ROOT / "docs" / "api.md").read_text(encoding="utf-8") == generator["render"](), (
        "docs/api.md is out of date: run python docs/generate_api.py")
    headings = re.findall(r"^## (.+)$", (ROOT / "docs" / "api.md").read_text(), flags=re.M)
    assert len(headings) == len(set(headings))


def _commands() -> list[tuple[str, str, list[str]]]:
    """Every ``ensemble-kit COMMAND --option`` the docs show, with where it appears."""
    found = []
    for path in DOC_FILES:
        for line in path.read_text(encoding="utf-8").splitlines():
            for match in re.finditer(r"ensemble-kit ([a-z][a-z-]*)([^`|#]*)", line):
                options = re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", match.group(2))
                found.append((f"{path.relative_to(ROOT)}", match.group(1), options))
    return found


def test_every_command_and_option_the_docs_show_exists():
    from ensemble_kit.cli.main import build_parser

    subparsers = build_parser()._subparsers._group_actions[0].choices
    missing = []
    for where, command, options in _commands():
        if command not in subparsers:
            missing.append(f"{where}: ensemble-kit {command}")
            continue
        known = {flag for action in subparsers[command]._actions for flag in action.option_strings}
        missing += [f"{where}: ensemble-kit {command} {option}" for option in options if option not in known]
    assert missing == []


@pytest.mark.parametrize("registry", ["RECIPES"])
def test_the_stacking_page_describes_every_recipe(registry):
    from ensemble_kit.ensemble import RECIPES

    text = (ROOT / "docs" / "stacking.md").read_text()
    assert [name for name in RECIPES.names() if f'`"{name}"`' not in text] == []


BENCHMARKS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
# One fresh interpreter runs every script's ``--help`` in turn: each script's imports resolve and
# its parser builds, without paying the deep-learning imports once per script.
_START_ALL = """
import contextlib, io, json, runpy, sys, traceback
results = {}
for script in sys.argv[1:]:
    sys.argv, err = [script, "--help"], io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            runpy.run_path(script, run_name="__main__")
        results[script] = [None, "the script returned without parsing --help"]
    except SystemExit as stop:
        results[script] = [stop.code, err.getvalue()]
    except BaseException:
        results[script] = ["raised", traceback.format_exc()]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def benchmark_starts() -> dict:
    import json
    import subprocess
    import sys

    # ``-c`` puts the working folder first on sys.path: the scripts' imports of their siblings resolve
    result = subprocess.run([sys.executable, "-c", _START_ALL, *BENCHMARKS], capture_output=True, text=True,
                            timeout=300, cwd=ROOT / "benchmarks")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("script", BENCHMARKS)
def test_benchmark_scripts_start(script, benchmark_starts):
    code, stderr = benchmark_starts[script]
    assert code == 0, stderr[-2000:]
