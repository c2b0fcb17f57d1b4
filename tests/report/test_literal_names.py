"""Class, model, stack and step names are data: the report's figures show them as written.

matplotlib reads ``$...$`` as mathtext (``$x^$`` and ``$\\frac{a}$`` make it raise, ``$x$`` would
be drawn as an italic x) and, under ``text.usetex``, hands ``_`` and ``%`` to LaTeX. None of that
may happen to a name taken from the user's data.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from ensemble_kit import LogitStore
from ensemble_kit.project import StackConfig, fit_stack
from ensemble_kit.report import write_report

# invalid mathtext (raises), valid mathtext (would render as math), LaTeX specials
CLASSES = ["$x^$", "$\\frac{a}$", "$x$", "_", "%", "a_b^c"]
# entry names cannot hold '$' (they become file names), but the figure functions take any text
NAMES = ["m_$1$", "$\\frac{a}$", "$x$"]


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(180) % len(CLASSES)
    store = LogitStore.create(tmp_path / "s", np.arange(180), [CLASSES[k] for k in y], classes=CLASSES, n_folds=3,
                              test_ids=np.arange(12))
    for i in range(3):
        store.put(f"m_{i}", np.eye(len(CLASSES))[y] * (1 + i) + rng.normal(size=(180, len(CLASSES))) * 1.5,
                  rng.normal(size=(12, len(CLASSES))))
    return store


def _drawn_texts(fig) -> list:
    """Every non-empty Text artist of ``fig`` after drawing it outside any report setting."""
    from matplotlib.text import Text

    fig.canvas.draw()
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def test_report_draws_math_like_class_names_as_written(store, monkeypatch):
    import ensemble_kit.report.html as report_html

    fit_stack(store, StackConfig(recipe="aoi", metric="accuracy", n_trials=5))  # thresholds: a figure per class
    drawn: dict[str, list] = {}
    build = report_html._Report._figure

    def spy(self, name, fig):
        drawn[name] = [(t.get_text(), t.get_parse_math(), t.get_usetex()) for t in _drawn_texts(fig)]
        return build(self, name, fig)

    monkeypatch.setattr(report_html._Report, "_figure", spy)
    path = write_report(store)
    html = path.read_text()
    # every figure but the training curves (imported entries have no training history)
    assert sorted(drawn) == sorted(["leaderboard", "fold_spread", "correlation", "weights", "confusion", "thresholds",
                                    "reliability"])
    assert html.count('src="data:image/png;base64,') == len(drawn)
    assert all((path.parent / f"{name}.png").stat().st_size > 0 for name in drawn)
    confusion = {text for text, _, _ in drawn["confusion"]}
    assert set(CLASSES) <= confusion
    thresholds = {text.split("\n")[0] for text, _, _ in drawn["thresholds"]}
    assert set(CLASSES) <= thresholds
    from_data = [(text, math, tex) for texts in drawn.values() for text, math, tex in texts
                 if "$" in text or "_" in text]
    assert from_data and all(math is False and tex is False for _, math, tex in from_data), from_data
    assert "$\\frac{a}$" in html and "a_b^c" in html  # the tables hold them too, HTML-escaped where needed


def test_report_ignores_a_usetex_matplotlibrc(store):
    import matplotlib

    # LaTeX would choke on '%' and '_' (or is not installed): names stay plain text
    with matplotlib.rc_context({"text.usetex": True}):
        path = write_report(store)
    assert (path.parent / "confusion.png").is_file()


def test_every_figure_renders_names_as_written():
    import matplotlib

    from ensemble_kit.report import figures

    rng = np.random.default_rng(0)
    y = np.arange(30) % 3
    probs = rng.dirichlet(np.ones(3), size=30)
    scores = pd.DataFrame({"precision": rng.random(3), "recall": rng.random(3), "f1": rng.random(3)})
    history = pd.DataFrame({"epoch": [0, 1], "val_loss": [1.0, 0.8], "train_loss": [1.1, 0.7]})
    board = pd.DataFrame({"step": NAMES, "kind": ["base model", "reference", "stage"], "log_loss": [0.5, 0.4, 0.3],
                          "accuracy": [0.7, 0.8, 0.9]})
    built = {
        "leaderboard": (figures.leaderboard_figure(board, "accuracy", submitted=2),
                        [*NAMES[:2], f"{NAMES[2]} [submitted]"]),
        "fold_spread": (figures.fold_spread_figure(pd.DataFrame(rng.random((3, 2)), index=NAMES,
                                                                columns=["fold 0", "fold 1"]), "accuracy",
                                                   submitted=NAMES[2]),
                        [*NAMES[:2], f"{NAMES[2]} [submitted]"]),
        "correlation": (figures.correlation_figure(NAMES, rng.normal(size=(3, 30, 3))), NAMES),
        "weights": (figures.weights_figure({"$s$: model weights": dict(zip(NAMES, [0.2, 0.3, 0.5]))}),
                    [*NAMES, "$s$: model weights"]),
        "confusion": (figures.confusion_figure(y, probs.argmax(axis=1), NAMES), NAMES),
        "thresholds": (figures.threshold_figure(NAMES, scores, scores, ["p>0.40", "", "+0.10"]), NAMES),
        "reliability": (figures.reliability_figure({f"best model ({NAMES[0]})": figures.reliability_curve(probs, y)}),
                        [f"best model ({NAMES[0]})"]),
        "training_curves": (figures.training_curves_figure({NAMES[0]: {0: history}}),
                            [f"{NAMES[0]} (solid: validation, dashed: train)"]),
    }
    for name, (fig, expected) in built.items():
        buffer = io.BytesIO()
        # drawn outside the report's settings, as a caller of these functions would; SVG text kept as text
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            fig.savefig(buffer, format="svg")
        svg = buffer.getvalue().decode("utf-8")
        for text in expected:
            assert f">{text}<" in svg, (name, text)
        matplotlib.pyplot.close(fig)
