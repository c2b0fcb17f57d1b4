"""Weighted soft voting with Optuna-tuned weights on the simplex."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import optuna
from numpy.typing import ArrayLike, NDArray

from ensemble_kit.decision.calibration import fit_temperature
from ensemble_kit.ensemble._base import BaseEnsembler
from ensemble_kit.ensemble._optuna import (as_trial_weights, best_trial, run_study, starting_points, study_direction,
                                           suggest_weights)
from ensemble_kit.ensemble._registry import register_ensembler
from ensemble_kit.ensemble._restore_checks import (TEMPERATURE_RANGE, check_bool, check_choice, check_vector, field,
                                                   restoring)
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import get_metric, log_softmax, safe_log


SPACES = ("probs", "logits")


def check_space(space: str) -> str:
    if space not in SPACES:
        raise ValidationError(f"space must be one of {SPACES} (average probabilities, or logits = geometric mean of "
                              f"probabilities); got {space!r}.")
    return space


def combine(log_probs: NDArray, weights: NDArray, space: str) -> NDArray:
    """Weighted combination of per-model log-probs ``(M, n, C)``; returns log-probs ``(n, C)``.

    ``space="probs"`` averages probabilities (the classic soft vote); ``"logits"`` averages
    log-probabilities (a geometric mean of the probabilities, renormalised).
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    if check_space(space) == "probs":
        # one model at a time: an (n, C) temporary, not an exp of the whole (M, n, C) stack
        mixed = np.zeros(log_probs.shape[1:], dtype=np.result_type(log_probs.dtype, np.float32))
        for weight, member in zip(w.astype(mixed.dtype), log_probs):
            if weight:
                mixed += weight * np.exp(member)
        return safe_log(mixed / mixed.sum(axis=1, keepdims=True))
    return log_softmax(np.tensordot(w.astype(np.float32), log_probs, axes=1))


def mixture_log_loss(probs_of_true_class: NDArray) -> Callable[[NDArray], float]:
    """Log loss of a weighted mixture of normalised members, from each member's ``(M, n)``
    probabilities of the true class only.

    A mixture of distributions is normalised, so only the true class's mixed probability
    matters: each trial costs an ``(M, n)`` product instead of an ``(M, n, C)`` mix, which is
    what keeps weight tuning fast at hundreds of classes.
    """
    true_probs = np.asarray(probs_of_true_class, dtype=np.float64)

    def loss(weights: NDArray) -> float:
        w = np.asarray(weights, dtype=np.float64)
        return true_class_log_loss((w / w.sum()) @ true_probs)

    return loss


def mixture_optimum(probs_of_true_class: NDArray, *, max_iter: int = 2000, tol: float = 1e-9) -> NDArray:
    """The mixture weights (summing to 1) with the lowest log loss, from each member's ``(M, n)``
    probabilities of the true class.

    The log loss of a mixture is convex in its weights, so the EM fixed point
    ``w_k <- mean_i(w_k p_ik / sum_j w_j p_ij)`` started from equal weights reaches its minimum;
    each step costs one ``(M, n)`` product. A weight study enqueues it as its first trial, so
    its best trial is the optimum whatever its budget, and the sampler searches around it.

    >>> import numpy as np
    >>> w = mixture_optimum(np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.9]]))
    >>> bool(abs(w.sum() - 1) < 1e-9 and w[0] > w[1])
    True
    """
    true_probs = np.maximum(np.asarray(probs_of_true_class, dtype=np.float64), 1e-15)
    weights = np.full(true_probs.shape[0], 1.0 / true_probs.shape[0])
    for _ in range(max_iter):
        updated = weights * (true_probs / (weights @ true_probs)).mean(axis=1)
        updated /= updated.sum()
        if np.abs(updated - weights).max() < tol:
            return updated
        weights = updated
    return weights


def true_class_log_loss(mixed_probs_of_true_class: NDArray) -> float:
    """Log loss from a normalised mixture's ``(n,)`` probabilities of each row's true class."""
    return float(-np.mean(safe_log(mixed_probs_of_true_class)))


@register_ensembler("soft_vote")
class SoftVoting(BaseEnsembler):
    """Weighted average of the models' probabilities (or logits), weights tuned with Optuna.

    Parameters
    ----------
    weights : {"optuna", "equal"} or array-like of shape (n_models,)
        ``"optuna"`` tunes weights on the simplex for ``metric``; ``"equal"`` averages; an
        array gives fixed weights (normalised to sum to 1).
    space : {"probs", "logits"}
        Average probabilities (classic soft vote) or log-probabilities (geometric mean).
    temperature : bool
        Fit one temperature per model (on the fitting rows) before combining, so that
        over- or under-confident models are put on the same scale.
    metric : str
        Metric the weights are tuned for (``"log_loss"``, ``"accuracy"``, ``"f1_macro"``); the
        study minimises it or maximises it as the metric says (``greater_is_better``).
    n_trials : int
        Optuna trials per tuning run (a study reused from ``storage`` keeps the trials it has).
    seed : int
        Seed of the sampler and of the default folds.
    storage : str or optuna storage, optional
        Where the studies live (``None``: in memory). Any Optuna storage URL works.
    study_name : str, optional
        Prefix of the study names (default ``"soft_vote-<space>"``); each name goes on with the
        metric, the models, a digest of the input and ``final`` or ``fold<k>``
        (``soft_vote-probs-log_loss-m0+m1+m2-<digest>-fold0``). Weight parameters in the study are
        named after the models (``w:<model>``).

    Attributes
    ----------
    weights_ : ndarray of shape (n_models,)
    temperatures_ : ndarray of shape (n_models,)
    study_names_ : list of str

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 300)
    >>> good, noise = np.eye(3)[y] * 2 + rng.normal(size=(300, 3)), rng.normal(size=(300, 3))
    >>> sv = SoftVoting(n_trials=30).fit({"good": good, "noise": noise}, y)
    >>> bool(sv.weights_[0] > sv.weights_[1])
    True
    """

    def __init__(self, weights: str | ArrayLike = "optuna", *, space: Literal["probs", "logits"] = "probs",
                 temperature: bool = False, metric: str = "log_loss", n_trials: int = 100, seed: int = 0,
                 storage: str | optuna.storages.BaseStorage | None = None, study_name: str | None = None) -> None:
        self.weights = weights
        self.space = space
        self.temperature = temperature
        self.metric = metric
        self.n_trials = n_trials
        self.seed = seed
        self.storage = storage
        self.study_name = study_name

    # one model is a valid vote: its (fold-averaged) probabilities, with its own temperature
    _min_models = 1

    def _prepare(self, logits: NDArray) -> NDArray:
        """Every model's log-probabilities, once per fit (each fold takes its rows)."""
        return log_softmax(logits)

    def _fit_prepared(self, log_probs: NDArray, y: NDArray[np.int64], folds: NDArray[np.int64]) -> None:
        check_space(self.space)
        n_models = log_probs.shape[0]
        self.temperatures_ = (np.array([fit_temperature(lp, y, seed=self.seed) for lp in log_probs]) if self.temperature
                              else np.ones(n_models))
        if isinstance(self.weights, str) and self.weights == "equal":
            self.weights_ = np.full(n_models, 1.0 / n_models)
        elif isinstance(self.weights, str) and self.weights == "optuna":
            self.weights_ = self._tune(self._scale(log_probs), y) if n_models > 1 else np.ones(1)
        elif isinstance(self.weights, str):
            raise ValidationError(f"weights must be 'optuna', 'equal' or an array; got {self.weights!r}.")
        else:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.shape != (n_models,) or (w < 0).any() or w.sum() <= 0:
                raise ValidationError(f"weights must be {n_models} non-negative numbers with a positive sum; got {self.weights!r}.")
            self.weights_ = w / w.sum()

    def _scale(self, log_probs: NDArray) -> NDArray:
        if not self.temperature:
            return log_probs
        scaled = log_probs / self.temperatures_[:, None, None].astype(log_probs.dtype)
        return log_softmax(scaled, out=scaled)  # in place: one full-size array, not two

    def _tune(self, log_probs: NDArray, y: NDArray[np.int64]) -> NDArray:
        metric = get_metric(self.metric)
        n_models = log_probs.shape[0]
        # parameters named after the models, so a study reads in optuna-dashboard
        keys = [f"w:{name}" for name in self.model_names_]

        def weights_of(params: dict[str, float]) -> NDArray:
            w = np.array([params[k] for k in keys])
            return w / w.sum() if w.sum() > 0 else np.full(n_models, 1.0 / n_models)

        enqueue = starting_points(keys, self.n_trials)
        if metric.name == "log_loss" and self.space == "probs":
            true_probs = np.exp(log_probs[:, np.arange(len(y)), y])
            value_of = mixture_log_loss(true_probs)
            enqueue = [as_trial_weights(keys, mixture_optimum(true_probs)), *enqueue][:self.n_trials]
        else:
            def value_of(w: NDArray) -> float:  # the metric as it is: the study's direction is the metric's
                return metric(y, combine(log_probs, w, self.space), kind="logits")

        def objective(trial: optuna.Trial) -> float:
            return value_of(weights_of(suggest_weights(trial, keys)))

        name = self._study_name(self.study_name or f"soft_vote-{self.space}", metric.name, log_probs, y,
                                extra=f"temperature={self.temperature}")
        study = run_study(name, objective, n_trials=self.n_trials, seed=self.seed, storage=self.storage,
                          direction=study_direction(metric), enqueue=enqueue,
                          attrs={"stage": "soft_vote", "models": list(self.model_names_), "metric": metric.name,
                                 "fold": getattr(self, "_fold_tag", "final"), "space": self.space,
                                 "temperature": bool(self.temperature)})
        self._record_studies([name])
        return weights_of(best_trial(study).params)

    def _predict_prepared(self, log_probs: NDArray) -> NDArray:
        return combine(self._scale(log_probs), self.weights_, self.space)

    def _fitted_state(self, out: Any, key: str) -> dict[str, Any]:
        return {"weights": out.array(f"{key}.weights", self.weights_),
                "temperatures": out.array(f"{key}.temperatures", self.temperatures_)}

    def _restore_fitted(self, state: dict[str, Any], source: Any) -> None:
        """Weights and temperatures from a saved stack, each checked (the stack is untrusted).

        ``n_models_`` is set by the loader from the saved model names before this runs.
        """
        with restoring("SoftVoting"):
            # the parameters prediction reads: an unknown space fails in combine(), and a string
            # "temperature" would be read by its truthiness
            check_choice(self.space, "params.space", SPACES)
            check_bool(self.temperature, "params.temperature")
            # combine() divides the weights by their sum: negative or all-zero weights would mix
            # to negative or NaN probabilities
            self.weights_ = check_vector(source.array(field(state, "weights", "fitted.weights")), "fitted.weights",
                                         self.n_models_, nonnegative=True, positive_sum=True)
            self.temperatures_ = check_vector(source.array(field(state, "temperatures", "fitted.temperatures")),
                                              "fitted.temperatures", self.n_models_, minimum=TEMPERATURE_RANGE[0],
                                              maximum=TEMPERATURE_RANGE[1])


__all__: Sequence[str] = ["SPACES", "SoftVoting", "combine", "mixture_log_loss", "mixture_optimum",
                          "true_class_log_loss"]
