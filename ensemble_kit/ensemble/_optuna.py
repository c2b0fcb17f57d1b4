"""Named, reproducible Optuna studies for every tuning run."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import optuna
import xxhash

from ensemble_kit._progress import interactive, progress
from ensemble_kit.ensemble._claims import StudyBusy, claims_for, defer_busy, open_storage, wait_for_claim
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import Metric, get_metric

logger = logging.getLogger(__name__)


def input_hash(*arrays: np.ndarray, extra: str = "") -> str:
    """Short content hash of the inputs, so a study name identifies what was tuned."""
    digest = xxhash.xxh3_64()
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        digest.update(str((contiguous.shape, contiguous.dtype.str)).encode())
        digest.update(memoryview(contiguous.reshape(-1)).cast("B"))
    digest.update(extra.encode())
    return digest.hexdigest()[:12]


MIN_WEIGHT = 1e-3
# Part of every study name: bump it whenever a search space or objective changes, so studies
# stored by an older version are never reused for a different search. s5: label metrics are
# maximised as they are (s4 minimised their negation), and study names changed.
SEARCH_SPACE_VERSION = "s5"

# Optuna keeps study names in a VARCHAR(512), and so does the claims table (_claims.py).
MAX_STUDY_NAME = 512
# Model names are shown in a study name when they are this short together, else a count and a hash.
_MODELS_SHOWN_CHARS = 40
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.]+")


def study_direction(metric: str | Metric) -> str:
    """``"maximize"`` for a metric where greater is better (accuracy, macro F1), else ``"minimize"``
    (log loss): a study optimises the metric as it is, so optuna-dashboard shows its real values.

    >>> study_direction("accuracy"), study_direction("log_loss")
    ('maximize', 'minimize')
    """
    return "maximize" if get_metric(metric).greater_is_better else "minimize"


def models_label(models: Sequence[str]) -> str:
    """The models of a study as its name shows them: ``m0+m1+m2`` when the names are plain
    (letters, digits, ``_``, ``.``) and short together, else ``<count>models.<hash>``, the hash
    of the names in order (the same model set always gives the same label).

    >>> models_label(["resnet", "vit"]), models_label([f"model_{i}" for i in range(9)])
    ('resnet+vit', '9models.237fda')
    """
    names = [str(m) for m in models]
    joined = "+".join(names)
    if names and len(joined) <= _MODELS_SHOWN_CHARS and all(_PLAIN_NAME.fullmatch(n) for n in names):
        return joined
    return f"{len(names)}models.{input_hash(extra=chr(31).join(names))[:6]}"


def study_name(stage: str, *, metric: str, models: Sequence[str], digest: str, fold: str) -> str:
    """``<stage>-<metric>-<models>-<digest>-<fold>``: what a study tunes, readable in a list of
    studies, e.g. ``soft_vote-probs-log_loss-m0+m1+m2-1f0c2a9b7d3e-fold0``.

    ``digest`` identifies the whole input (logits, labels, folds, model names, the stage's options
    and :data:`SEARCH_SPACE_VERSION`), so a name is unique to what was tuned and the same on every
    run; the fold comes last, so the studies of one fit sort together (``final``, ``fold0``, ...).
    """
    name = f"{stage}-{metric}-{models_label(models)}-{digest}-{fold}"
    if len(name) > MAX_STUDY_NAME:
        raise ValidationError(f"Study name prefix {stage[:60]!r}... is too long: an Optuna study name holds at most "
                              f"{MAX_STUDY_NAME} characters; give a shorter study_name.")
    return name


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The study's best completed trial; among equal values the earliest (lowest number).

    Optuna's own ``best_trial`` leaves ties to the storage (a database returns any of them), and
    label metrics tie often (accuracy moves in steps of 1/n): this choice is the same in memory,
    on SQLite and on PostgreSQL, and is the one an in-memory study has always made.
    """
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not trials:
        raise ValueError(f"study {study.study_name!r} has no completed trial")
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(trials, key=lambda t: (sign * t.value, t.number))


def completed_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def suggest_weights(trial: optuna.Trial, keys: list[str]) -> dict[str, float]:
    """Raw weights on a log scale in [1e-3, 1]: near-zero weights (one model dominating) are as
    easy to reach as balanced ones, which uniform sampling in 7+ dimensions almost never is."""
    return {k: trial.suggest_float(k, MIN_WEIGHT, 1.0, log=True) for k in keys}


def starting_points(keys: list[str], n_trials: int) -> list[dict[str, float]]:
    """Equal weights and every one-hot corner, so a study never ends worse than the plain average
    or the best single member."""
    points = [{k: 1.0 for k in keys}] + [{k: (1.0 if k == chosen else MIN_WEIGHT) for k in keys} for chosen in keys]
    return points[:n_trials]


def as_trial_weights(keys: list[str], weights: np.ndarray) -> dict[str, float]:
    """Weights on the simplex as a point of :func:`suggest_weights`'s space (largest 1, none
    below ``MIN_WEIGHT``), to enqueue as a trial."""
    scaled = np.asarray(weights, dtype=np.float64) / np.max(weights)
    return {k: float(np.clip(w, MIN_WEIGHT, 1.0)) for k, w in zip(keys, scaled)}


@contextmanager
def _quiet_trials() -> Iterator[None]:
    """Optuna logs a line per trial at INFO; thousands of them bury the library's own progress.
    Lower it for the study's duration only, leaving the user's setting as it was."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(previous, optuna.logging.WARNING))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


class _Progress:
    """A bar over a study's trials where one is visible, else a log line at every quarter."""

    def __init__(self, name: str, total: int, done: int) -> None:
        self.name, self.total, self.done, self.start = name, total, done, time.perf_counter()
        self.bar = progress(range(total - done), desc=f"study {name}", total=total - done, leave=False) \
            if interactive() else None
        self.every = max(1, total // 4)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.total >= _LOGGED_STUDY_TRIALS and self.done % self.every == 0:
            logger.info("study %s: %d/%d trials, best %.6f (%.0fs)", self.name, self.done, self.total, study.best_value,
                        time.perf_counter() - self.start)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# Shorter studies finish in a blink; longer ones say how far they are when no bar shows it.
_LOGGED_STUDY_TRIALS = 40


def run_study(
    name: str,
    objective: Callable[[optuna.Trial], float],
    *,
    n_trials: int,
    seed: int,
    storage: str | optuna.storages.BaseStorage | None,
    direction: str = "minimize",
    enqueue: list[dict[str, Any]] | None = None,
    attrs: dict[str, Any] | None = None,
) -> optuna.Study:
    """Create (or resume) the study ``name`` and run it up to ``n_trials`` completed trials.

    ``direction`` is ``"minimize"`` or ``"maximize"`` (:func:`study_direction` of the metric): the
    objective returns the metric as it is. A study that already holds ``n_trials`` completed
    trials in a persistent storage is reused as is (all of its trials, even more than asked for
    now), so re-running a fit is instant and gives the same result. ``attrs`` become the study's
    user attributes (what was tuned: stage, models, metric, fold), shown by optuna-dashboard;
    the attribute ``n_trials`` is set, at every call, to the completed trials the study really
    holds, which a reused study may have more of than this call's ``n_trials``. Its best trial is
    :func:`best_trial`.

    On a database storage shared by several processes, one process at a time runs a study (it
    *claims* it, :mod:`ensemble_kit.ensemble._claims`); another one that reaches it tunes other
    studies first (inside :func:`~ensemble_kit.ensemble._claims.run_shared`) or waits, then reuses
    it. So every study ends with exactly ``n_trials`` completed trials, and its best trial is the
    one a single process finds. On a database the trials run in memory and are written when the
    study is done (:func:`_optimize`): optuna-dashboard shows a study once it is finished.
    """
    if direction not in ("minimize", "maximize"):
        raise ValidationError(f"direction must be 'minimize' or 'maximize'; got {direction!r}.")
    opened = open_storage(storage)

    def sampler() -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=min(20, max(5, n_trials // 5)))

    with _quiet_trials():
        study = optuna.create_study(study_name=name, storage=opened, direction=direction, load_if_exists=True,
                                    sampler=sampler())
        if study.direction != optuna.study.StudyDirection[direction.upper()]:
            raise ValidationError(f"Study {name!r} already exists in the storage and was tuned to "
                                  f"{study.direction.name.lower()}, not to {direction}: give another study name, or "
                                  "delete that study.")
        claims = claims_for(opened)
        if claims is None:
            in_memory = opened is None or isinstance(opened, optuna.storages.InMemoryStorage)
            _optimize(study, objective, n_trials, enqueue, attrs, sampler=None if in_memory else sampler)
        elif not _finished(study, n_trials):
            if claims.acquire(name):
                held = True
            elif defer_busy():
                raise StudyBusy(name)
            else:
                held = wait_for_claim(claims, name, finished=lambda: _finished(study, n_trials))
            if held:
                try:
                    _fail_orphans(study)
                    _optimize(study, objective, n_trials, enqueue, {**(attrs or {}), "tuned_by": claims.owner},
                              sampler=sampler)
                finally:
                    claims.release(name)
        _record_trial_count(study, n_trials)
    logger.info("study %s: best %.6f after %d trials", name, best_trial(study).value, len(study.trials))
    return study


def _record_trial_count(study: optuna.Study, n_trials: int) -> None:
    """Set the user attribute ``n_trials`` to the completed trials the study holds (not the
    trials this call asked for: a reused study keeps every trial it had)."""
    done = completed_trials(study)
    if study.user_attrs.get("n_trials") != done:
        study.set_user_attr("n_trials", done)
    if done > n_trials:
        logger.info("study %s: reused with its %d completed trials (this fit asked for %d)", study.study_name, done,
                    n_trials)


def _finished(study: optuna.Study, n_trials: int) -> bool:
    return completed_trials(study) >= n_trials


def _fail_orphans(study: optuna.Study) -> None:
    """Trials left running by a process that died holding the claim: they will never finish."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        logger.warning("study %s: trial %d was left running by a process that stopped; marked failed",
                       study.study_name, trial.number)


def _optimize(study: optuna.Study, objective: Callable[[optuna.Trial], float], n_trials: int,
              enqueue: list[dict[str, Any]] | None, attrs: dict[str, Any] | None, *,
              sampler: Callable[[], optuna.samplers.BaseSampler] | None) -> None:
    """Run ``study`` up to ``n_trials`` completed trials.

    With a database storage (``sampler`` given) the trials run in a study in memory that starts
    from the stored ones, and only the finished trials are written, at the end: a trial costs
    about 3 ms in memory against 20-50 ms when every suggestion reads and writes the database.
    Same seed, same history: the trials are the ones a study run on the database would give.
    """
    if not study.trials:
        for key, value in (attrs or {}).items():
            study.set_user_attr(key, value)
    stored = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(stored) >= n_trials:
        return
    work = study
    if sampler is not None:
        work = optuna.create_study(direction=study.direction, sampler=sampler())
        work.add_trials(stored)
    if not stored:
        for params in enqueue or []:
            work.enqueue_trial(params)
    tracker = _Progress(study.study_name, n_trials, len(stored))
    try:
        work.optimize(objective, n_trials=n_trials - len(stored), show_progress_bar=False, callbacks=[tracker])
    finally:
        tracker.close()
    if work is not study:
        study.add_trials(work.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))[len(stored):])
