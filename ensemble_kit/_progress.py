"""Progress that shows wherever the library runs: bars in terminals and notebooks, log lines elsewhere.

tqdm's ``disable=None`` turns a bar off whenever the output is not a terminal, which includes
Jupyter and Kaggle notebooks (their output stream is not a tty) and every log file. Here a bar
is shown in a terminal or a notebook kernel; elsewhere the bar is off and the code that drives
it logs one line per epoch, fold or stage instead (see :func:`interactive`). ``quiet(True)``
(the CLI's ``-q``) turns bars off everywhere.

Training reports to a :class:`TrainProgress`: the position of the whole train command (model
i/M, fold k/K, epoch e/E, batch b/B), its throughput and its ETA, shown in the bars, or off a
terminal logged every :data:`LOG_INTERVAL` seconds and at each epoch's end.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["interactive", "progress", "quiet", "bars_off", "TrainProgress", "training_run", "current_run",
           "format_eta"]

T = TypeVar("T")
_state = {"quiet": False}


def quiet(value: bool = True) -> None:
    """Turn progress bars off (``True``) or back on, for the whole process."""
    _state["quiet"] = bool(value)


@contextmanager
def bars_off() -> Iterator[None]:
    """No bars while the block runs (code logs lines instead), as before afterwards."""
    previous = _state["quiet"]
    _state["quiet"] = True
    try:
        yield
    finally:
        _state["quiet"] = previous


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    ipython = getattr(shell, "get_ipython", lambda: None)() if shell is not None else None
    return ipython is not None and type(ipython).__name__ == "ZMQInteractiveShell"


def interactive() -> bool:
    """Whether a progress bar is visible here: a terminal or a Jupyter/Kaggle notebook kernel."""
    if _state["quiet"]:
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) or _in_notebook()


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, leave: bool = True, **options: Any) -> Any:
    """A tqdm bar over ``iterable`` when :func:`interactive`, else the iterable with a disabled bar."""
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=not interactive(), **options)


# ---------------------------------------------------------------------- training position and ETA
#: Seconds between two progress lines while an epoch runs, where no bar is shown (log files,
#: CI, workers). An epoch's end always gets its line, whatever its length.
LOG_INTERVAL = 30.0

_run: ContextVar[TrainProgress | None] = ContextVar("ensemble_kit_train_progress", default=None)
logger = logging.getLogger(__name__)


def format_eta(seconds: float | None) -> str:
    """``hh:mm:ss`` (hours not capped at 24), or ``--:--:--`` while nothing is measured yet.

    >>> format_eta(3725.4), format_eta(None)
    ('01:02:05', '--:--:--')
    """
    if seconds is None or not math.isfinite(seconds):
        return "--:--:--"
    total = int(round(max(seconds, 0.0)))
    return f"{total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}"


@contextmanager
def training_run(run: TrainProgress) -> Iterator[TrainProgress]:
    """Make ``run`` the position every :func:`~ensemble_kit.train.train_cv` inside the block reports to."""
    token = _run.set(run)
    try:
        yield run
    finally:
        _run.reset(token)


def current_run() -> TrainProgress | None:
    """The :class:`TrainProgress` of the enclosing :func:`training_run`, if any."""
    return _run.get()


class TrainProgress:
    """Where one train command is (model i/M, fold k/K, epoch e/E, batch b/B), how fast, and its ETA.

    The trainer reports every step to it; off a terminal it logs a line whenever
    ``interval`` seconds (default :data:`LOG_INTERVAL`) have passed since the last one, and at
    every epoch's end. In a terminal the same text goes to the tqdm bars (the trainer asks
    :meth:`position` and :meth:`speed_eta`).

    **The ETA** counts the work left in training images (epochs left x images per epoch, over
    every fold and model still to train in this command; folds already stored and epochs
    restored from a checkpoint are not work) and prices it at the speed measured so far: the
    current model's images at this model's own wall seconds per training image in this command
    (validation, predictions, checkpoints and set-up included, so they are in the estimate too),
    models not started yet at the mean of everything trained so far in this command. It is a
    rough figure for models of other architectures, and exact once each model has run a while.
    Early stopping ends a fold before its planned epochs, so the ETA can only err long there.

    Parameters
    ----------
    names : sequence of str
        The models of the command, in training order (``model i/M`` counts them).
    n_models, first : int, optional
        ``M`` and the ``i`` of ``names[0]`` when the command's models are not all here (a fold
        task on a worker reports ``model 2/3`` although its tracker knows one model).
    scope : str
        Appended to the ETA (``"for this fold task"`` on a worker).
    clock : callable
        Seconds, monotonic (injected by tests).
    interval : float, optional
        Seconds between two lines within an epoch (default :data:`LOG_INTERVAL`, read at each step).
    """

    def __init__(self, names: Sequence[str] = (), *, n_models: int | None = None, first: int = 1, scope: str = "",
                 clock: Callable[[], float] = time.monotonic, interval: float | None = None) -> None:
        self._clock, self._interval, self.scope = clock, interval, scope
        self._names: list[str] = list(names)
        self._first, self._n_models = first, n_models
        self._remaining: dict[str, dict[int, float]] = {name: {} for name in self._names}
        self._done: dict[str, float] = {}
        self._model_start: dict[str, float] = {}
        self._start = self._last_line = clock()
        self.model_name: str | None = None
        self.fold_id: int | None = None
        self.n_folds = 0
        self.epoch_number, self.n_epochs = 0, 0
        self.batch_number, self.n_batches = 0, 0
        self._epoch_images, self._epoch_start, self._epoch_train_seconds = 0.0, self._start, 0.0
        self._rate: float | None = None

    # ------------------------------------------------------------------ plan and position
    def plan(self, name: str, images_by_fold: Mapping[int, float]) -> None:
        """The training images ``name`` still has to train, per fold (replaces an earlier plan)."""
        if name not in self._remaining:
            self._names.append(name)
        self._remaining[name] = {int(k): float(v) for k, v in images_by_fold.items()}

    def start_model(self, name: str) -> None:
        if name not in self._remaining:
            self.plan(name, {})
        self.model_name, self.fold_id = name, None
        self._model_start.setdefault(name, self._clock())
        self._done.setdefault(name, 0.0)

    def start_fold(self, fold: int, n_folds: int, *, n_epochs: int, first_epoch: int, images_per_epoch: float) -> None:
        """Fold ``fold`` (its id) of ``n_folds`` starts at 0-based epoch ``first_epoch`` (after a resume: > 0)."""
        self.fold_id, self.n_folds, self.n_epochs = fold, n_folds, n_epochs
        self.epoch_number = first_epoch
        self.batch_number = self.n_batches = 0
        if self.model_name is not None:
            self._remaining[self.model_name][fold] = float(images_per_epoch) * max(n_epochs - first_epoch, 0)

    def end_fold(self) -> None:
        """The fold is trained (early stopping may end it before its planned epochs)."""
        if self.model_name is not None and self.fold_id is not None:
            self._remaining[self.model_name][self.fold_id] = 0.0

    def start_epoch(self, epoch: int, n_batches: int) -> None:
        """0-based ``epoch`` starts (shown as ``epoch + 1``), with ``n_batches`` batches."""
        self.epoch_number, self.batch_number, self.n_batches = epoch + 1, 0, n_batches
        self._epoch_images, self._epoch_start = 0.0, self._clock()

    def batch(self, number: int, images: int) -> None:
        """Batch ``number`` (1-based) of ``images`` training images is done; logs a line when it is time."""
        now = self._clock()
        self.batch_number = number
        self._epoch_images += images
        self._epoch_train_seconds = now - self._epoch_start
        if self._epoch_train_seconds > 0:
            self._rate = self._epoch_images / self._epoch_train_seconds
        if self.model_name is not None:
            self._done[self.model_name] = self._done.get(self.model_name, 0.0) + images
            left = self._remaining[self.model_name]
            if self.fold_id is not None:
                left[self.fold_id] = max(left.get(self.fold_id, 0.0) - images, 0.0)
        self._maybe_log(now)

    def heartbeat(self, what: str) -> None:
        """Between batches of other work (``what``: e.g. ``"test predictions, batch 3/9"``): a line when it is time."""
        self._maybe_log(self._clock(), what)

    def end_epoch(self, summary: str) -> None:
        """The epoch's line (always logged off a terminal): the position, then ``summary``."""
        if not interactive():
            logger.info("%s: %s", self.line(), summary)
        self._last_line = self._clock()

    # ------------------------------------------------------------------ text
    def position(self, *, epoch: bool = True, fold: tuple[int, int] | None = None) -> str:
        """``model i/M name, fold k/K (id j), epoch e/E``: counters from 1; a fold's id as ``folds=``,
        ``--folds`` and ``runs/<model>/fold<id>/`` name it (``fold``: another fold's ``(id, K)``)."""
        name = self.model_name or "?"
        index = self._names.index(name) if name in self._names else 0
        total = self._n_models if self._n_models is not None else len(self._names)
        text = f"model {self._first + index}/{max(total, 1)} {name}"
        if fold is not None:
            return text + f", fold {fold[0] + 1}/{fold[1]} (id {fold[0]})"
        if self.fold_id is not None:
            text += f", fold {self.fold_id + 1}/{self.n_folds} (id {self.fold_id})"
            if epoch:
                text += f", epoch {self.epoch_number}/{self.n_epochs}"
        return text

    def images_per_second(self) -> float | None:
        """Training throughput of the current epoch so far (of the last epoch between epochs)."""
        return self._rate

    def eta_seconds(self) -> float | None:
        """Seconds until every planned fold of every model of the command is trained (see the class)."""
        now = self._clock()
        done_all = sum(self._done.values())
        if done_all <= 0:
            return None
        per_image_all = (now - self._start) / done_all
        eta = 0.0
        for name in self._names:
            left = sum(self._remaining.get(name, {}).values())
            if name == self.model_name and self._done.get(name, 0.0) > 0:
                eta += left * (now - self._model_start[name]) / self._done[name]
            else:
                eta += left * per_image_all
        return eta

    def speed_eta(self) -> str:
        """``N img/s, ETA hh:mm:ss`` (the ETA of the whole command; see the class)."""
        rate = self._rate
        speed = "- img/s" if rate is None else f"{rate:.1f} img/s" if rate < 10 else f"{rate:.0f} img/s"
        return f"{speed}, ETA {format_eta(self.eta_seconds())}" + (f" {self.scope}" if self.scope else "")

    def line(self, what: str | None = None) -> str:
        """The full progress line: position, ``batch b/B`` (or ``what``), speed and ETA."""
        step = what if what is not None else f"batch {self.batch_number}/{self.n_batches}"
        return f"{self.position()}, {step}, {self.speed_eta()}"

    def _maybe_log(self, now: float, what: str | None = None) -> None:
        interval = LOG_INTERVAL if self._interval is None else self._interval
        if now - self._last_line >= interval and not interactive():
            logger.info("%s", self.line(what))
            self._last_line = now
