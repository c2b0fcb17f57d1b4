import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ensemble_kit import LogitStore
from ensemble_kit.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def test_demo_ls_verify_export_import(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "logreg_pixels" in out and "test_accuracy" in out
    store_path = tmp_path / "demo" / "store"
    store = LogitStore.open(store_path)
    assert len(store.models()) >= 3
    assert main(["ls", str(store_path), "--metric", "accuracy"]) == 0
    assert "extra_trees" in capsys.readouterr().out
    assert main(["verify", str(store_path)]) == 0
    assert "OK" in capsys.readouterr().out
    csv = tmp_path / "knn.csv"
    assert main(["export", str(store_path), "knn_pixels", str(csv)]) == 0
    assert set(pd.read_csv(csv)["split"]) == {"oof", "test"}
    assert main(["import-oof", str(store_path), "knn_copy", str(csv)]) == 0
    np.testing.assert_allclose(np.exp(store.oof("knn_copy")), np.exp(store.oof("knn_pixels")), atol=1e-6)


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["ls", str(tmp_path / "missing")]) == 2
    assert "is not a logit store" in capsys.readouterr().err


def test_help_for_every_command():
    for command in ["ls", "verify", "import-oof", "export", "stack", "dashboard", "demo"]:
        result = subprocess.run([sys.executable, "-m", "ensemble_kit.cli.main", command, "--help"],
                                capture_output=True, text=True)
        assert result.returncode == 0 and "usage: ensemble-kit" in result.stdout


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in readme and "<!-- test-command -->" in ci
    blocks = [line for line in readme.splitlines() if line.startswith("pip install")]
    assert blocks == ['pip install -e . && ensemble-kit demo', 'pip install -e ".[dev]" && python -m pytest']


@pytest.mark.parametrize("module", ["ensemble_kit", "ensemble_kit.store", "ensemble_kit.metrics", "ensemble_kit.data"])
def test_public_api_is_declared(module):
    mod = __import__(module, fromlist=["__all__"])
    assert all(hasattr(mod, name) for name in mod.__all__)
