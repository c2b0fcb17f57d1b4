"""The report's figures, each a function of plain arrays/tables returning a matplotlib Figure.

matplotlib is optional (``pip install "ensemble_kit[report]"``) and imported lazily, with the
non-interactive Agg backend so reports render on headless machines.

Class, model, stack and step names are data, shown as written: matplotlib would read a name
such as ``$x^$`` as mathtext (and fail on it), or hand ``_``/``%`` to LaTeX under
``text.usetex``. Every figure is built with math parsing and LaTeX off (:func:`_literal_text`),
each of its Text artists keeps them off wherever it is drawn later, and :func:`png_bytes`
renders under the same settings, so a tick label made only at drawing time is literal too.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ensemble_kit._optional import import_optional


_CORRELATION_SAMPLE = 1_000_000
# text is shown as written: no mathtext ($...$), no LaTeX, and numbers formatted as plain text (so
# none relies on mathtext), whatever the user's matplotlibrc says
_LITERAL_RC = {"text.parse_math": False, "text.usetex": False, "axes.formatter.use_mathtext": False}

F = TypeVar("F", bound=Callable[..., Any])


def _pyplot() -> Any:
    matplotlib = import_optional("matplotlib", feature="The HTML report")
    matplotlib.use("Agg", force=True)
    return import_optional("matplotlib.pyplot", feature="The HTML report")


@contextmanager
def literal_text() -> Iterator[None]:
    """matplotlib settings under which every Text artist made shows its string as written."""
    matplotlib = import_optional("matplotlib", feature="The HTML report")
    with matplotlib.rc_context(_LITERAL_RC):
        yield


def _literal_text(build: F) -> F:
    """Build the figure under :func:`literal_text`, then pin every Text artist of it to literal
    rendering, so that drawing it later (outside those settings) shows the names as written too."""
    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with literal_text():
            fig = build(*args, **kwargs)
        from matplotlib.text import Text

        for text in fig.findobj(Text):
            text.set_parse_math(False)
            text.set_usetex(False)
        return fig

    return wrapper  # type: ignore[return-value]


def png_bytes(fig: Any, *, dpi: int) -> bytes:
    """``fig`` as PNG, rendered with literal text (tick labels made while drawing included)."""
    buffer = io.BytesIO()
    with literal_text():
        fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# bar styles of the leaderboard: what a row is, and whether the submission applies it
_BASE, _REFERENCE, _STEP, _REJECTED = "#7f8c8d", "#bdc3c7", "#2e86de", "#e5e7e9"
_SUBMITTED_EDGE = "#111111"


def is_rejected(table: pd.DataFrame) -> NDArray[np.bool_]:
    """Rows of a report whose step was fitted but not applied (``kept`` is False)."""
    if "kept" not in table.columns:
        return np.zeros(len(table), dtype=bool)
    return np.array([isinstance(v, (bool, np.bool_)) and not v for v in table["kept"].tolist()], dtype=bool)


@_literal_text
def leaderboard_figure(table: pd.DataFrame, metric: str, *, submitted: Any = None) -> Any:
    """Horizontal bars of ``metric`` and log loss (honest OOF) for every base model, reference and step.

    Every bar starts at 0 (log loss too), so lengths compare; each bar carries its value, which
    is where third-decimal stacking gains show. A step that was fitted but not applied
    (``kept`` False: a rejected temperature or class offsets) is drawn hatched in pale grey, and
    the row the submission uses (``submitted``, an index label of ``table``) has a black edge and
    ``[submitted]`` after its name; the legend says so.
    """
    plt = _pyplot()
    from matplotlib.patches import Patch

    metrics = [metric] if metric == "log_loss" else [metric, "log_loss"]
    rows = table.dropna(subset=metrics)
    rejected = is_rejected(rows)
    kinds = rows["kind"].map({"base model": _BASE, "reference": _REFERENCE}).fillna(_STEP).to_numpy(dtype=object)
    colours = np.where(rejected, _REJECTED, kinds).tolist()
    chosen = np.asarray(rows.index == submitted) if submitted is not None else np.zeros(len(rows), dtype=bool)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics) + 3.0, 0.38 * len(rows) + 2.0),
                             sharey=True, squeeze=False)
    # one bar per row, by position: a model named like a stage ("logreg") keeps a bar of its own
    labels = [f"{label} [submitted]" if mark else label for label, mark in zip(step_labels(rows), chosen)]
    for ax, name in zip(axes[0], metrics):
        values = rows[name].to_numpy(dtype=float)
        bars = ax.barh(np.arange(len(rows)), values, color=colours, edgecolor=np.where(rejected, "#7f8c8d", "none"))
        for bar, off, mark in zip(bars, rejected, chosen):
            if off:
                bar.set_hatch("///")
            if mark:
                bar.set_edgecolor(_SUBMITTED_EDGE)
                bar.set_linewidth(1.8)
        ax.set_yticks(np.arange(len(rows)), labels)
        for tick, mark in zip(ax.get_yticklabels(), chosen):
            if mark:
                tick.set_fontweight("bold")
        high = float(np.nanmax(values)) if len(values) else 1.0
        ax.set_xlim(0.0, max(high, 1e-9) * 1.18)  # from 0: room on the right for the values
        for i, (v, off) in enumerate(zip(values, rejected)):
            ax.text(v, i, f" {v:.4f}" + (" (not applied)" if off else ""), va="center", fontsize=7)
        ax.set_xlabel(f"OOF {name}" + (" (lower is better)" if name == "log_loss" else " (higher is better)"))
    axes[0][0].invert_yaxis()
    handles = [Patch(facecolor=_BASE, label="base model"), Patch(facecolor=_REFERENCE, label="mean of the models"),
               Patch(facecolor=_STEP, label="ensemble step")]
    if rejected.any():
        handles.append(Patch(facecolor=_REJECTED, edgecolor="#7f8c8d", hatch="///",
                             label="rejected step (not applied)"))
    if chosen.any():
        handles.append(Patch(facecolor="white", edgecolor=_SUBMITTED_EDGE, linewidth=1.8,
                             label="submitted (what the submission uses)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), fontsize=8, frameon=False)
    fig.suptitle("Honest nested-CV scores (every bar starts at 0)", fontsize=10)
    fig.tight_layout(rect=(0, 0.09 if len(handles) <= 3 else 0.13, 1, 1))
    return fig


@_literal_text
def fold_spread_figure(scores: pd.DataFrame, metric: str, *, submitted: str | None = None) -> Any:
    """Each row's ``metric`` in every fold (one dot per fold), with its range and mean.

    ``scores`` has one row per model or step (index: display name) and one column per fold.
    The axis is zoomed on the values (it is a dot plot, not bars): what matters is how far the
    folds spread and whether the stack's folds sit beyond the best model's.
    """
    plt = _pyplot()
    values = scores.to_numpy(dtype=float)
    n = len(scores)
    fig, ax = plt.subplots(figsize=(8.5, 0.42 * n + 1.6))
    y = np.arange(n)
    low, high, mean = np.nanmin(values, axis=1), np.nanmax(values, axis=1), np.nanmean(values, axis=1)
    ax.hlines(y, low, high, color="#95a5a6", lw=2, zorder=1)
    markers = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
    for k, column in enumerate(scores.columns):
        ax.scatter(values[:, k], y, s=22, marker=markers[k % len(markers)], zorder=2, label=str(column))
    ax.scatter(mean, y, s=90, marker="|", color="k", zorder=3, label="mean")
    labels = [f"{name} [submitted]" if name == submitted else str(name) for name in scores.index]
    ax.set_yticks(y, labels)
    for tick, name in zip(ax.get_yticklabels(), scores.index):
        if name == submitted:
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    ax.set_xlabel(f"OOF {metric} per fold" + (" (lower is better)" if metric == "log_loss" else " (higher is better)"))
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title("Spread across folds: one mark per fold, line = min to max, bar = mean", fontsize=10)
    fig.tight_layout()
    return fig


def step_labels(table: pd.DataFrame) -> list[str]:
    """Display names of report rows: the step, with its kind when the name occurs more than once."""
    counts = table["step"].value_counts()
    return [f"{step} ({kind})" if counts[step] > 1 else str(step) for step, kind in zip(table["step"], table["kind"])]


@_literal_text
def correlation_figure(names: Sequence[str], oof_log_probs: NDArray) -> Any:
    """Pearson correlation between the models' OOF log-probabilities (all samples and classes)."""
    plt = _pyplot()
    flat = oof_log_probs.reshape(len(names), -1)
    if flat.shape[1] > _CORRELATION_SAMPLE:  # e.g. 33k x 396 values per model: a seeded sample is as exact
        flat = flat[:, np.random.default_rng(0).choice(flat.shape[1], _CORRELATION_SAMPLE, replace=False)]
    flat = flat.astype(np.float64)
    corr = np.corrcoef(flat) if len(names) > 1 else np.ones((1, 1))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + 0.7 * len(names)), max(4.2, 1.2 + 0.6 * len(names))))
    image = ax.imshow(corr, vmin=min(0.0, float(corr.min())), vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", color="w" if corr[i, j] < 0.8 else "k", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title("Correlation of OOF log-probabilities", fontsize=10)
    fig.tight_layout()
    return fig


@_literal_text
def weights_figure(weights: Mapping[str, Mapping[str, float]]) -> Any:
    """One bar panel per weighting: model weights of each stage, and the blend's stage weights."""
    plt = _pyplot()
    panels = [(title, values) for title, values in weights.items() if values]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels):
        # bars by position with fixed tick labels: a categorical axis would make its labels only
        # while drawing, and read a model named "1" or "1e3" as a number
        ax.bar(np.arange(len(values)), list(values.values()), color="#2e86de")
        ax.set_xticks(np.arange(len(values)), [str(name) for name in values])
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, max(1.0, max(values.values()) * 1.1))
        ax.tick_params(axis="x", rotation=45)
        for k, v in enumerate(values.values()):
            ax.text(k, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    return fig


@_literal_text
def confusion_figure(y: NDArray, labels: NDArray, classes: Sequence[Any]) -> Any:
    """Row-normalised confusion matrix (true class rows, predicted class columns)."""
    plt = _pyplot()
    n = len(classes)
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (y, labels), 1)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(12.0, max(5.0, 1.5 + 0.45 * n))  # wide enough for its title even with 2 classes
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
    if n <= 30:
        ax.set_xticks(range(n), [str(c) for c in classes], rotation=90)
        ax.set_yticks(range(n), [str(c) for c in classes])
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                            color="w" if rates[i, j] > 0.5 else "k")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title("OOF decisions: counts,\ncolour = share of the true class", fontsize=10)
    fig.tight_layout()
    return fig


@_literal_text
def threshold_figure(classes: Sequence[Any], before: pd.DataFrame, after: pd.DataFrame, setting: Sequence[str]) -> Any:
    """Per-class precision / recall / F1 with plain argmax vs with the stack's class decisions."""
    plt = _pyplot()
    n = len(classes)
    # Side-by-side bars stay readable up to ~20 classes; beyond, each panel plots the change per class.
    fig, axes = plt.subplots(1, 3, figsize=(min(18.0, max(9.0, 1.5 * n)), 3.4), sharey=n <= 20)
    x = np.arange(n)
    for ax, column in zip(axes, ("precision", "recall", "f1")):
        if n <= 20:
            ax.bar(x - 0.2, before[column], width=0.4, label="argmax", color="#bdc3c7")
            ax.bar(x + 0.2, after[column], width=0.4, label="with thresholds", color="#2e86de")
            ax.set_xticks(x, [f"{c}\n{s}" for c, s in zip(classes, setting)], fontsize=7)
            ax.set_ylim(0, 1.05)
        else:
            delta = (after[column] - before[column]).to_numpy()
            ax.bar(x, delta, width=1.0, color=np.where(delta >= 0, "#2e86de", "#e74c3c"))
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xlabel("class index")
            ax.set_ylabel("change vs arg-max")
        ax.set_title(column)
    if n <= 20:
        axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Effect of each class threshold on OOF decisions (class, setting)", fontsize=10)
    fig.tight_layout()
    return fig


@_literal_text
def reliability_figure(curves: Mapping[str, tuple[NDArray, NDArray, NDArray]]) -> Any:
    """Top-label reliability: mean confidence vs accuracy per confidence bin, one line per predictor."""
    plt = _pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for name, (confidence, accuracy, count) in curves.items():
        keep = count > 0
        ax.plot(confidence[keep], accuracy[keep], marker="o", ms=3, label=name)
        hist.plot(confidence[keep], count[keep], marker=".", label=name)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    ax.set_title("Reliability diagram (OOF, top label)")
    hist.set_xlabel("confidence")
    hist.set_ylabel("samples")
    fig.tight_layout()
    return fig


def reliability_curve(probs: NDArray, y: NDArray, n_bins: int = 15) -> tuple[NDArray, NDArray, NDArray]:
    """Mean confidence, accuracy and count per equal-width confidence bin."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(float)
    mean_conf = np.bincount(bins, weights=confidence, minlength=n_bins) / np.maximum(count, 1)
    accuracy = np.bincount(bins, weights=correct.astype(float), minlength=n_bins) / np.maximum(count, 1)
    return mean_conf, accuracy, count


def _integer_locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


@_literal_text
def training_curves_figure(histories: Mapping[str, Mapping[int, pd.DataFrame]]) -> Any:
    """Train and validation loss per epoch; one panel per model, one line per fold."""
    plt = _pyplot()
    names = list(histories)
    cols = min(3, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for fold, frame in sorted(histories[name].items()):
            line, = ax.plot(frame["epoch"], frame["val_loss"], marker="o", ms=3, label=f"fold {fold} val")
            ax.plot(frame["epoch"], frame["train_loss"], ls="--", color=line.get_color(), alpha=0.6)
        ax.set_title(f"{name} (solid: validation, dashed: train)", fontsize=9)
        ax.xaxis.set_major_locator(_integer_locator())  # epochs are whole numbers
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
