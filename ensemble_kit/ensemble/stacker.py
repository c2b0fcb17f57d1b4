"""The Stacker: the front door from stored OOF logits to a blended, calibrated ensemble."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from ensemble_kit.decision.calibration import fit_temperature
from ensemble_kit.decision.thresholds import ClassThresholds
from ensemble_kit.ensemble._base import BaseEnsembler, cross_fit
from ensemble_kit.ensemble._inputs import LogitInput, as_logit_stack, check_same_models, resolve_fit_inputs
from ensemble_kit.ensemble._recipes import DEFAULT_RECIPE, recipe_params
from ensemble_kit.ensemble._summary import StackSummary
from ensemble_kit.ensemble.blending import Blender, check_stages
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import get_metric, log_softmax, safe_log, scores
from ensemble_kit.store import LogitStore

__all__ = ["Stacker"]

logger = logging.getLogger(__name__)


class Stacker(BaseEstimator):
    """Stack many models' OOF logits into one classifier, with an honest report of every step.

    Steps, each scored on predictions it never saw while fitting (nested by fold): the
    ``stages`` (ensemblers on the models' logits), a blend of them (when there are several),
    a temperature (``calibrate``) and class-specific decision rules (``thresholds``). An
    optional step that makes its nested score worse is reported and not applied.

    Parameters
    ----------
    stages : list of (name, ensembler), optional
        Default: the stages of the ``"full"`` recipe (logistic stack, CatBoost, LightGBM, soft
        vote). :meth:`from_recipe` builds a Stacker from any registered recipe with every stage
        spelled out, so ``get_params``/``set_params`` reach them (``catboost__params=...``).
    blend : "optuna" or dict stage name -> weight
        How several stages are combined: weights tuned with Optuna (nested) or fixed.
    calibrate : bool or "auto"
        Fit a final temperature; ``"auto"``: when the metric is log loss.
    thresholds : ClassThresholds, None or "auto"
        Decision rules on the final probabilities; ``"auto"``: class offsets tuned for the
        metric when it scores labels (``"f1_macro"``, ``"accuracy"``), none for log loss. Fixed
        rules (``ClassThresholds(rules={2: 0.4})``) are always applied.
    metric : str
        A registered metric: what tuning optimises and what the report is sorted by.
    n_trials : int
        Optuna trials per tuning run of the blend.
    seed : int
    storage : str or optuna storage, optional
        Where Optuna studies go (also for every stage that sets none): a database URL
        (``postgresql://user:${PGPASSWORD}@host/db``; ``$VARS`` are read from the environment) or
        an Optuna storage. ``None``: in memory, or ``sqlite:///STORE/optuna.db`` when fitted from a
        store (``ensemble-kit dashboard STORE``). Several processes fitting the same stack on one
        database split its studies between them and all get the single-process result
        (``docs/scaling.md``).

    Attributes
    ----------
    report_ : pandas.DataFrame
        One row per base model, the plain probability mean and every step: honest CV metrics,
        ``kind``, ``kept`` (whether an optional step was applied) and ``fit_seconds``.
    ensemble_ : BaseEnsembler
        The fitted single stage, or the :class:`Blender` of the stages.
    stage_names_ : list of str
    temperature_ : float or None
    temperature_rejected_ : bool
        Whether the fitted temperature made nested log loss worse (and so is not applied).
    thresholds_ : ClassThresholds or None
    thresholds_rejected_ : bool
        Whether tuned class offsets lost on held-out folds (decisions stay arg-max).
    oof_proba_ : ndarray
        Honest OOF probabilities of the final ensemble.
    oof_labels_ : ndarray
        Honest OOF decisions.
    storage_ : str or None
        The Optuna storage used.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 300)
    >>> oof = {f"m{i}": np.eye(3)[y] * (1 + i) + rng.normal(size=(300, 3)) * 2 for i in range(3)}
    >>> stk = Stacker.from_recipe("hill_climb").fit(oof, y)
    >>> stk.predict_proba(oof).shape, stk.report_["step"].tolist()[-2:]
    ((300, 3), ['mean_probs', 'hill_climbing'])
    """

    def __init__(self, stages: Sequence[tuple[str, BaseEnsembler]] | None = None, *,
                 blend: Mapping[str, float] | str = "optuna", calibrate: bool | str = "auto",
                 thresholds: ClassThresholds | str | None = "auto", metric: str = "log_loss", n_trials: int = 200,
                 seed: int = 0, storage: str | optuna.storages.BaseStorage | None = None) -> None:
        self.stages = stages
        self.blend = blend
        self.calibrate = calibrate
        self.thresholds = thresholds
        self.metric = metric
        self.n_trials = n_trials
        self.seed = seed
        self.storage = storage

    @classmethod
    def from_recipe(cls, name: str = DEFAULT_RECIPE, *, metric: str = "log_loss", n_trials: int = 200, seed: int = 0,
                    storage: str | optuna.storages.BaseStorage | None = None) -> Stacker:
        """A Stacker with the stages and steps of a registered recipe, every one of them visible.

        Examples
        --------
        >>> stk = Stacker.from_recipe("yandex", n_trials=20)
        >>> [name for name, _ in stk.stages], stk.blend
        (['catboost', 'lightgbm', 'soft_vote'], {'catboost': 0.4, 'lightgbm': 0.3, 'soft_vote': 0.3})
        >>> stk.set_params(catboost__params={"iterations": 50}).get_params()["catboost__params"]
        {'iterations': 50}
        """
        params = recipe_params(name, metric=metric, n_trials=n_trials, seed=seed, storage=storage)
        return cls(**params, metric=metric, n_trials=n_trials, seed=seed, storage=storage)

    # ------------------------------------------------------------------ nested params
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameters; with ``deep=True`` also each stage as ``<name>`` and its own as ``<name>__<param>``."""
        out = super().get_params(deep=False)
        if deep and self.stages is not None:
            for name, stage in self.stages:
                out[name] = stage
                out.update({f"{name}__{key}": value for key, value in stage.get_params(deep=True).items()})
        return out

    def set_params(self, **params: Any) -> Stacker:
        """Set parameters; ``<stage>`` replaces a stage, ``<stage>__<param>`` sets one of its parameters."""
        if self.stages is not None:
            stages = list(self.stages)
            names = [name for name, _ in stages]
            for key in list(params):
                head, sep, rest = key.partition("__")
                if head not in names:
                    continue
                i = names.index(head)
                value = params.pop(key)
                if sep:
                    stages[i] = (head, clone(stages[i][1]).set_params(**{rest: value}))
                else:
                    stages[i] = (head, value)
            self.stages = stages
        super().set_params(**params)
        return self

    # ------------------------------------------------------------------ fit
    def fit(self, oof_logits: LogitInput, y: ArrayLike | None = None, *, folds: ArrayLike | None = None,
            models: Sequence[str] | None = None) -> Stacker:
        """Fit every step on OOF logits: a dict name -> ``(n, C)``, an ``(M, n, C)`` array or a
        :class:`~ensemble_kit.LogitStore` (its labels and folds; ``models`` selects entries)."""
        start = time.perf_counter()
        get_metric(self.metric)
        stages = self._stages()
        (required, reason), stage_name = max(((stage._required_models(), name) for name, stage in stages),
                                             key=lambda item: item[0][0])
        stack, yy, folds_array = resolve_fit_inputs(oof_logits, y, folds, models, owner="Stacker", min_models=required,
                                                    seed=self.seed, reason=f"stage {stage_name!r}: {reason}")
        self.storage_ = self.storage
        if self.storage_ is None and isinstance(oof_logits, LogitStore):
            # the store's own SQLite file: several processes stacking one store split its studies
            self.storage_ = oof_logits.workspace.study_storage()
        self.model_names_, self.n_classes_, self.folds_ = stack.names, stack.n_classes, folds_array
        self._fit_steps(dict(zip(stack.names, stack.logits)), yy, folds_array, stages)
        self.fit_seconds_ = time.perf_counter() - start
        logger.info("Stacker fitted in %.1fs", self.fit_seconds_)
        return self

    def _stages(self) -> list[tuple[str, BaseEnsembler]]:
        if self.stages is None:
            return recipe_params(DEFAULT_RECIPE, metric=self.metric, n_trials=self.n_trials, seed=self.seed,
                                 storage=self.storage)["stages"]
        return check_stages(self.stages, owner="Stacker")

    def _with_storage(self, stage: BaseEnsembler) -> BaseEnsembler:
        """A clone of ``stage`` whose Optuna studies go where the Stacker's go, unless it says otherwise."""
        stage = clone(stage)
        if "storage" in stage.get_params(deep=False) and stage.get_params(deep=False)["storage"] is None:
            stage.set_params(storage=self.storage_)
        return stage

    def _fit_steps(self, named: dict[str, NDArray], y: NDArray[np.int64], folds: NDArray[np.int64],
                   stages: list[tuple[str, BaseEnsembler]]) -> None:
        rows: list[dict[str, Any]] = []

        def report(step: str, kind: str, probs: NDArray, seconds: float, *, labels: NDArray | None = None,
                   kept: bool = True) -> None:
            rows.append({"step": step, "kind": kind, "kept": kept, **scores(y, probs, kind="probs", labels=labels),
                         "fit_seconds": seconds})

        for name, logits in named.items():
            report(name, "base model", np.exp(log_softmax(logits)), np.nan)
        report("mean_probs", "reference", np.exp(log_softmax(np.stack(list(named.values())))).mean(axis=0), 0.0)

        self.stage_names_ = [name for name, _ in stages]
        if len(stages) == 1:
            (stage_name, stage), = stages
            self.ensemble_ = self._with_storage(stage).fit(named, y, folds=folds)
            report(stage_name, "stage", self.ensemble_.oof_proba_, self.ensemble_.fit_seconds_)
        else:
            self.ensemble_ = Blender([(n, self._with_storage(s)) for n, s in stages], weights=self.blend,
                                     metric=self.metric, n_trials=self.n_trials, seed=self.seed,
                                     storage=self.storage_).fit(named, y, folds=folds)
            for name, stage in self.ensemble_.stages_.items():
                report(name, "stage", stage.oof_proba_, stage.fit_seconds_)
            report("blend", "blend", self.ensemble_.oof_proba_, self.ensemble_.fit_seconds_)
        oof = self.ensemble_.oof_proba_
        oof = self._fit_temperature(oof, y, folds, report)
        self.oof_labels_ = self._fit_thresholds(oof, y, folds, report)
        self.oof_proba_ = oof
        self.report_ = pd.DataFrame(rows)

    def _fit_temperature(self, oof: NDArray, y: NDArray[np.int64], folds: NDArray[np.int64], report: Any) -> NDArray:
        """Temperature scaling, kept only when it lowers nested log loss."""
        self.temperature_, self.temperature_rejected_ = None, False
        calibrate = self.calibrate == "auto" and self.metric == "log_loss" or self.calibrate is True
        if self.calibrate not in ("auto", True, False):
            raise ValidationError(f"calibrate must be True, False or 'auto'; got {self.calibrate!r}.")
        if not calibrate:
            return oof
        t0 = time.perf_counter()
        log_oof = safe_log(oof)
        nested = np.exp(cross_fit(folds, lambda fit, held, _k: log_softmax(
            log_oof[held] / fit_temperature(log_oof[fit], y[fit], seed=self.seed))))
        loss = get_metric("log_loss")
        keep = loss(y, nested, kind="probs") <= loss(y, oof, kind="probs")
        report("+temperature", "calibration", nested, time.perf_counter() - t0, kept=keep)
        if not keep:
            self.temperature_rejected_ = True
            logger.warning("a temperature makes nested log loss worse: probabilities stay as the ensemble gives them")
            return oof
        self.temperature_ = fit_temperature(log_oof, y, seed=self.seed)
        return nested

    def _fit_thresholds(self, oof: NDArray, y: NDArray[np.int64], folds: NDArray[np.int64], report: Any) -> NDArray:
        """Decision rules; tuned ones are kept only when they win on held-out folds."""
        self.thresholds_, self.thresholds_rejected_ = None, False
        rule = self._resolved_thresholds()
        labels = oof.argmax(axis=1)
        if rule is None:
            return labels
        t0 = time.perf_counter()
        fitted = clone(rule).fit(oof, y)
        if rule.rules is not None:  # fixed rules learn nothing: no nesting needed, always applied
            self.thresholds_ = fitted
            decided = fitted.predict(oof)
            report("+thresholds", "decision", oof, time.perf_counter() - t0, labels=decided)
            return decided
        tuned = cross_fit(folds, lambda fit, held, _k: clone(rule).fit(oof[fit], y[fit]).predict(oof[held]))
        metric = get_metric(self.metric)
        before = scores(y, oof, kind="probs")[metric.name]
        after = scores(y, oof, kind="probs", labels=tuned)[metric.name]
        # Offsets that lose on held-out folds fit fold-specific biases of the OOF predictions,
        # not the classes: keep arg-max decisions rather than ship them.
        keep = (after - before) * (1 if metric.greater_is_better else -1) >= 0
        report("+thresholds", "decision", oof, time.perf_counter() - t0, labels=tuned, kept=keep)
        if not keep:
            self.thresholds_rejected_ = True
            logger.warning("class offsets lower nested-CV %s by %.4f: decisions stay arg-max", metric.name,
                           abs(after - before))
            return labels
        self.thresholds_ = fitted
        return tuned

    def _resolved_thresholds(self) -> ClassThresholds | None:
        if isinstance(self.thresholds, str):
            if self.thresholds != "auto":
                raise ValidationError(f"thresholds must be a ClassThresholds, None or 'auto'; got {self.thresholds!r}.")
            return ClassThresholds(optimize=self.metric) if get_metric(self.metric).scores_labels else None
        if self.thresholds is not None and not isinstance(self.thresholds, ClassThresholds):
            raise ValidationError(f"thresholds must be a ClassThresholds, None or 'auto'; got {self.thresholds!r}.")
        return self.thresholds

    # ------------------------------------------------------------------ predict
    def predict_proba(self, test_logits: LogitInput, *, models: Sequence[str] | None = None) -> NDArray:
        """Probabilities ``(n, C)``; a LogitStore gives its fold-averaged test logits."""
        check_is_fitted(self, "ensemble_")
        if models is None and isinstance(test_logits, LogitStore):
            models = list(self.model_names_)
        stack = as_logit_stack(test_logits, models=models, split="test")
        check_same_models(self.model_names_, stack.names, self.n_classes_, stack)
        log_p = self.ensemble_._predict_log_proba(stack.logits)
        if self.temperature_ is not None:
            log_p = log_softmax(log_p / self.temperature_)
        return np.exp(log_p)

    def predict(self, test_logits: LogitInput, *, models: Sequence[str] | None = None) -> NDArray[np.int64]:
        """Class indices, under the fitted class thresholds when the recipe has them."""
        return self.decide(self.predict_proba(test_logits, models=models))

    def decide(self, proba: ArrayLike) -> NDArray[np.int64]:
        """Class indices for probabilities from :meth:`predict_proba` (fitted thresholds or rules, else arg-max)."""
        check_is_fitted(self, "ensemble_")
        probs = np.asarray(proba)
        return self.thresholds_.predict(probs) if self.thresholds_ is not None else probs.argmax(axis=1)

    # ------------------------------------------------------------------ persistence
    def describe(self) -> StackSummary:
        """What the fitted stack learned: models, every stage's weights and temperatures, the
        blend, the final temperature and the decision rules, as a typed :class:`~ensemble_kit.ensemble.StackSummary`.

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 3, 200)
        >>> oof = {f"m{i}": np.eye(3)[y] * (1 + i) + rng.normal(size=(200, 3)) for i in range(2)}
        >>> summary = Stacker.from_recipe("hill_climb").fit(oof, y).describe()
        >>> summary.models, summary.stages[0].type, round(sum(summary.stages[0].model_weights.values()), 6)
        (('m0', 'm1'), 'hill_climbing', 1.0)
        """
        from ensemble_kit.ensemble._summary import describe_stacker

        check_is_fitted(self, "ensemble_")
        return describe_stacker(self)

    def save(self, path: str | Path) -> Path:
        """Write the fitted stack to the folder ``path`` as one artifact: parameters, fitted state,
        the honest report, :meth:`describe`'s summary and the OOF predictions; JSON, ``.npy`` and
        the GBMs' model files, every file checksummed, never pickle (``docs/stack-format.md``).

        An earlier saved stack at ``path`` is replaced atomically; any other non-empty folder is
        refused with :class:`~ensemble_kit.errors.DestinationError`. Returns the folder.
        """
        from ensemble_kit.ensemble._persist import save_stack

        return save_stack(self, path)

    @classmethod
    def load(cls, path: str | Path) -> Stacker:
        """A Stacker saved with :meth:`save` (by this or an earlier version), ready to predict.
        Loading a folder from elsewhere cannot run code: classes come from the registries, every
        file and the manifest are checksum-verified and every restored value is checked.

        Examples
        --------
        >>> import numpy as np, tempfile
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 3, 200)
        >>> oof = {f"m{i}": np.eye(3)[y] * (1 + i) + rng.normal(size=(200, 3)) for i in range(2)}
        >>> stk = Stacker.from_recipe("aoi", n_trials=5).fit(oof, y)
        >>> again = Stacker.load(stk.save(tempfile.mkdtemp() + "/stack"))
        >>> bool(np.abs(again.predict_proba(oof) - stk.predict_proba(oof)).max() < 1e-6)
        True
        """
        from ensemble_kit.ensemble._persist import load_stacker, stacker_folder

        # the folder you name may be reached through a link of yours; links inside it are refused
        return load_stacker(stacker_folder(Path(path).resolve()), cls)

    @property
    def study_names_(self) -> list[str]:
        """Names of every Optuna study this fit ran (open them in optuna-dashboard)."""
        check_is_fitted(self, "ensemble_")
        return list(getattr(self.ensemble_, "study_names_", []))
