"""``ensemble-kit report``: one self-contained HTML file (images embedded) plus the PNGs.

Sections (each an ``<section id=...>``): ``leaderboard``, ``fold-spread``, ``correlation``,
``weights``, ``confusion``, ``per-class``, ``misclassified``, ``thresholds``, ``reliability``,
``training-curves``. A section whose input does not exist (no stack fitted yet, no training
history for imported predictions, no known image files) says so in place, so the layout of every
report is the same. The page holds no script and loads nothing: every figure and thumbnail is a
``data:`` URI.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.metrics import precision_recall_fscore_support

from ensemble_kit.errors import EnsembleKitError, StoreError, ValidationError
from ensemble_kit.metrics import get_metric, log_softmax, scores
from ensemble_kit.project.results import StackResult, list_stacks, load_stack, results_table
import ensemble_kit.report.figures as figures
from ensemble_kit.store import LogitStore
from ensemble_kit.store._files import write_bytes, write_text

logger = logging.getLogger(__name__)

#: How many misclassified OOF rows the report shows (the most confident first).
MISCLASSIFIED_SHOWN = 12
#: Thumbnails are at most this many pixels on a side; smaller images are enlarged (by whole
#: factors, nearest neighbour) to at least ``_THUMB_MIN``, so a 32-pixel digit stays sharp.
THUMBNAIL_PX = 128
_THUMB_MIN = 96
# above this many classes the per-class table is folded away (a page of 396 rows hides the rest)
_PER_CLASS_OPEN = 30
# the project settings a store keeps are read up to this size (a store may come from elsewhere)
_SETTINGS_MAX_BYTES = 1 << 20


def write_report(store: LogitStore, *, stack: str | None = None, out_dir: str | Path | None = None,
                 images: Any = None) -> Path:
    """Write ``report.html`` and one PNG per figure; returns the HTML path.

    Parameters
    ----------
    store : LogitStore
    stack : str, optional
        Saved stack to report (default: the most recent one; base models only if none).
    out_dir : path, optional
        Default ``STORE/report``.
    images : ImageSource, optional
        The training images, for thumbnails of the most confidently misclassified rows; its ids
        must be the store's training ids. Default: the data a project store was trained on
        (``STORE/project/project.yaml``'s ``data:`` section); a store without one (``init``,
        imported predictions) lists those rows without thumbnails.

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
    ('report.html', 10)
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
    builder = _Report(store, result, models, out, images=images)
    for build_section in _Report.SECTIONS.values():
        build_section(builder)
    path = write_text(out / "report.html", builder.render())
    logger.info("report written to %s", path)
    return path


def submitted_row(report: pd.DataFrame) -> Any:
    """Index label of the report row whose predictions the submission uses, or ``None``.

    That is the last step the stack applies: the blend (or the single stage), then the
    temperature and the class decisions when they were kept. A step with ``kept`` False was
    fitted and scored but not applied, so the row before it is what is submitted.
    """
    steps = report[~report["kind"].isin(["base model", "reference"])]
    applied = steps[~figures.is_rejected(steps)]
    return applied.index[-1] if len(applied) else None


class _Report:
    def __init__(self, store: LogitStore, stack: StackResult | None, models: list[str], out: Path, *,
                 images: Any = None) -> None:
        self.store, self.stack, self.out, self.images = store, stack, out, images
        self.models = stack.models if stack is not None else models
        self.metric = stack.metric if stack is not None else "log_loss"
        self.y = store.y
        self.folds = store.folds
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
    def _table(frame: pd.DataFrame, *, row_classes: list[str] | None = None) -> str:
        """``frame`` as an HTML table, every header and cell escaped (names are data); floats to 4
        decimals, missing values empty; ``row_classes`` styles rows (submitted, rejected)."""
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
        rows = []
        for i, values in enumerate(frame.itertuples(index=False, name=None)):
            style = row_classes[i] if row_classes is not None and row_classes[i] else ""
            cells = "".join(f"<td>{_cell(v)}</td>" for v in values)
            rows.append(f'<tr class="{style}">{cells}</tr>' if style else f"<tr>{cells}</tr>")
        return f'<table class="tbl"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'

    @staticmethod
    def _note(text: str) -> str:
        return f'<p class="note">{html.escape(text)}</p>'

    def _decisions(self) -> tuple[NDArray, NDArray]:
        if self.stack is not None and self.stack.oof_proba is not None:
            return self.stack.oof_proba, self.stack.oof_labels
        probs = np.exp(self.oof_log_probs).mean(axis=0)
        return probs, probs.argmax(axis=1)

    def _decided_by(self) -> str:
        return "the stack's honest OOF decisions" if self.stack is not None else "the mean of the models' probabilities"

    def _model_scores(self, metric: str) -> dict[str, float]:
        return {name: scores(self.y, lp, kind="logits")[metric] for name, lp in zip(self.models, self.oof_log_probs)}

    def _best_model(self) -> str:
        """The base model with the best OOF score in the report's metric."""
        board = self._model_scores(self.metric)
        pick = max if get_metric(self.metric).greater_is_better else min
        return pick(board, key=board.get)

    # ------------------------------------------------------------------ sections
    def section_leaderboard(self) -> None:
        table = results_table(self.store, self.stack)
        body = self._note("OOF columns are honest: every score is computed on rows the scored step never saw "
                          "while fitting (nested on the store's folds).")
        if "test_log_loss" in table.columns:  # the project kept held-out test labels
            body += self._note("test_* columns use the held-out test labels, which no step ever saw.")
        classes: list[str] = [""] * len(table)
        if self.stack is not None:
            chosen = submitted_row(self.stack.report)
            rejected = figures.is_rejected(table)
            marks = []
            for position, label in enumerate(table.index):
                if label == chosen:
                    marks.append("\u25c0 submitted")
                    classes[position] = "submitted"
                elif rejected[position]:
                    marks.append("rejected: not applied")
                    classes[position] = "rejected"
                else:
                    marks.append("")
            table.insert(2, "submission", marks)
            body += self._note("\u25c0 submitted: the row whose OOF predictions are those of the submission (the last "
                               "step the stack applies). Rejected steps were fitted and scored, but made the nested "
                               "score worse, so the submission does not apply them.")
        body += self._table(table, row_classes=classes)
        if self.stack is not None:
            body += self._figure("leaderboard", figures.leaderboard_figure(self.stack.report, self.metric,
                                                                           submitted=submitted_row(self.stack.report)))
            info, summary = self.stack.info, self.stack.summary
            recipe = f"recipe {info.recipe!r} ({info.description}), " if info is not None and info.recipe else ""
            body = self._note(f"Stack {self.stack.name!r}: {recipe}metric {summary.metric}, fitted in "
                              f"{summary.fit_seconds:.1f}s.") + body
            body += self._studies()
        self._section("leaderboard", "Leaderboard: base models and ensemble steps", body)

    def _studies(self) -> str:
        """The stack's Optuna studies with the trials each really holds (a study reused from an
        earlier fit keeps its trials, whatever ``n_trials`` this fit asked for)."""
        assert self.stack is not None
        names = list(self.stack.summary.study_names)
        if not names:
            return ""
        info = self.stack.info
        asked = info.settings.get("n_trials") if info is not None else None
        storage = info.settings.get("storage") if info is not None else None
        lead = f"Optuna studies of this stack: {len(names)}"
        if storage is not None:
            return self._note(f"{lead}, in the database given with --storage ({storage}): open them with "
                              f"`ensemble-kit dashboard {self.store.path} --storage URL`.")
        found = _read_studies(self.store, names)
        if isinstance(found, str):
            return self._note(f"{lead}; their trials cannot be shown: {found}")
        total = int(found["trials"].sum())
        summary = f"{lead}, {total:,} trials in all"
        if asked is not None:
            summary += f" (this fit asked for {asked} per study; a study reused from an earlier fit keeps its own)"
        return (f"<details><summary>{html.escape(summary)}</summary>"
                + self._note("trials: the completed trials each study holds (its user attribute n_trials).")
                + self._table(found) + "</details>")

    def section_fold_spread(self) -> None:
        metric = self.metric
        per_fold: dict[str, list[float]] = {}
        ks = [int(k) for k in np.unique(self.folds)]
        for name, lp in zip(self.models, self.oof_log_probs):
            per_fold[name] = [scores(self.y[self.folds == k], lp[self.folds == k], kind="logits")[metric] for k in ks]
        mean = np.exp(self.oof_log_probs).mean(axis=0)
        per_fold["mean of the models"] = [scores(self.y[self.folds == k], mean[self.folds == k], kind="probs")[metric]
                                          for k in ks]
        submitted = None
        if self.stack is not None and self.stack.oof_proba is not None:
            step = self.stack.report.loc[submitted_row(self.stack.report), "step"] \
                if submitted_row(self.stack.report) is not None else "stack"
            submitted = f"stack ({step})"
            probs, labels = self._decisions()
            per_fold[submitted] = [scores(self.y[self.folds == k], probs[self.folds == k], kind="probs",
                                          labels=labels[self.folds == k])[metric] for k in ks]
        frame = pd.DataFrame(per_fold, index=[f"fold {k}" for k in ks]).T
        values = frame.to_numpy(dtype=float)
        table = pd.DataFrame({"model or step": frame.index, "mean": values.mean(axis=1), "std": values.std(axis=1),
                              "min": values.min(axis=1), "max": values.max(axis=1),
                              **{column: frame[column].to_numpy() for column in frame.columns}})
        body = self._note(f"OOF {metric} of each fold's held-out rows. The stack's row is the submission's "
                          "predictions; the saved stack keeps no per-row predictions of its intermediate stages, so "
                          "they have no per-fold scores here.")
        if submitted is not None:
            best = self._best_model()
            sign = 1 if get_metric(metric).greater_is_better else -1
            wins = int(sum(sign * (s - b) > 0 for s, b in zip(per_fold[submitted], per_fold[best])))
            body += self._note(f"The stack beats the best base model ({best}) in {wins} of {len(ks)} folds.")
        body += self._table(table, row_classes=["submitted" if n == submitted else "" for n in frame.index])
        body += self._figure("fold_spread", figures.fold_spread_figure(frame, metric, submitted=submitted))
        self._section("fold-spread", "Spread across folds", body)

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

    def section_confusion(self) -> None:
        probs, labels = self._decisions()
        body = self._note(f"Rows: true class; columns: predicted class; from {self._decided_by()}.")
        body += self._figure("confusion", figures.confusion_figure(self.y, labels, self.store.classes))
        self._section("confusion", "Confusion matrix", body)

    def section_per_class(self) -> None:
        classes = self.store.classes
        n = len(classes)
        _, labels = self._decisions()
        best = self._best_model()
        best_labels = self.oof_log_probs[self.models.index(best)].argmax(axis=1)
        mine, theirs = _per_class(self.y, labels, n), _per_class(self.y, best_labels, n)
        table = pd.DataFrame({"class": [str(c) for c in classes], "support": np.bincount(self.y, minlength=n),
                              "precision": mine["precision"], "recall": mine["recall"], "f1": mine["f1"],
                              "best model precision": theirs["precision"], "best model recall": theirs["recall"],
                              "best model f1": theirs["f1"], "f1 gain": mine["f1"] - theirs["f1"]})
        write_text(self.out / "per_class.csv", table.to_csv(index=False))
        body = self._note(f"Per class, from {self._decided_by()} (the decisions the submission makes), next to the "
                          f"best base model by OOF {self.metric} ({best}, arg-max). f1 gain: the first F1 minus the "
                          "best model's. Also saved as per_class.csv.")
        rendered = self._table(table)
        if n > _PER_CLASS_OPEN:
            worst = table.nsmallest(5, "f1")
            body += self._note("Lowest F1: " + ", ".join(f"{c} ({f:.3f})" for c, f in zip(worst["class"], worst["f1"])))
            rendered = f"<details><summary>{n} classes: show the table</summary>{rendered}</details>"
        self._section("per-class", "Per-class precision, recall and F1", body + rendered)

    def section_misclassified(self) -> None:
        probs, labels = self._decisions()
        wrong = np.flatnonzero(labels != self.y)
        title = "Most confident misclassified images"
        if not len(wrong):
            self._section("misclassified", title, self._note(f"No OOF row is misclassified by {self._decided_by()}."))
            return
        confidence = probs[wrong, labels[wrong]]
        rows = wrong[np.argsort(-confidence, kind="stable")][:MISCLASSIFIED_SHOWN]
        classes, ids = self.store.classes, self.store.train_ids
        found, why = self._images()
        body = self._note(f"The {len(rows)} misclassified training rows (of {len(wrong):,}) predicted with the highest "
                          f"confidence, from {self._decided_by()}: each row's prediction comes from models that never "
                          "saw it. Confident mistakes are often label errors or ambiguous images.")
        cards, missing = [], 0
        for i in rows:
            caption = (f"<b>{html.escape(str(ids[i]))}</b> (fold {int(self.folds[i])})<br>"
                       f"true: {html.escape(str(classes[self.y[i]]))} (p={probs[i, self.y[i]]:.3f})<br>"
                       f"predicted: {html.escape(str(classes[labels[i]]))} (p={probs[i, labels[i]]:.3f})")
            picture = ""
            if found is not None:
                picture, problem = _thumbnail(found, str(ids[i]))
                if problem:
                    missing += 1
                    picture = f'<div class="noimg">{html.escape(problem)}</div>'
            cards.append(f"<figure>{picture}<figcaption>{caption}</figcaption></figure>")
        if found is None:
            body += self._note(f"No thumbnails: {why}")
        elif missing:
            body += self._note(f"{missing} of these images could not be read (said on each card).")
        self._section("misclassified", title, body + f'<div class="grid">{"".join(cards)}</div>')

    def _images(self) -> tuple[Any, str]:
        """The training images by id, or ``None`` and why not."""
        if self.images is not None:
            source, root = self.images, None
            why = "the images given (images=) are not an ImageSource with ids and load()"
        else:
            (source, root), why = _project_images(self.store)
        if source is None or not (hasattr(source, "ids") and hasattr(source, "load")):
            return None, why
        return _ImagesById(source, root), ""

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
        board = self._model_scores("log_loss")
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
.tbl tr.submitted td {{ font-weight: 600; background: #eaf2fb; }}
.tbl tr.submitted td:first-child {{ border-left: 4px solid #111; }}
.tbl tr.rejected td {{ color: #777; font-style: italic;
  background: repeating-linear-gradient(135deg, #f3f3f3 0 6px, #fff 6px 12px); }}
.note {{ color: #555; font-size: .9em; }} img {{ max-width: 100%; }}
details summary {{ cursor: pointer; color: #555; font-size: .9em; margin: .5em 0; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: .8em; }}
.grid figure {{ margin: 0; padding: .4em; border: 1px solid #e3e3e3; border-radius: 4px; font-size: .8em; }}
.grid img {{ display: block; margin: 0 auto .3em auto; }}
.grid .noimg {{ color: #a00; font-size: .9em; margin-bottom: .3em; }}
.grid figcaption {{ overflow-wrap: anywhere; }}
</style></head><body>
<h1>ensemble_kit report: {html.escape(str(store.path))}</h1>
<p>{html.escape(head)}</p><nav>{nav}</nav>
{''.join(self.parts)}
<footer><p class="note">Optuna studies: <code>ensemble-kit dashboard {html.escape(str(store.path))}</code></p></footer>
</body></html>
"""

    #: every section of the page, in order: its id (the anchor) and the method that writes it
    SECTIONS = {"leaderboard": section_leaderboard, "fold-spread": section_fold_spread,
                "correlation": section_correlation, "weights": section_weights, "confusion": section_confusion,
                "per-class": section_per_class, "misclassified": section_misclassified,
                "thresholds": section_thresholds, "reliability": section_reliability,
                "training-curves": section_training_curves}


SECTIONS = tuple(_Report.SECTIONS)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.4f}"
    return html.escape(str(value))


def _per_class(y: NDArray, labels: NDArray, n_classes: int) -> pd.DataFrame:
    precision, recall, f1, _ = precision_recall_fscore_support(y, labels, labels=np.arange(n_classes), zero_division=0)
    return pd.DataFrame({"precision": precision, "recall": recall, "f1": f1})


# ---------------------------------------------------------------------- studies
def _read_studies(store: LogitStore, names: list[str]) -> pd.DataFrame | str:
    """The store's studies named ``names`` (in that order): direction, completed trials, best
    value; or why they cannot be read. Nothing is written to the database."""
    import optuna

    from ensemble_kit.ensemble._claims import check_storage

    try:
        if not store.workspace.study_db().is_file():
            return f"the store has no {store.workspace.study_db().name} (fitted with another storage?)."
        url = check_storage(store.workspace.study_storage())
        summaries = {s.study_name: s for s in optuna.get_all_study_summaries(url, include_best_trial=True)}
    except (EnsembleKitError, OSError, ImportError) as exc:
        return str(exc)
    except Exception as exc:  # a damaged database: the report still renders, and says why
        logger.warning("cannot read the studies of %s: %s", store.path, exc)
        return f"the study database cannot be read ({type(exc).__name__})."
    rows = []
    for name in names:
        summary = summaries.get(name)
        if summary is None:
            rows.append({"study": name, "direction": "", "trials": 0, "best value": np.nan})
            continue
        trials = summary.user_attrs.get("n_trials", summary.n_trials)
        best = summary.best_trial.value if summary.best_trial is not None else np.nan
        rows.append({"study": name, "direction": summary.direction.name.lower(),
                     "trials": int(trials) if isinstance(trials, int) else summary.n_trials, "best value": best})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- images
class _ImagesById:
    """An image source looked up by the store's ids (compared as strings).

    With ``root`` (images named by a store's saved settings, which may come from elsewhere), a
    file that resolves outside that folder is refused, not read: a CSV's ids could otherwise name
    ``../`` paths anywhere on this machine.
    """

    def __init__(self, source: Any, root: Path | None = None) -> None:
        self.source = source
        self.root = None if root is None else os.path.realpath(root)
        self.index = {str(i): k for k, i in enumerate(np.asarray(source.ids).tolist())}

    def load(self, image_id: str) -> NDArray[np.uint8] | None:
        k = self.index.get(image_id)
        if k is None:
            return None
        paths = getattr(self.source, "paths", None)
        if self.root is not None and paths is not None:
            real = os.path.realpath(paths[k])
            if os.path.commonpath([real, self.root]) != self.root:
                raise ValidationError(f"{str(paths[k])!r} lies outside the data folder {self.root!r}: not read")
        return self.source.load(k)


def _project_images(store: LogitStore) -> tuple[tuple[Any, Path | None], str]:
    """The training images of a project store and the folder they must lie in, from the ``data:``
    section ``train`` saved in ``STORE/project/project.yaml``; or ``(None, None)`` and why not.

    Only the training half of :func:`ensemble_kit.project.pipeline.open_sources` is opened (that
    module needs the training extra); relative paths are relative to the current directory, as
    they were for ``train``. The file comes from a store that may come from elsewhere: it is read
    size-limited, never through a link, as plain YAML, and validated like any config.
    """
    import yaml

    from ensemble_kit._config import build_dataclass
    from ensemble_kit.project.config import STORE_SETTINGS, DataConfig
    from ensemble_kit.store._files import open_regular

    try:
        path = store.workspace.project_dir() / STORE_SETTINGS[0]  # project.yaml, which `train` writes
    except EnsembleKitError as exc:
        return (None, None), str(exc)
    if not path.is_file():
        return (None, None), ("the store does not record where its images are (it was not made by `ensemble-kit "
                              "train`: imported predictions or `ensemble-kit init`). write_report(store, "
                              "images=source) shows them.")
    try:
        with open_regular(path) as fh:
            raw = fh.read(_SETTINGS_MAX_BYTES + 1)
        if len(raw) > _SETTINGS_MAX_BYTES:
            return (None, None), f"{str(path)!r} is larger than {_SETTINGS_MAX_BYTES:,} bytes."
        document = yaml.safe_load(raw.decode("utf-8")) or {}
        data = build_dataclass(DataConfig, document.get("data") or {}, prefix="data.") \
            if isinstance(document, dict) else None
    except (EnsembleKitError, OSError, yaml.YAMLError, UnicodeDecodeError, TypeError) as exc:
        return (None, None), f"{str(path)!r} cannot be read: {exc}"
    if data is None:
        return (None, None), f"{str(path)!r} does not hold a YAML mapping."
    if data.format != "digits" and not _below(Path(data.root), [Path.cwd(), store.path]):
        # a store may come from elsewhere: its saved settings never make the report read files
        # outside the folder the report runs in (or the store itself)
        return (None, None), (f"the data folder {data.root!r} named in {str(path)!r} lies outside the current folder "
                              "and the store, so its images are not read; run the report from the folder you trained "
                              "in, or pass write_report(store, images=source).")
    try:
        return _train_source(data), ""
    except (EnsembleKitError, OSError) as exc:
        return (None, None), (f"the training images named in {str(path)!r} cannot be opened from "
                              f"{str(Path.cwd())!r}: {exc}")


def _below(path: Path, roots: list[Path]) -> bool:
    """Whether ``path`` (relative to the current folder) resolves inside one of ``roots``."""
    resolved = path.resolve()
    return any(resolved == root.resolve() or root.resolve() in resolved.parents for root in roots)


def _train_source(data: Any) -> tuple[Any, Path | None]:
    """The training source of a project's data config (as ``open_sources`` opens it), and the
    folder its image files must lie in (``None``: images not read from files)."""
    from ensemble_kit.data.sources import ArrayImageSource, CsvImageSource, ImageFolderSource

    if data.format == "digits":
        from ensemble_kit.data.embedded import load_digits_images

        train, _ = load_digits_images(image_size=data.image_size, test_fraction=data.test_fraction)
        return ArrayImageSource(train.images, [train.classes[k] for k in train.labels], ids=train.ids,
                                classes=train.classes), None
    if data.format == "cifar10_batches":
        from ensemble_kit.data.cifar import load_cifar10_batches

        return load_cifar10_batches(data.root)[0], None
    if data.format == "folder":
        return ImageFolderSource(data.path(data.train)), data.path(data.train)
    return CsvImageSource(data.path(data.train), data.path(data.train_images), id_col=data.id_col,
                          label_col=data.label_col, ext=data.ext), data.path(data.train_images)


def _thumbnail(images: _ImagesById, image_id: str) -> tuple[str, str]:
    """An ``<img>`` of the image ``image_id`` (PNG, base64) and ``""``, or ``""`` and what went wrong.

    The image is decoded by the source (``ensemble_kit.data.decode``: regular files only, size
    and mode checked), shrunk to at most :data:`THUMBNAIL_PX` pixels on a side, and small images
    are enlarged by a whole factor (nearest neighbour) so they stay sharp.
    """
    from PIL import Image

    try:
        array = images.load(image_id)
    except (EnsembleKitError, OSError, ValueError) as exc:
        return "", f"unreadable: {exc}"
    if array is None:
        return "", "not among the images of the data"
    picture = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    picture.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.LANCZOS)
    side = max(picture.size)
    if side < _THUMB_MIN:
        factor = -(-_THUMB_MIN // side)
        picture = picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    alt = html.escape(f"image {image_id}", quote=True)
    return f'<img alt="{alt}" width="{picture.width}" height="{picture.height}" src="data:image/png;base64,{data}">', ""
