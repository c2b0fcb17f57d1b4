import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ensemble_kit import LogitStore
from ensemble_kit.cli.main import main
from ensemble_kit.metrics import softmax

ROOT = Path(__file__).resolve().parents[2]


def test_demo_then_ls_verify_export_import_submit(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    assert main(["demo", "--out", str(out_dir), "--folds", "2", "--n-trials", "3", "--set", "models.*.epochs=1"]) == 0
    out = capsys.readouterr().out
    for expected in ("resnet10t", "convnext", "efficientnet", "logreg", "catboost", "lightgbm", "soft_vote", "blend",
                     "+thresholds", "final (as submitted)", "test_f1_macro", "ensemble-kit dashboard"):
        assert expected in out
    store_path = out_dir / "store"
    store = LogitStore(store_path)
    assert store.models() == ["convnext", "efficientnet", "resnet10t"]
    assert {store.entry(m).meta["model"] for m in store.models()} == {"resnet10t", "test_convnext", "test_efficientnet"}
    assert (store_path / "report" / "report.html").is_file() and (out_dir / "demo.yaml").is_file()
    submission = pd.read_csv(out_dir / "submission.csv")
    assert list(submission.columns) == ["id", "digit"] and len(submission) == len(store.test_ids)
    assert main(["ls", str(store_path), "--metric", "accuracy"]) == 0
    listing = capsys.readouterr().out
    assert "efficientnet" in listing and "stack 'full'" in listing and "+thresholds" in listing
    assert main(["verify", str(store_path)]) == 0
    assert "OK" in capsys.readouterr().out
    csv = tmp_path / "convnext.csv"
    assert main(["export", str(store_path), "convnext", str(csv)]) == 0
    assert set(pd.read_csv(csv)["split"]) == {"oof", "test"}
    assert main(["import-oof", str(store_path), "convnext_copy", str(csv)]) == 0
    np.testing.assert_allclose(softmax(store.oof("convnext_copy")), softmax(store.oof("convnext")), atol=1e-5)
    probs_csv = tmp_path / "probs.csv"
    assert main(["submit", str(store_path), "--out", str(probs_csv), "--format", "probs"]) == 0
    probs = pd.read_csv(probs_csv)
    assert list(probs.columns) == ["id", *[str(c) for c in store.classes]]
    np.testing.assert_allclose(probs.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-5)


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["ls", str(tmp_path / "missing")]) == 2
    assert "is not a logit store" in capsys.readouterr().err


def test_help_for_every_command():
    for command in ["train", "stack", "ls", "report", "submit", "verify", "import-oof", "export", "dashboard", "demo"]:
        result = subprocess.run([sys.executable, "-m", "ensemble_kit.cli.main", command, "--help"],
                                capture_output=True, text=True)
        assert result.returncode == 0 and "usage: ensemble-kit" in result.stdout


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in readme and "<!-- test-command -->" in ci
    blocks = [line for line in readme.splitlines() if line.startswith("pip install")]
    assert blocks == ['pip install -e ".[train,report]" && ensemble-kit demo', 'pip install -e ".[dev]" && python -m pytest']


@pytest.mark.parametrize("module", ["ensemble_kit", "ensemble_kit.store", "ensemble_kit.metrics", "ensemble_kit.data",
                                    "ensemble_kit.project", "ensemble_kit.report", "ensemble_kit.train"])
def test_public_api_is_declared(module):
    mod = __import__(module, fromlist=["__all__"])
    assert all(hasattr(mod, name) for name in mod.__all__)


def test_train_command_folds_overrides_and_key_errors(tmp_path, capsys):
    import yaml

    from helpers import write_images

    write_images(tmp_path / "data" / "train", [(f"{c}/{i}.png", k) for k, c in enumerate("ab") for i in range(8)])
    config = tmp_path / "project.yaml"
    config.write_text(yaml.safe_dump({
        "store": str(tmp_path / "store"),
        "data": {"format": "folder", "root": str(tmp_path / "data"), "train": "train"},
        "folds": {"n_folds": 2},
        "models": {"r10": {"model": "resnet10t", "img_size": 16, "epochs": 3, "batch_size": 8}},
    }))
    assert main(["train", str(config), "--fold", "1", "--set", "models.r10.epochs=1"]) == 0
    assert "r10: folds [1] of 2" in capsys.readouterr().out
    store = LogitStore(tmp_path / "store")
    assert store.entry("r10").meta["epochs_run"] == 1
    assert main(["train", str(config), "--set", "models.*.epochs=1"]) == 0
    assert "r10: complete" in capsys.readouterr().out
    assert main(["train", str(config), "--set", "models.r10.optimizer.lrr=1"]) == 2
    assert "unknown key 'models.r10.optimizer.lrr'" in capsys.readouterr().err
    assert main(["submit", str(store.path), "--out", str(tmp_path / "s.csv")]) == 2
    assert "no fitted stack yet" in capsys.readouterr().err


def test_demo_never_deletes_a_folder_it_did_not_create(tmp_path, capsys):
    keep = tmp_path / "store" / "precious.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "is not the store of an earlier demo" in capsys.readouterr().err
    assert keep.read_text() == "mine"


def test_demo_prints_its_expected_duration_first_derived_from_the_measured_run(tmp_path, capsys, monkeypatch):
    from ensemble_kit.cli import _demo

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_demo, "run_demo", interrupted)
    assert main(["demo", "--out", str(tmp_path / "d")]) == 130
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (f"expected duration: about 3 min on a 2-core CPU (measured: 3 min 6 s on {_demo.MEASURED_ON})")
    # the figure comes from the measured run's parts, scaled by the resolved config
    default = _demo.demo_config(tmp_path)
    assert _demo.expected_seconds(default) == pytest.approx(_demo.MEASURED_SECONDS)
    half = _demo.demo_config(tmp_path, overrides=["models.resnet10t.epochs=3", "models.convnext.epochs=4",
                                                  "models.efficientnet.epochs=4"])
    assert _demo.MEASURED_SECONDS - _demo.expected_seconds(half) == pytest.approx(104.5 / 2)
    assert main(["demo", "--out", str(tmp_path / "d"), "--folds", "2", "--n-trials", "3",
                 "--set", "models.*.epochs=1"]) == 130
    assert "scaled to these folds, epochs and trials" in capsys.readouterr().out
    # the README states the same measurement and the machine it was made on
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"3 min 6 s measured on {_demo.MEASURED_ON}" in readme
