"""The core install (`pip install -e .`) has no pyarrow: the OOF-CSV path must never import it.

pandas 3 reads CSV text columns as its ``str`` dtype, held in Arrow memory when pyarrow is
installed and as Python objects when it is not; both kinds of array have ``__arrow_array__`` (the
export protocol), and on the Python-object kind calling it imports pyarrow. The test environment
has pyarrow (the `test` extra), so these tests take it away: in-process by making the export
protocol raise, and in a child process by blocking the import before pandas loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ensemble_kit.store._validate import IdText, match_ids

# `python -c` with pyarrow unimportable (as on the core install), then the CLI's entry point on each
# command line given (one JSON list each): one interpreter for all, its exit codes printed as JSON
# (a finder that refuses pyarrow, not sys.modules["pyarrow"] = None: scikit-learn takes a None there
# for a loaded pyarrow)
_NO_PYARROW_CLI = textwrap.dedent("""
    import json, sys

    class NotInstalled:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.split(".")[0] == "pyarrow":
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled)
    import pandas as pd
    from ensemble_kit.cli.main import main
    codes = []
    for args in sys.argv[1:]:
        print("COMMAND", args, file=sys.stderr, flush=True)
        codes.append(main(json.loads(args)))
    print("CODES", json.dumps(codes))
    print("PYARROW_LOADED", sorted(m for m in sys.modules if m.split(".")[0] == "pyarrow"))
    print("STRING_STORAGE", getattr(pd.Series(["a"]).dtype, "storage", "object"))
""")


def _python_strings(values: list[str]) -> list[pd.Series]:
    """Text columns held as Python objects: pandas' StringDtype("python"), and pandas 3's default
    ``str`` without pyarrow (its NaN-variant, where this pandas has it)."""
    series = [pd.Series(values, dtype=pd.StringDtype("python"))]
    try:
        series.append(pd.Series(values, dtype=pd.StringDtype("python", na_value=np.nan)))
    except TypeError:  # pandas < 2.1: no na_value
        pass
    return series


@pytest.fixture
def no_arrow_export(monkeypatch):
    """Calling ``__arrow_array__`` on a Python-object string array fails, as it does without pyarrow."""
    from pandas.core.arrays.string_ import StringArray

    def refuse(self, type=None):  # noqa: A002 (pandas' signature)
        raise ModuleNotFoundError("No module named 'pyarrow' (blocked by the test)")

    monkeypatch.setattr(StringArray, "__arrow_array__", refuse)


@pytest.mark.usefixtures("no_arrow_export")
def test_python_object_strings_match_without_the_arrow_export():
    expected = [f"{i:04d}" for i in range(50)] + ["née", "NA", "007"]
    for given in _python_strings(expected[::-1]):
        assert isinstance(given.array, pd.arrays.StringArray)
        match = match_ids(given, pd.Series(expected, dtype=object))
        assert match.exact
        np.testing.assert_array_equal(np.asarray(given)[match.position], expected)
        assert IdText.of(given).text().tolist() == expected[::-1]


def _run_cli(commands: list[list[str]], cwd: Path) -> tuple[list[int], subprocess.CompletedProcess]:
    result = subprocess.run([sys.executable, "-c", _NO_PYARROW_CLI, *map(json.dumps, commands)], cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("CODES", "PYARROW", "STRING")))
    assert lines["PYARROW_LOADED"] == "[]", lines
    assert lines["STRING_STORAGE"] in ("python", "object"), lines  # pandas could not reach pyarrow either
    return json.loads(lines["CODES"]), result


def test_every_core_command_of_the_oof_csv_path_runs_without_pyarrow(tmp_path):
    """getting-started section 3, command by command, in a process that cannot import pyarrow."""
    rng = np.random.default_rng(0)
    classes, n_train, n_test = ["cat", "dog", "fox"], 45, 9
    train_ids = [f"{i:03d}" for i in range(n_train)]  # "007" must stay "007"
    test_ids = [f"t{i:03d}" for i in range(n_test)]
    y = np.arange(n_train) % 3
    pd.DataFrame({"image_id": train_ids, "label": [classes[k] for k in y], "fold": np.arange(n_train) % 3 + 1}).to_csv(
        tmp_path / "train.csv", index=False)
    pd.DataFrame({"image_id": test_ids, **{c: 1 / 3 for c in classes}}).to_csv(tmp_path / "sample_submission.csv",
                                                                               index=False)
    for name in ("alice", "bob"):
        for split, ids, labels in (("oof", train_ids, y), ("test", test_ids, np.arange(n_test) % 3)):
            logits = 2 * np.eye(3)[labels] + rng.normal(size=(len(ids), 3))
            table = pd.DataFrame(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), columns=classes)
            table.insert(0, "image_id", ids)
            table[::-1].to_csv(tmp_path / f"{name}_{split}.csv", index=False)

    commands = [
        ["init", "store", "--labels", "train.csv", "--id-col", "image_id", "--label-col", "label",
         "--sample-submission", "sample_submission.csv", "--fold-col", "fold"],
        ["import-oof", "store", "alice", "alice_oof.csv", "--test", "alice_test.csv", "--id-col", "image_id"],
        ["import-oof", "store", "bob", "bob_oof.csv", "--test", "bob_test.csv", "--id-col", "image_id"],
        ["ls", "store"],
        ["stack", "store", "--metric", "log_loss", "--n-trials", "3"],
        ["submit", "store"],
        ["export", "store", "alice", "alice_export.csv"],
        ["import-oof", "store", "alice_again", "alice_export.csv"],  # the export's id/split/fold layout
        ["verify", "store"],
    ]
    codes, result = _run_cli(commands, tmp_path)
    assert codes == [0] * len(commands), (list(zip(codes, commands)), result.stderr[-3000:])

    submission = pd.read_csv(tmp_path / "submission.csv", dtype={"image_id": str})
    assert list(submission.columns) == ["image_id", *classes]
    assert submission["image_id"].tolist() == test_ids

    # Parquet is the `parquet` extra: without pyarrow it is a named error, exit 2, not a traceback
    (tmp_path / "bob_oof.parquet").write_bytes(b"PAR1 not read: the dependency check comes first")
    codes, result = _run_cli([["import-oof", "store", "carol", "bob_oof.parquet", "--id-col", "image_id"]], tmp_path)
    assert codes == [2], result.stderr[-3000:]
    assert "needs the optional package 'pyarrow'" in result.stderr
    assert 'pip install "ensemble_kit[parquet]"' in result.stderr and "Traceback" not in result.stderr
