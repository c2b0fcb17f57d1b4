"""Caruana ensemble selection (greedy forward selection with replacement)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ensemble_kit.ensemble._base import BaseEnsembler
from ensemble_kit.ensemble._registry import register_ensembler
from ensemble_kit.ensemble._restore_checks import check_choice, check_vector, field, restoring
from ensemble_kit.ensemble.voting import SPACES, check_space, combine, true_class_log_loss
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import get_metric, log_softmax, safe_log


@register_ensembler("hill_climbing")
class HillClimbing(BaseEnsembler):
    """Caruana et al. (2004) ensemble selection, as in AutoGluon's weighted ensemble.

    Starting from the best single model (``init="best"``) or from nothing, repeatedly add the
    model (with replacement) whose inclusion most improves ``metric``; weights are the
    selection counts. With ``bagging=B``, selection runs on ``B`` random subsets of
    ``bag_fraction`` of the models and the weights are averaged, which reduces overfitting.

    Parameters
    ----------
    n_iter : int
        Selection steps.
    init : {"best", "empty"}
    bagging : int or None
        Number of bags (``None``: no bagging).
    bag_fraction : float
        Fraction of models available in each bag.
    metric : str
    space : {"probs", "logits"}
    seed : int

    Attributes
    ----------
    weights_ : ndarray of shape (n_models,)
    trajectory_ : list of float
        Loss after each step (of the last bag).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 300)
    >>> logits = {f"m{i}": np.eye(3)[y] * (i + 1) + rng.normal(size=(300, 3)) * 2 for i in range(3)}
    >>> hc = HillClimbing(n_iter=20).fit(logits, y)
    >>> round(float(hc.weights_.sum()), 6), int(hc.weights_.argmax())
    (1.0, 2)
    """

    def __init__(self, n_iter: int = 100, *, init: Literal["best", "empty"] = "best", bagging: int | None = None,
                 bag_fraction: float = 0.5, metric: str = "log_loss", space: Literal["probs", "logits"] = "probs",
                 seed: int = 0) -> None:
        self.n_iter = n_iter
        self.init = init
        self.bagging = bagging
        self.bag_fraction = bag_fraction
        self.metric = metric
        self.space = space
        self.seed = seed

    _needs_models = "it selects among several models"

    def _prepare(self, logits: NDArray) -> NDArray:
        """Every model's log-probabilities, once per fit (each fold takes its rows)."""
        return log_softmax(logits)

    def _fit_prepared(self, log_probs: NDArray, y: NDArray[np.int64], folds: NDArray[np.int64]) -> None:
        check_space(self.space)
        if self.init not in ("best", "empty"):
            raise ValidationError(f"init must be 'best' or 'empty'; got {self.init!r}.")
        if not isinstance(self.n_iter, int) or self.n_iter < 1:
            raise ValidationError(f"n_iter must be a positive integer; got {self.n_iter!r}.")
        n_models = log_probs.shape[0]
        rng = np.random.default_rng(self.seed)
        if self.bagging:
            size = max(1, int(round(self.bag_fraction * n_models)))
            weights = np.zeros(n_models)
            for _ in range(self.bagging):
                subset = np.sort(rng.choice(n_models, size=size, replace=False))
                weights[subset] += self._select(log_probs[subset], y)
            self.weights_ = weights / weights.sum()
        else:
            self.weights_ = self._select(log_probs, y)

    def _select(self, log_probs: NDArray, y: NDArray[np.int64]) -> NDArray:
        metric = get_metric(self.metric)
        n_models = log_probs.shape[0]
        counts = np.zeros(n_models)
        # As in mixture_log_loss: a mixture of normalised members is normalised, so log loss
        # needs only the true class's probability, (n,) work per candidate instead of (n, C).
        true_class_only = metric.name == "log_loss" and self.space == "probs"
        if true_class_only:
            members = np.exp(log_probs[:, np.arange(len(y)), y]).astype(np.float64)
        else:
            members = np.exp(log_probs) if self.space == "probs" else log_probs
        total = np.zeros(members.shape[1:], dtype=np.float64)

        def loss_of(candidate_total: NDArray, n: float) -> float:
            if true_class_only:
                return true_class_log_loss(candidate_total / n)
            if self.space == "probs":
                mixed = safe_log(candidate_total / n)
            else:
                mixed = candidate_total / n
            return metric.loss(y, mixed, kind="logits")

        self.trajectory_: list[float] = []
        if self.init == "best":
            first = int(np.argmin([loss_of(members[m], 1.0) for m in range(n_models)]))
            counts[first] += 1
            total += members[first]
            self.trajectory_.append(loss_of(total, 1.0))
        for _ in range(self.n_iter - int(counts.sum())):
            n = counts.sum() + 1
            losses = [loss_of(total + members[m], n) for m in range(n_models)]
            best = int(np.argmin(losses))
            counts[best] += 1
            total += members[best]
            self.trajectory_.append(losses[best])
        return counts / counts.sum()

    def _predict_prepared(self, log_probs: NDArray) -> NDArray:
        return combine(log_probs, self.weights_, self.space)

    def _fitted_state(self, out: Any, key: str) -> dict[str, Any]:
        return {"weights": out.array(f"{key}.weights", self.weights_)}

    def _restore_fitted(self, state: dict[str, Any], source: Any) -> None:
        """The selection weights from a saved stack, checked (the stack is untrusted).

        A fit's weights are selection counts over their total: non-negative, summing to 1.
        Prediction divides them by their sum, so negative or all-zero weights would mix to
        negative or NaN probabilities.
        """
        with restoring("HillClimbing"):
            check_choice(self.space, "params.space", SPACES)
            self.weights_ = check_vector(source.array(field(state, "weights", "fitted.weights")), "fitted.weights",
                                         self.n_models_, nonnegative=True, positive_sum=True)
