import re
import sys

import numpy as np
import pandas as pd
import pytest

from ensemble_kit import LogitStore
from ensemble_kit.errors import MissingDependencyError, StoreError
from ensemble_kit.project import StackConfig, fit_stack
from ensemble_kit.report import SECTIONS, write_report


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(120) % 4
    classes = ["ok", "scratch", "dent", "stain"]
    store = LogitStore.create(tmp_path / "s", np.arange(120), [classes[k] for k in y], classes=classes,
                              n_folds=3, test_ids=np.arange(20))
    history = {"epoch": [0, 1, 2], "lr": [1e-3] * 3, "train_loss": [1.3, 1.0, 0.8], "val_loss": [1.2, 1.0, 0.9],
               "val_accuracy": [0.4, 0.5, 0.6]}
    for i in range(3):
        oof = np.eye(4)[y] * (1 + i) + rng.normal(size=(120, 4)) * 1.5
        if i != 1:
            store.put(f"m{i}", oof, rng.normal(size=(20, 4)))
            continue
        for fold in range(3):  # a training history, as train_cv keeps it in the entry, for one model
            store.put_fold("m1", fold, oof[store.fold_indices(fold)], rng.normal(size=(20, 4)), meta={"history": history})
    return store


def _sections(html):
    return re.findall(r'<section id="([a-z-]+)">', html)


def test_report_with_thresholded_stack_has_every_section(store):
    fit_stack(store, StackConfig(recipe="aoi", metric="accuracy", n_trials=5))
    path = write_report(store)
    html = path.read_text()
    assert _sections(html) == list(SECTIONS)
    assert html.count('src="data:image/png;base64,') == 8  # self-contained: every figure embedded
    assert sorted(p.name for p in path.parent.glob("*.png")) == sorted(
        ["leaderboard.png", "fold_spread.png", "correlation.png", "weights.png", "confusion.png", "thresholds.png",
         "reliability.png", "training_curves.png"])
    assert "class dent: predict when p &gt; 0.4" in html  # the AOI rule on class index 2
    assert "soft_vote: model weights" in html
    assert "No training history for [&#x27;m0&#x27;, &#x27;m2&#x27;]" in html


def test_report_without_stack_or_thresholds_says_so(store, tmp_path):
    html = write_report(store, out_dir=tmp_path / "r").read_text()
    assert _sections(html) == list(SECTIONS)
    assert "No stack fitted yet" in html and "applies no class thresholds" in html
    fit_stack(store, StackConfig(recipe="hill_climb", metric="log_loss"))
    html = write_report(store, stack="hill_climb", out_dir=tmp_path / "r2").read_text()
    assert "hill_climbing: model weights" in html and "applies no class thresholds" in html
    with pytest.raises(StoreError, match="no stack 'missing'"):
        write_report(store, stack="missing")


def test_missing_matplotlib_gives_install_hint(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "ensemble_kit\[report\]"'):
        write_report(store)


def test_report_cli(store, capsys):
    from ensemble_kit.cli.main import main

    assert main(["stack", str(store.path), "--recipe", "hill_climb"]) == 0
    assert main(["report", str(store.path)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert (store.path / "report" / "reliability.png").is_file()


def test_many_class_figures_stay_bounded():
    from ensemble_kit.report import figures

    n = 396
    rng = np.random.default_rng(0)
    before = pd.DataFrame({"precision": rng.random(n), "recall": rng.random(n), "f1": rng.random(n)})
    fig = figures.threshold_figure(list(range(n)), before, before + 0.01, ["+0.10"] * n)
    assert fig.get_size_inches()[0] <= 18
    y = rng.integers(0, n, 2000)
    assert max(figures.confusion_figure(y, y, list(range(n))).get_size_inches()) <= 12


def test_a_model_named_like_a_stage_keeps_its_own_bar_and_scores(tmp_path):
    from ensemble_kit.project import results_table
    from ensemble_kit.report.figures import step_labels

    rng = np.random.default_rng(1)
    y = np.arange(90) % 3
    store = LogitStore.create(tmp_path / "s", np.arange(90), y, [0, 1, 2], n_folds=3, test_ids=np.arange(10))
    for name in ("logreg", "soft_vote"):
        store.put(name, np.eye(3)[y] * 2 + rng.normal(size=(90, 3)), rng.normal(size=(10, 3)))
    stack = fit_stack(store, StackConfig(recipe="full", n_trials=4))
    labels = step_labels(stack.report)
    assert len(labels) == len(set(labels)) and "logreg (base model)" in labels and "logreg (stage)" in labels
    table = results_table(store, stack)
    assert table.loc[(table["step"] == "logreg") & (table["kind"] == "stage"), "log_loss"].notna().all()
    html = write_report(store).read_text()
    assert html.count('<section id="leaderboard">') == 1


def test_figures_fit_their_labels():
    from ensemble_kit.report import figures

    fig = figures.confusion_figure(np.array([0, 1, 1]), np.array([0, 1, 0]), ["ok", "ng"])
    assert fig.get_size_inches()[0] >= 5.0 and "\n" in fig.axes[0].get_title()
    history = {"m": {0: pd.DataFrame({"epoch": [0, 1, 2], "val_loss": [1.0, 0.8, 0.7], "train_loss": [1.2, 0.9, 0.6]})}}
    ax = figures.training_curves_figure(history).axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
