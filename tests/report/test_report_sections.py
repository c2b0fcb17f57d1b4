"""What the report shows and how: the submitted row, rejected steps, bars from 0, the spread across
folds, per-class scores, the most confident mistakes (with thumbnails when the store knows its
images) and the trials each study really holds."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support

from ensemble_kit import LogitStore
from ensemble_kit.data import ArrayImageSource
from ensemble_kit.metrics import log_softmax, scores
from ensemble_kit.project import StackConfig, fit_stack, load_stack
from ensemble_kit.report import write_report
from ensemble_kit.report.html import MISCLASSIFIED_SHOWN, submitted_row

CLASSES = ["ok", "scratch", "dent", "stain"]


class _Tables(HTMLParser):
    """Every table of one section: rows of (row class, [cell texts])."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[tuple[str, list[str]]]] = []
        self.row: list[str] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.row, self.row_class = [], dict(attrs).get("class") or ""
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.tables[-1].append((self.row_class, self.row))
            self.row = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def _section(page: str, anchor: str) -> str:
    return re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S).group(1)


def _tables(page: str, anchor: str) -> list[pd.DataFrame]:
    parser = _Tables()
    parser.feed(_section(page, anchor))
    frames = []
    for rows in parser.tables:
        (_, header), body = rows[0], rows[1:]
        frame = pd.DataFrame([cells for _, cells in body], columns=header)
        frame.insert(0, "_class", [cls for cls, _ in body])
        frames.append(frame)
    return frames


def _make_store(path, *, ids=None, n=120, strengths=(1, 2, 3), noise=1.5) -> LogitStore:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    store = LogitStore.create(path, np.arange(n) if ids is None else ids, [CLASSES[k] for k in y], classes=CLASSES,
                              n_folds=3, test_ids=np.arange(20))
    for i, strength in enumerate(strengths):
        store.put(f"m{i}", np.eye(4)[y] * strength + rng.normal(size=(n, 4)) * noise, rng.normal(size=(20, 4)))
    return store


@pytest.fixture
def store(tmp_path):
    return _make_store(tmp_path / "s")


def test_the_submitted_row_is_marked_and_a_rejected_step_is_set_apart(store):
    stack = fit_stack(store, StackConfig(recipe="average", metric="accuracy"))  # offsets rejected on this data
    assert stack.report["kept"].tolist()[-1] is False
    page = write_report(store).read_text()
    board, = [t for t in _tables(page, "leaderboard") if "submission" in t.columns]
    marked = board[board["_class"] == "submitted"]
    assert marked["step"].tolist() == ["average"] and marked["submission"].tolist() == ["\u25c0 submitted"]
    rejected = board[board["_class"] == "rejected"]
    assert rejected["step"].tolist() == ["+thresholds"] and rejected["submission"].tolist() == ["rejected: not applied"]
    assert set(board.loc[~board["_class"].isin(["submitted", "rejected"]), "submission"]) == {""}


def _report(steps: list[tuple[str, str, bool]]) -> pd.DataFrame:
    return pd.DataFrame([{"step": s, "kind": k, "kept": kept, "log_loss": 0.5 + 0.1 * i, "accuracy": 0.9 - 0.1 * i}
                         for i, (s, k, kept) in enumerate(steps)])


BASE = [("m0", "base model", True), ("m1", "base model", True), ("mean_probs", "reference", True)]


@pytest.mark.parametrize("steps, expected", [
    ([("soft_vote", "stage", True)], "soft_vote"),
    ([("lr", "stage", True), ("gbm", "stage", True), ("blend", "blend", True), ("+temperature", "calibration", True)],
     "+temperature"),
    ([("lr", "stage", True), ("blend", "blend", True), ("+temperature", "calibration", False)], "blend"),
    ([("vote", "stage", True), ("+temperature", "calibration", True), ("+thresholds", "decision", False)],
     "+temperature"),
    ([("vote", "stage", True), ("+thresholds", "decision", True)], "+thresholds"),
])
def test_submitted_row_is_the_last_step_the_stack_applies(steps, expected):
    report = _report(BASE + steps)
    assert report.loc[submitted_row(report), "step"] == expected


def test_leaderboard_bars_start_at_zero_and_rejected_steps_are_hatched():
    from matplotlib.patches import Rectangle

    from ensemble_kit.report import figures

    report = _report(BASE + [("vote", "stage", True), ("+temperature", "calibration", True),
                             ("+thresholds", "decision", False)])
    report["log_loss"] = [0.90, 0.85, 0.84, 0.83, 0.82, 0.82]  # close values: a zoomed axis would start near 0.8
    fig = figures.leaderboard_figure(report, "accuracy", submitted=submitted_row(report))
    for ax in fig.axes:
        assert ax.get_xlim()[0] == 0.0
        bars = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(bars) == 6
        assert [b.get_hatch() for b in bars] == [None] * 5 + ["///"]  # only the rejected step
        edges = [b.get_linewidth() for b in bars]
        assert edges.index(max(edges)) == 4 and edges.count(max(edges)) == 1  # the submitted one, +temperature
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]  # the axes share them
    assert labels[4] == "+temperature [submitted]" and labels[5] == "+thresholds"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "rejected step (not applied)" in legend and "submitted (what the submission uses)" in legend


def test_spread_across_folds_scores_each_fold(store):
    stack = fit_stack(store, StackConfig(recipe="hill_climb", metric="accuracy"))
    page = write_report(store).read_text()
    table, = _tables(page, "fold-spread")
    assert table["model or step"].tolist() == ["m0", "m1", "m2", "mean of the models", "stack (hill_climbing)"]
    assert table.loc[table["_class"] == "submitted", "model or step"].tolist() == ["stack (hill_climbing)"]
    folds, y = store.folds, store.y
    lp = log_softmax(store.oof(["m1"]))[0]
    expected = [scores(y[folds == k], lp[folds == k], kind="logits")["accuracy"] for k in range(3)]
    row = table.set_index("model or step").loc["m1"]
    assert [float(row[f"fold {k}"]) for k in range(3)] == pytest.approx(expected, abs=5e-5)
    assert float(row["min"]) == pytest.approx(min(expected), abs=5e-5)
    stack_row = table.set_index("model or step").loc["stack (hill_climbing)"]
    mine = [scores(y[folds == k], stack.oof_proba[folds == k], kind="probs", labels=stack.oof_labels[folds == k])
            ["accuracy"] for k in range(3)]
    assert [float(stack_row[f"fold {k}"]) for k in range(3)] == pytest.approx(mine, abs=5e-5)
    assert float(stack_row["mean"]) == pytest.approx(np.mean(mine), abs=5e-5)
    assert re.search(r"beats the best base model \(m2\) in \d of 3 folds", page)
    assert (store.path / "report" / "fold_spread.png").is_file()


def test_per_class_table_for_the_stack_and_the_best_model(store):
    stack = fit_stack(store, StackConfig(recipe="hill_climb", metric="f1_macro"))
    page = write_report(store).read_text()
    table, = _tables(page, "per-class")
    assert table["class"].tolist() == CLASSES and table["support"].tolist() == ["30"] * 4
    precision, recall, f1, _ = precision_recall_fscore_support(store.y, stack.oof_labels, labels=range(4),
                                                               zero_division=0)
    np.testing.assert_allclose(table["precision"].astype(float), precision, atol=5e-5)
    np.testing.assert_allclose(table["recall"].astype(float), recall, atol=5e-5)
    np.testing.assert_allclose(table["f1"].astype(float), f1, atol=5e-5)
    best = log_softmax(store.oof(["m2"]))[0].argmax(axis=1)  # the strongest model
    _, _, best_f1, _ = precision_recall_fscore_support(store.y, best, labels=range(4), zero_division=0)
    np.testing.assert_allclose(table["best model f1"].astype(float), best_f1, atol=5e-5)
    np.testing.assert_allclose(table["f1 gain"].astype(float), f1 - best_f1, atol=1e-4)
    assert "best base model by OOF f1_macro (m2, arg-max)" in page
    saved = pd.read_csv(store.path / "report" / "per_class.csv")
    np.testing.assert_allclose(saved["f1"], f1)


def _cards(page: str) -> list[str]:
    return re.findall(r"<figure>(.*?)</figure>", _section(page, "misclassified"), re.S)


def _expected_mistakes(probs: np.ndarray, labels: np.ndarray, y: np.ndarray) -> list[int]:
    wrong = np.flatnonzero(labels != y)
    confidence = probs[wrong, labels[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:MISCLASSIFIED_SHOWN].tolist()


def test_most_confident_mistakes_without_known_images_are_listed_with_a_note(store):
    stack = fit_stack(store, StackConfig(recipe="hill_climb"))
    page = write_report(store).read_text()
    cards = _cards(page)
    rows = _expected_mistakes(stack.oof_proba, stack.oof_labels, store.y)
    assert len(cards) == len(rows) == MISCLASSIFIED_SHOWN
    for card, row in zip(cards, rows):
        assert f"<b>{store.train_ids[row]}</b> (fold {store.folds[row]})" in card
        assert f"true: {CLASSES[store.y[row]]} (p={stack.oof_proba[row, store.y[row]]:.3f})" in card
        decided = stack.oof_labels[row]
        assert f"predicted: {CLASSES[decided]} (p={stack.oof_proba[row, decided]:.3f})" in card
        assert "<img" not in card
    assert "No thumbnails: the store does not record where its images are" in page


def _thumbnails(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data)))
            for data in re.findall(r'<img alt="image [^"]*"[^>]*src="data:image/png;base64,([^"]+)"',
                                   _section(page, "misclassified"))]


def test_a_digits_project_shows_thumbnails_of_its_mistakes(tmp_path):
    from ensemble_kit.data.embedded import load_digits_images

    train, _ = load_digits_images(image_size=16)
    n = len(train.ids)
    rng = np.random.default_rng(1)
    store = LogitStore.create(tmp_path / "s", train.ids, train.labels, classes=list(range(10)), n_folds=3)
    for i in range(2):
        store.put(f"m{i}", np.eye(10)[train.labels] * 1.5 + rng.normal(size=(n, 10)))
    project = store.workspace.project_dir(create=True)
    (project / "project.yaml").write_text("store: s\ndata:\n  format: digits\n  image_size: 16\n")
    page = write_report(store).read_text()  # no stack: the mean of the models decides
    thumbs = _thumbnails(page)
    assert len(thumbs) == len(_cards(page)) == MISCLASSIFIED_SHOWN
    assert {t.size for t in thumbs} == {(96, 96)}  # 16-pixel digits enlarged 6x, nearest neighbour
    probs = np.exp(log_softmax(store.oof(["m0", "m1"]))).mean(axis=0)
    first = _expected_mistakes(probs, probs.argmax(axis=1), store.y)[0]
    expected = np.asarray(Image.fromarray(train.images[first]).resize((96, 96), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(np.asarray(thumbs[0].convert("RGB")), expected)  # the right image, first
    assert "No thumbnails" not in page


def _write_png(path, value: int, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_a_folder_project_reads_its_images_safely_and_names_unreadable_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the report runs where the project was trained
    root = tmp_path / "data"
    ids = []
    for i in range(40):
        ids.append(f"{CLASSES[i % 4]}/img{i:02d}.png")
        _write_png(root / "train" / ids[-1], 5 * i, size=(300, 200) if i == 0 else (40, 30))
    (root / "train" / ids[1]).write_bytes(b"not a png at all")
    store = _make_store(tmp_path / "s", ids=ids, n=40, strengths=(0.3, 0.5), noise=1.0)  # weak models: many mistakes
    confident = np.zeros((40, 4))
    confident[[0, 1], [1, 2]] = 9.0  # rows 0 and 1: confident mistakes, among those shown
    store.put("sure", confident, np.zeros((20, 4)))
    (store.workspace.project_dir(create=True) / "project.yaml").write_text(
        f"store: s\ndata:\n  format: folder\n  root: {root}\n  train: train\n")
    page = write_report(store).read_text()
    cards = _cards(page)
    assert len(cards) == MISCLASSIFIED_SHOWN
    shown = [re.search(r"<b>(.*?)</b>", card).group(1) for card in cards]
    big, broken = shown.index(ids[0]), shown.index(ids[1])
    assert "unreadable: Cannot decode image" in cards[broken] and "<img" not in cards[broken]
    assert all("<img" in card for i, card in enumerate(cards) if i != broken)
    assert "1 of these images could not be read" in page
    sizes = [t.size for t in _thumbnails(page)]
    assert sizes.pop(big - (big > broken)) == (128, 85)  # 300x200 shrunk to 128 on its long side
    assert set(sizes) == {(120, 90)}  # 40x30 enlarged 3x, to at least 96
    # a data root that is not there (paths are relative to the current directory): a note, no failure
    (store.workspace.project_dir() / "project.yaml").write_text("store: s\ndata:\n  format: folder\n"
                                                                "  root: no/such/folder\n  train: train\n")
    page = write_report(store).read_text()
    assert "No thumbnails: the training images named in" in page and "cannot be opened" in page
    assert "<img" not in _section(page, "misclassified")


def test_a_csv_project_never_reads_an_image_outside_its_folder(tmp_path, monkeypatch):
    """A store may come from elsewhere, and its saved settings with it: an id naming ../ is not read."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data"
    ids = [f"img{i:02d}" for i in range(40)]
    for image_id in ids[1:]:
        _write_png(root / "images" / f"{image_id}.png", 100)
    ids[0] = "../secret"
    _write_png(root / "secret.png", 200)
    pd.DataFrame({"id": ids, "label": [CLASSES[i % 4] for i in range(40)]}).to_csv(root / "train.csv", index=False)
    store = _make_store(tmp_path / "s", ids=ids, n=40, strengths=(0.3, 0.5), noise=1.0)
    confident = np.zeros((40, 4))
    confident[0, 1] = 9.0  # row 0 is a confident mistake, so it is shown
    store.put("sure", confident, np.zeros((20, 4)))
    (store.workspace.project_dir(create=True) / "project.yaml").write_text(
        f"store: s\ndata:\n  format: csv\n  root: {root}\n  train: train.csv\n  train_images: images\n"
        "  ext: .png\n")
    page = write_report(store).read_text()
    cards = {re.search(r"<b>(.*?)</b>", card).group(1): card for card in _cards(page)}
    assert "lies outside the data folder" in cards["../secret"] and "<img" not in cards["../secret"]
    assert all("<img" in card for image_id, card in cards.items() if image_id != "../secret")


def test_a_received_store_never_makes_the_report_read_a_folder_elsewhere(tmp_path, monkeypatch):
    """Its saved data root points outside the current folder and the store: nothing there is read."""
    elsewhere = tmp_path / "private"
    ids = [f"{CLASSES[i % 4]}/img{i:02d}.png" for i in range(40)]
    for image_id in ids:
        _write_png(elsewhere / "train" / image_id, 77)
    store = _make_store(tmp_path / "work" / "s", ids=ids, n=40, strengths=(0.3, 0.5), noise=1.0)
    (store.workspace.project_dir(create=True) / "project.yaml").write_text(
        f"store: s\ndata:\n  format: folder\n  root: {elsewhere}\n  train: train\n")
    monkeypatch.chdir(tmp_path / "work")
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    page = write_report(store).read_text()
    assert "lies outside the current folder and the store" in page
    assert "<img" not in _section(page, "misclassified")
    assert not [f for f in opened if f.startswith(str(elsewhere))]


def test_images_can_be_given_and_a_damaged_project_yaml_is_a_note(store):
    images = ArrayImageSource(np.zeros((120, 20, 20, 3), np.uint8), ids=store.train_ids)
    page = write_report(store, images=images).read_text()
    assert len(_thumbnails(page)) == MISCLASSIFIED_SHOWN
    (store.workspace.project_dir(create=True) / "project.yaml").write_text("data: [unclosed\n")
    page = write_report(store).read_text()
    assert "No thumbnails:" in page and "cannot be read" in page


def test_the_report_shows_the_trials_a_reused_study_really_has(store):
    import optuna

    first = fit_stack(store, StackConfig(recipe="aoi", n_trials=6, name="first"))
    second = fit_stack(store, StackConfig(recipe="aoi", n_trials=3, name="second"))
    assert second.summary.study_names == first.summary.study_names  # the same studies, reused
    page = write_report(store, stack="second").read_text()
    studies = _tables(page, "leaderboard")[-1]
    assert studies["study"].tolist() == list(second.summary.study_names)
    assert studies["trials"].tolist() == ["6"] * len(studies)  # not the 3 this fit asked for
    assert set(studies["direction"]) == {"minimize"}
    assert f"{len(studies)}, {6 * len(studies)} trials in all (this fit asked for 3 per study" in page
    for name in second.summary.study_names:
        study = optuna.load_study(study_name=name, storage=store.workspace.study_storage())
        assert study.user_attrs["n_trials"] == 6 and float(studies.set_index("study").loc[name, "best value"]) == \
            pytest.approx(min(t.value for t in study.trials), abs=5e-5)
    assert load_stack(store, "second").info.settings["n_trials"] == 3
