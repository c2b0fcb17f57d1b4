"""``ensemble-kit report``: one self-contained HTML file (images embedded) plus the PNGs.

Sections (each an ``<section id=...>``): ``leaderboard``, ``correlation``, ``weights``,
``confusion``, ``thresholds``, ``reliability``, ``training-curves``. A section whose input does
not exist (no stack fitted yet, no training history for imported predictions) says so in
place, so the layout of every report is the same.
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.metrics import precision_recall_fscore_support

from ensemble_kit.errors import StoreError
from ensemble_kit.metrics import get_metric, log_softmax
from ensemble_kit.project.results import StackResult, list_stacks, load_stack, results_table
import ensemble_kit.report.figures as figures
from ensemble_kit.store import LogitStore
from ensemble_kit.store._files import write_bytes, write_text

logger = logging.getLogger(__name__)



def write_report(store: LogitStore, *, stack: str | None = None, out_dir: str | Path | None = None) -> Path:
    """Write ``report.html`` and one PNG per figure; returns the HTML path.

    Parameters
    ----------
    store : LogitStore
    stack : str, optional
        Saved stack to report (default: the most recent one; base models only if none).
    out_dir : path, optional
        Default ``STORE/report``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from ensemble_kit import LogitStore
    >>> y = np.arange(60) % 3
    >>> store = LogitStore.create(tempfile.mkdtemp() + "/s", np.arange(60), y, [0, 1, 2], n_folds=3)
    >>> for i in range(2):
    ...     _ = store.put(f"m{i}", np.eye(3)[y] * (i + 1) + np.random.default_rng(i).normal(size=(60, 3)))
    >>> path = write_report(store)  # base models only: no stack fitted yet
    >>> path.name, path.read_text().count("<section id=")
    ('report.html', 7)
    """
    if out_dir is None:
        out = store.workspace.report_dir(create=True)
    else:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
    models = store.models()
    if not models:
        raise StoreError(f"Store {str(store.path)!r} has no complete model to report on.")
    result = load_stack(store, stack) if (stack is not None or list_stacks(store)) else None
    builder = _Report(store, result, models, out)
    for build_section in _Report.SECTIONS.values():
        build_section(builder)
    path = write_text(out / "report.html", builder.render())
    logger.info("report written to %s", path)
    return path


class _Report:
    def __init__(self, store: LogitStore, stack: StackResult | None, models: list[str], out: Path) -> None:
        self.store, self.stack, self.out = store, stack, out
        self.models = stack.models if stack is not None else models
        self.metric = stack.metric if stack is not None else "log_loss"
        self.y = store.y
        self.oof_log_probs = log_softmax(store.oof(self.models))
        self.parts: list[str] = []

    # ------------------------------------------------------------------ helpers
    def _figure(self, name: str, fig: Any) -> str:
        png = figures.png_bytes(fig, dpi=110)  # names in the figure are data: drawn as written
        write_bytes(self.out / f"{name}.png", png)
        fig.clf()
        import matplotlib.pyplot as plt

        plt.close(fig)
        data = base64.b64encode(png).decode("ascii")
        return f'<img alt="{name}" src="data:image/png;base64,{data}">'

    def _section(self, anchor: str, title: str, body: str) -> None:
        self.parts.append(f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>')

    @staticmethod
    def _table(frame: pd.DataFrame) -> str:
        return frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="", border=0, classes="tbl")

    @staticmethod
    def _note(text: str) -> str:
        return f'<p class="note">{html.escape(text)}</p>'

    # ------------------------------------------------------------------ sections
    def section_leaderboard(self) -> None:
        table = results_table(self.store, self.stack)
        body = self._note("OOF columns are honest: every score is computed on rows the scored step never saw "
                          "while fitting (nested on the store's folds).")
        if "test_log_loss" in table.columns:  # the project kept held-out test labels
            body += self._note("test_* columns use the held-out test labels, which no step ever saw.")
        body += self._table(table)
        if self.stack is not None:
            body += self._figure("leaderboard", figures.leaderboard_figure(self.stack.report, self.metric))
            info, summary = self.stack.info, self.stack.summary
            recipe = f"recipe {info.recipe!r} ({info.description}), " if info is not None and info.recipe else ""
            body = self._note(f"Stack {self.stack.name!r}: {recipe}metric {summary.metric}, fitted in "
                              f"{summary.fit_seconds:.1f}s.") + body
        self._section("leaderboard", "Leaderboard: base models and ensemble steps", body)

    def section_correlation(self) -> None:
        body = self._note("High correlation means little to gain from combining two models; stacking profits from "
                          "accurate models that disagree.")
        body += self._figure("correlation", figures.correlation_figure(self.models, self.oof_log_probs))
        self._section("correlation", "Correlation of the models' OOF predictions", body)

    def section_weights(self) -> None:
        if self.stack is None:
            self._section("weights", "Ensemble weights", self._note("No stack fitted yet: run `ensemble-kit stack`."))
            return
        summary = self.stack.summary
        panels: dict[str, dict[str, float]] = {}
        for stage in summary.stages:
            if stage.model_weights is not None:
                panels[f"{stage.name}: model weights"] = dict(stage.model_weights)
        if summary.blend_weights is not None:
            panels["blend: stage weights"] = dict(summary.blend_weights)
        # one table per panel: model weights are keyed by model, blend weights by stage, and a
        # model may share a stage's name
        body = "".join(self._note(title) + self._table(pd.DataFrame([values])) for title, values in panels.items())
        if summary.temperature is not None:
            body += self._note(f"Final temperature: {summary.temperature:.4f}.")
        temps = {s.name: s.model_temperatures for s in summary.stages if s.model_temperatures is not None}
        for stage, values in temps.items():
            body += self._note(f"{stage}: per-model temperatures " + ", ".join(f"{k}={v:.3f}" for k, v in values.items()))
        if panels:
            body += self._figure("weights", figures.weights_figure(panels))
        else:
            body += self._note("This recipe has no explicit weights (meta-learners only).")
        self._section("weights", "Ensemble weights", body)

    def _decisions(self) -> tuple[NDArray, NDArray]:
        if self.stack is not None:
            return self.stack.oof_proba, self.stack.oof_labels
        probs = np.exp(self.oof_log_probs).mean(axis=0)
        return probs, probs.argmax(axis=1)

    def section_confusion(self) -> None:
        probs, labels = self._decisions()
        what = "the stack's honest OOF decisions" if self.stack is not None else "the mean of the models' probabilities"
        body = self._note(f"Rows: true class; columns: predicted class; from {what}.")
        body += self._figure("confusion", figures.confusion_figure(self.y, labels, self.store.classes))
        self._section("confusion", "Confusion matrix", body)

    def section_thresholds(self) -> None:
        summary = self.stack.summary if self.stack is not None else None
        classes = self.store.classes
        if summary is not None and summary.thresholds_rejected:
            self._section("thresholds", "Class thresholds", self._note(
                "Class offsets were tuned but rejected: they scored worse than arg-max on held-out folds "
                "(the leaderboard's '+thresholds' row is marked not kept), so decisions stay arg-max."))
            return
        if summary is None or (summary.class_rules is None and summary.class_offsets is None):
            self._section("thresholds", "Class thresholds", self._note(
                "This stack applies no class thresholds: it predicts the most probable class "
                "(log-loss recipes score probabilities, so decisions are left alone)."))
            return
        probs, labels = self._decisions()
        if summary.class_rules is not None:
            rules = summary.class_rules
            setting = [f"p>{rules[c]:.2f}" if c in rules else "" for c in range(len(classes))]
            lead = "Fixed rules: " + ", ".join(f"class {classes[k]}: predict when p > {v}" for k, v in rules.items())
        else:
            setting = [f"{o:+.2f}" for o in summary.class_offsets or ()]
            lead = (f"Per-class log-probability offsets tuned for {summary.thresholds_optimize} "
                    "(decisions nested on the folds).")
        before = _per_class(self.y, probs.argmax(axis=1), len(classes))
        after = _per_class(self.y, labels, len(classes))
        table = pd.DataFrame({"class": [str(c) for c in classes], "setting": setting,
                              **{f"{k} argmax": before[k] for k in before}, **{f"{k} thresholds": after[k] for k in after}})
        body = self._note(lead) + self._table(table)
        body += self._figure("thresholds", figures.threshold_figure(classes, before, after, setting))
        self._section("thresholds", "Effect of each class threshold", body)

    def section_reliability(self) -> None:
        probs, _ = self._decisions()
        curves = {"stack (final)" if self.stack is not None else "mean of models": figures.reliability_curve(probs, self.y)}
        board = {name: get_metric("log_loss")(self.y, lp, kind="logits") for name, lp in zip(self.models, self.oof_log_probs)}
        best = min(board, key=board.get)
        curves[f"best model ({best})"] = figures.reliability_curve(np.exp(self.oof_log_probs[self.models.index(best)]), self.y)
        body = self._note("Points on the diagonal are calibrated: among samples predicted with confidence p, a "
                          "fraction p is right.")
        body += self._figure("reliability", figures.reliability_figure(curves))
        self._section("reliability", "Reliability diagram", body)

    def section_training_curves(self) -> None:
        histories: dict[str, dict[int, pd.DataFrame]] = {}
        for name in self.models:
            found = {}
            for fold, meta in sorted(self.store.entry(name).fold_meta.items()):
                history = meta.get("history")
                if isinstance(history, dict) and history.get("epoch"):
                    try:
                        found[fold] = pd.DataFrame(history)
                    except ValueError:  # columns of unequal length: not a history train_cv wrote
                        logger.warning("entry %r fold %d: unreadable training history, not plotted", name, fold)
            if found:
                histories[name] = found
        missing = [m for m in self.models if m not in histories]
        body = ""
        if histories:
            body += self._figure("training_curves", figures.training_curves_figure(histories))
        if missing:
            body += self._note(f"No training history for {missing} (imported predictions or trained elsewhere).")
        self._section("training-curves", "Per-fold training curves", body)

    # ------------------------------------------------------------------ page
    def render(self) -> str:
        store = self.store
        head = (f"{len(store.train_ids):,} training images, "
                f"{0 if store.test_ids is None else len(store.test_ids):,} test images, {store.n_classes} classes, "
                f"{store.n_folds} folds, {len(self.models)} models")
        nav = " · ".join(f'<a href="#{s}">{s}</a>' for s in SECTIONS)
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ensemble_kit report: {html.escape(store.path.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }}
.tbl {{ border-collapse: collapse; font-size: .85em; margin: .5em 0; }}
.tbl th, .tbl td {{ padding: .25em .6em; border-bottom: 1px solid #eee; text-align: right; }}
.tbl td:first-child, .tbl th:first-child {{ text-align: left; }}
.note {{ color: #555; font-size: .9em; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>ensemble_kit report: {html.escape(str(store.path))}</h1>
<p>{html.escape(head)}</p><nav>{nav}</nav>
{''.join(self.parts)}
<footer><p class="note">Optuna studies: <code>ensemble-kit dashboard {html.escape(str(store.path))}</code></p></footer>
</body></html>
"""


    #: every section of the page, in order: its id (the anchor) and the method that writes it
    SECTIONS = {"leaderboard": section_leaderboard, "correlation": section_correlation, "weights": section_weights,
                "confusion": section_confusion, "thresholds": section_thresholds,
                "reliability": section_reliability, "training-curves": section_training_curves}


SECTIONS = tuple(_Report.SECTIONS)


def _per_class(y: NDArray, labels: NDArray, n_classes: int) -> pd.DataFrame:
    precision, recall, f1, _ = precision_recall_fscore_support(y, labels, labels=np.arange(n_classes), zero_division=0)
    return pd.DataFrame({"precision": precision, "recall": recall, "f1": f1})
