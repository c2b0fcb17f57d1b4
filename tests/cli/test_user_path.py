"""The user's path, command by command: one source of truth, competition-shaped output, visible progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ensemble_kit.cli.main import build_parser, main
from ensemble_kit.ensemble import read_stack
from ensemble_kit.store import LogitStore

N = 120


def _byo_files(folder: Path, rng: np.random.Generator) -> None:
    """A competition's files plus two teammates' OOF/test probability CSVs (ids are zero-padded text)."""
    ids = [f"{i:04d}" for i in range(N)]
    y = np.array(["ok", "scratch", "dent"])[np.arange(N) % 3]
    pd.DataFrame({"image_id": ids, "defect": y, "fold": 1 + np.arange(N) % 4}).to_csv(folder / "train.csv", index=False)
    test_ids = [f"t{i:03d}" for i in range(20)]
    pd.DataFrame({"image_id": test_ids[::-1], "scratch": 0.0, "ok": 0.0, "dent": 0.0}).to_csv(
        folder / "sample_submission.csv", index=False)
    classes = ["dent", "ok", "scratch"]
    for name, strength in (("alice", 2.0), ("bob", 1.0)):
        oof = np.exp(np.eye(3)[[classes.index(c) for c in y]] * strength + rng.normal(size=(N, 3)))
        test = np.exp(rng.normal(size=(20, 3)))
        pd.DataFrame(oof / oof.sum(1, keepdims=True), columns=classes).assign(image_id=ids).to_csv(
            folder / f"{name}_oof.csv", index=False)
        pd.DataFrame(test / test.sum(1, keepdims=True), columns=classes).assign(image_id=test_ids).to_csv(
            folder / f"{name}_test.csv", index=False)


def test_bring_your_own_csvs_to_a_kaggle_submission(tmp_path, capsys, monkeypatch):
    _byo_files(tmp_path, np.random.default_rng(0))
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    assert main(["init", str(store), "--labels", "train.csv", "--id-col", "image_id", "--label-col", "defect",
                 "--fold-col", "fold", "--sample-submission", "sample_submission.csv"]) == 0
    out = capsys.readouterr().out
    assert "fold labels [1, 2, 3, 4] -> 0..3" in out and "20 test ids" in out
    opened = LogitStore(store)
    assert opened.fold_labels == [1, 2, 3, 4] and opened.train_ids[0] == "0000"
    for name in ("alice", "bob"):
        assert main(["import-oof", str(store), name, f"{name}_oof.csv", "--test", f"{name}_test.csv",
                     "--id-col", "image_id", "--kind", "probs"]) == 0
    # messages name the flag of the interface in use
    assert main(["import-oof", str(store), "alice", "alice_oof.csv", "--test", "alice_test.csv",
                 "--id-col", "image_id"]) == 2
    error = capsys.readouterr().err
    assert "--overwrite" in error and "overwrite=True" not in error
    assert main(["ls", str(store)]) == 0
    listing = capsys.readouterr().out
    assert "fold labels: [1, 2, 3, 4]" in listing and "meta." not in listing and "created" not in listing
    assert main(["stack", str(store), "--recipe", "average"]) == 0
    assert main(["submit", str(store)]) == 0  # submission.csv in the working directory, shaped like the sample
    submission = pd.read_csv(tmp_path / "submission.csv")
    sample = pd.read_csv(tmp_path / "sample_submission.csv")
    assert submission.columns.tolist() == sample.columns.tolist() == ["image_id", "scratch", "ok", "dent"]
    assert submission["image_id"].tolist() == sample["image_id"].tolist()
    np.testing.assert_allclose(submission[["scratch", "ok", "dent"]].sum(axis=1), 1.0, atol=1e-6)
    used = json.loads((tmp_path / "submission.json").read_text())
    assert used["stack"] == "average" and used["sample_submission"].endswith("sample_submission.csv")
    # ids that differ from the sample's are refused, naming a few
    pd.DataFrame({"image_id": ["t000", "zzz"], "label": "ok"}).to_csv(tmp_path / "other.csv", index=False)
    assert main(["submit", str(store), "--sample-submission", "other.csv", "--out", "x.csv"]) == 2
    error = capsys.readouterr().err
    assert "1 of its ids were not predicted (e.g. ['zzz'])" in error and "19 predicted ids are not in it" in error
    assert not (tmp_path / "x.csv").exists()


def _project_store(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    store = LogitStore.create(tmp_path / "store", np.arange(90), [f"c{k}" for k in y], ["c0", "c1", "c2"], n_folds=3,
                              test_ids=[f"t{i}" for i in range(10)])
    for i in range(2):
        store.put(f"m{i}", np.eye(3)[y] * (2 + i) + rng.normal(size=(90, 3)), rng.normal(size=(10, 3)))
    (store.path / "project").mkdir()
    (store.path / "project" / "project.yaml").write_text(yaml.safe_dump({
        "store": str(store.path), "models": {"m0": {}, "m1": {}},
        "stack": {"recipe": "aoi", "metric": "accuracy", "n_trials": 5, "name": "from_yaml"},
        "submission": {"format": "labels", "id_col": "ImageId", "label_col": "digit"}}))
    return store.path


def test_stack_and_submit_follow_the_projects_settings_and_flags_override_them(tmp_path, monkeypatch):
    store = _project_store(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["stack", str(store)]) == 0
    saved = read_stack(store / "stacks" / "from_yaml")
    assert (saved.info.recipe, saved.metric, saved.info.settings["n_trials"]) == ("aoi", "accuracy", 5)
    assert main(["stack", str(store), "--metric", "log_loss", "--name", "override"]) == 0
    assert read_stack(store / "stacks" / "override").metric == "log_loss"
    assert main(["submit", str(store), "--stack", "from_yaml"]) == 0
    submission = pd.read_csv(tmp_path / "submission.csv")
    assert submission.columns.tolist() == ["ImageId", "digit"] and set(submission["digit"]) <= {"c0", "c1", "c2"}
    assert main(["submit", str(store), "--stack", "from_yaml", "--format", "probs", "--out", "p.csv"]) == 0
    assert pd.read_csv(tmp_path / "p.csv").columns.tolist() == ["ImageId", "c0", "c1", "c2"]


def test_ls_shows_metadata_only_when_asked(tmp_path, capsys):
    store = _project_store(tmp_path)
    LogitStore(store).put("m2", np.zeros((90, 3)) + np.arange(3), np.zeros((10, 3)), meta={"config": {"lr": 0.1}})
    assert main(["ls", str(store)]) == 0
    assert "meta.config" not in capsys.readouterr().out
    assert main(["ls", str(store), "--meta"]) == 0
    assert "meta.config" in capsys.readouterr().out


def test_every_option_has_a_help_text():
    import argparse

    parser = build_parser()
    missing = [f"{command} {action.dest}"
               for command, sub in parser._subparsers._group_actions[0].choices.items()
               for action in sub._actions
               if not isinstance(action, argparse._HelpAction) and not action.help]
    assert missing == []


def test_a_mistyped_set_key_suggests_the_closest(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"store": str(tmp_path / "s"), "models": {"r10": {"model": "resnet10t"}}}))
    assert main(["train", str(config), "--set", "models.r10.epoch=1"]) == 2
    assert "Did you mean 'models.r10.epochs'" in capsys.readouterr().err


def test_progress_shows_as_log_lines_when_output_is_not_a_terminal(tmp_path):
    store = _project_store(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "ensemble_kit.cli.main", "stack", str(store), "--recipe", "yandex",
               "--n-trials", "40", "--name", "visible"]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for stage in ("catboost", "lightgbm", "soft_vote"):
        assert f"stage {stage} fitted in" in run.stderr
    assert "40/40 trials" in run.stderr or "trials, best" in run.stderr  # long studies report as they go
    # -q silences every stage's line; the cheapest recipe shows it as well as the one above
    quiet = subprocess.run([*command[:5], "--recipe", "average", "--n-trials", "5", "--name", "quiet", "-q"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0 and "fitted in" not in quiet.stderr


def test_bars_are_shown_in_notebooks_and_terminals_only(monkeypatch):
    import types

    from ensemble_kit import _progress

    monkeypatch.setattr(sys, "stderr", types.SimpleNamespace(isatty=lambda: False, write=lambda s: None))
    assert not _progress.interactive()
    kernel = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel))
    assert _progress.interactive()
    _progress.quiet(True)
    try:
        assert not _progress.interactive()
    finally:
        _progress.quiet(False)
