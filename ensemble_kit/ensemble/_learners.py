"""Meta-learner backends: how a second-level model is fitted and asked for scores.

A :class:`LearnerBackend` hides one library behind two calls, so :class:`MetaLearner` holds no
per-library branches: ``fit`` (with an early-stopping split the meta-learner chose) and
``scores`` (binary margins for the class-wise layout, log-probabilities for the wide one).
Backends are registered by name in :data:`LEARNERS` (``"lightgbm"``, ``"catboost"``,
``"logreg"``); any scikit-learn classifier can be passed instead and is wrapped by
:class:`EstimatorLearner`.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import clone

from ensemble_kit._optional import import_optional
from ensemble_kit._registry import Registry
from ensemble_kit.ensemble._gbm_models import catboost_model_json, legacy_cbm_to_json, lightgbm_model_text
from ensemble_kit.errors import ValidationError
from ensemble_kit.metrics import safe_log

__all__ = ["LEARNERS", "EstimatorLearner", "FitRequest", "LearnerBackend", "register_learner", "resolve_learner"]

_EARLY_STOPPING_ROUNDS = 50
#: Inverse regularisation strengths the logistic meta-learner chooses from by inner CV, unless
#: ``C`` is given.
LOGREG_CS = tuple(float(c) for c in np.logspace(-3, 1, 9))
_LOGREG_INNER_FOLDS = 3
#: Largest rows x coefficients^2 (the cost of one Newton step) for which the logistic meta-learner
#: uses ``newton-cholesky``; above it ``lbfgs``, whose steps cost rows x coefficients.
_NEWTON_CHOLESKY_MAX_WORK = 5e9


@dataclass(frozen=True)
class FitRequest:
    """Everything one meta-learner fit needs, chosen by :class:`MetaLearner`."""

    X: NDArray
    y: NDArray
    binary: bool                   # class-wise rows (target: is this the true class?) vs. wide multi-class
    n_classes: int
    categorical: int | None        # column holding the class id (class-wise layout)
    weight: NDArray | None
    fit_rows: NDArray              # rows the model learns from
    stop_rows: NDArray             # held-out rows for early stopping (never the rows being predicted)
    seed: int
    threads: int
    params: dict[str, Any]
    groups: NDArray | None = None  # sample of every row (class-wise layout): inner CV keeps a sample's rows together


class LearnerBackend(ABC):
    """One meta-learner library. Subclass, then ``register_learner("name", Backend())``."""

    #: Whether ``fit`` uses ``stop_rows`` for early stopping (else it learns from all rows).
    early_stopping = False

    @abstractmethod
    def fit(self, request: FitRequest) -> Any:
        """Fit and return the model."""

    @abstractmethod
    def scores(self, model: Any, X: NDArray, *, binary: bool, categorical: int | None) -> NDArray:
        """``(n,)`` margins for binary rows, ``(n, K)`` log-probabilities over :meth:`classes` otherwise."""

    def classes(self, model: Any) -> NDArray[np.int64] | None:
        """Class indices a multi-class model knows, in the column order of :meth:`scores` (``None``: all)."""
        return None

    def n_iterations(self, model: Any) -> int | None:
        """Boosting rounds kept after early stopping (``None`` for non-boosted learners)."""
        return None

    def save(self, model: Any, out: Any, key: str, *, n_iterations: int | None) -> dict[str, Any]:
        """The fitted ``model`` as JSON plus files written with ``out`` (never pickle)."""
        raise ValidationError(f"The {type(self).__name__} meta-learner backend cannot be saved without pickle; "
                              "give it save()/load() methods.")

    def load(self, saved: dict[str, Any], source: Any) -> Any:
        """The model :meth:`save` described, its files read (checksum-verified) through ``source``."""
        raise ValidationError(f"The {type(self).__name__} meta-learner backend cannot load saved models.")


LEARNERS: Registry[LearnerBackend] = Registry("meta-learner backend")


def register_learner(name: str, backend: LearnerBackend, *, replace: bool = False) -> LearnerBackend:
    """Make ``MetaLearner(learner=name)`` use ``backend``."""
    return LEARNERS.register(name, backend, replace=replace)


class _LightGBM(LearnerBackend):
    """LightGBM gradient boosting, early-stopped on held-out fitting rows."""

    early_stopping = True

    def fit(self, r: FitRequest) -> Any:
        lgb = import_optional("lightgbm", feature="The LightGBM meta-learner")
        params = dict(r.params)
        rounds = params.pop("num_boost_round", 1000)
        defaults = dict(learning_rate=0.1, num_leaves=15, min_data_in_leaf=50, feature_fraction=0.8,
                        bagging_fraction=0.8, bagging_freq=1, lambda_l2=5.0, seed=r.seed, num_threads=r.threads,
                        verbosity=-1, deterministic=True, force_row_wise=True,
                        **({"objective": "binary"} if r.binary else {"objective": "multiclass", "num_class": r.n_classes}))
        categorical = [r.categorical] if r.categorical is not None else "auto"
        w_fit = None if r.weight is None else r.weight[r.fit_rows]
        w_stop = None if r.weight is None else r.weight[r.stop_rows]
        train_set = lgb.Dataset(r.X[r.fit_rows], r.y[r.fit_rows], weight=w_fit, categorical_feature=categorical,
                                free_raw_data=True)
        stop_set = lgb.Dataset(r.X[r.stop_rows], r.y[r.stop_rows], weight=w_stop, reference=train_set,
                               categorical_feature=categorical)
        booster = lgb.train({**defaults, **params}, train_set, num_boost_round=rounds, valid_sets=[stop_set],
                            callbacks=[lgb.early_stopping(_EARLY_STOPPING_ROUNDS, verbose=False)])
        return booster

    def scores(self, model: Any, X: NDArray, *, binary: bool, categorical: int | None) -> NDArray:
        raw = model.predict(X, raw_score=True, num_iteration=self.n_iterations(model))
        return raw if binary else _log_softmax(raw)

    def n_iterations(self, model: Any) -> int | None:
        best = int(model.best_iteration or 0)
        return best if best > 0 else int(model.current_iteration())

    def save(self, model: Any, out: Any, key: str, *, n_iterations: int | None) -> dict[str, Any]:
        # only the kept rounds: the trees grown after the best iteration never predict
        text = model.model_to_string(num_iteration=n_iterations).encode("utf-8")
        # what load() would refuse is refused now, not when the stack is next read
        lightgbm_model_text(text, where=f"the fitted LightGBM model {key!r}")
        return {"booster": out.blob(key, text, suffix=".lgb.txt")}

    def load(self, saved: dict[str, Any], source: Any) -> Any:
        lgb = import_optional("lightgbm", feature="The LightGBM meta-learner")
        reference = _saved_reference(saved, "booster", "LightGBM")
        where = f"the saved LightGBM model {_blob_key(reference)!r}"
        # LightGBM's reader trusts its input (a cycle among a tree's children makes prediction
        # loop forever): it sees only text that parsed as a well-formed model here first
        text = lightgbm_model_text(source.blob(reference), where=where)
        try:
            return lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as exc:
            raise ValidationError(f"{where} cannot be read ({exc}).") from exc


class _CatBoost(LearnerBackend):
    """CatBoost gradient boosting (the class id as a categorical feature), early-stopped."""

    early_stopping = True

    def fit(self, r: FitRequest) -> Any:
        catboost = import_optional("catboost", feature="The CatBoost meta-learner")
        # max_ctr_complexity=1: the class id (the class-wise layout's one categorical) is not
        # combined with other features into new categoricals; on 396 classes that cut the stage
        # from 104 s to 71 s at the same nested OOF log loss (1.7009 vs 1.7011, benchmarks/README.md)
        defaults = dict(iterations=1000, learning_rate=0.1, depth=5, l2_leaf_reg=5.0, bootstrap_type="Bernoulli",
                        subsample=0.8, border_count=128, max_ctr_complexity=1,
                        loss_function="Logloss" if r.binary else "MultiClass",
                        random_seed=r.seed, thread_count=r.threads, verbose=False, allow_writing_files=False)
        model = catboost.CatBoostClassifier(**{**defaults, **r.params})
        w_fit = None if r.weight is None else r.weight[r.fit_rows]
        w_stop = None if r.weight is None else r.weight[r.stop_rows]
        try:
            model.fit(self._pool(r.X[r.fit_rows], r.y[r.fit_rows], r.categorical, w_fit),
                      eval_set=self._pool(r.X[r.stop_rows], r.y[r.stop_rows], r.categorical, w_stop),
                      early_stopping_rounds=_EARLY_STOPPING_ROUNDS)
        except catboost.CatBoostError as exc:
            # e.g. a class absent from the rows CatBoost learns from while its early-stopping rows hold it
            counts = np.bincount(r.y, minlength=2)
            raise ValidationError(
                f"the CatBoost meta-learner cannot be fitted on these rows ({str(exc).strip().splitlines()[-1]}); "
                f"{len(r.y)} rows, the rarest class has {int(counts[counts > 0].min())}. With so few rows per "
                "class, use a recipe without GBM stages (e.g. 'aoi', 'hill_climb' or 'average').") from exc
        return model

    @staticmethod
    def _pool(X: NDArray, y: NDArray | None, categorical: int | None, weight: NDArray | None = None) -> Any:
        import pandas as pd
        from catboost import Pool

        if categorical is None:
            return Pool(X, y, weight=weight)
        frame = pd.DataFrame(X)
        frame[categorical] = frame[categorical].astype(np.int64)
        return Pool(frame, y, cat_features=[categorical], weight=weight)

    def scores(self, model: Any, X: NDArray, *, binary: bool, categorical: int | None) -> NDArray:
        pool = self._pool(X, None, categorical)
        if binary:
            return model.predict(pool, prediction_type="RawFormulaVal")
        return safe_log(model.predict_proba(pool))

    def classes(self, model: Any) -> NDArray[np.int64] | None:
        return np.asarray(model.classes_, dtype=np.int64)

    def n_iterations(self, model: Any) -> int | None:
        best = model.get_best_iteration()
        return None if best is None else int(best) + 1

    def save(self, model: Any, out: Any, key: str, *, n_iterations: int | None) -> dict[str, Any]:
        import tempfile
        from pathlib import Path

        # CatBoost's JSON, not its binary .cbm: JSON can be checked before CatBoost reads it
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.json"
            model.save_model(str(path), format="json")
            written = path.read_bytes()
        # saved in the checked, canonical form that load() hands to CatBoost; a model load()
        # would refuse (e.g. grow_policy="Lossguide") is refused now
        canonical = catboost_model_json(written, where=f"the fitted CatBoost model {key!r}")
        return {"model_json": out.blob(key, canonical, suffix=".cb.json")}

    def load(self, saved: dict[str, Any], source: Any) -> Any:
        import tempfile
        from pathlib import Path

        catboost = import_optional("catboost", feature="The CatBoost meta-learner")
        if isinstance(saved, dict) and "model" in saved and "model_json" not in saved:
            # stacks saved before the JSON format hold a .cbm, which only CatBoost's native
            # reader parses: it is converted in a child process, then checked like JSON
            reference = saved["model"]
            where = f"the saved CatBoost model {_blob_key(reference)!r} (legacy .cbm)"
            document = legacy_cbm_to_json(source.blob(reference), where=where)
        else:
            reference = _saved_reference(saved, "model_json", "CatBoost")
            where = f"the saved CatBoost model {_blob_key(reference)!r}"
            document = source.blob(reference)
        canonical = catboost_model_json(document, where=where)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.json"
            path.write_bytes(canonical)
            try:
                return catboost.CatBoostClassifier().load_model(str(path), format="json")
            except catboost.CatBoostError as exc:
                raise ValidationError(f"{where} cannot be read ({exc}).") from exc


class EstimatorLearner(LearnerBackend):
    """Any scikit-learn classifier (cloned for every fit), e.g. ``LogisticRegression(C=0.1)``.

    Binary rows are scored with ``decision_function`` when the estimator has one, else with the
    log-odds of ``predict_proba``.
    """

    def __init__(self, estimator: Any) -> None:
        if not (hasattr(estimator, "fit") and hasattr(estimator, "predict_proba")):
            raise ValidationError(f"A meta-learner estimator needs fit() and predict_proba(); got {estimator!r}.")
        self.estimator = estimator

    def fit(self, r: FitRequest) -> Any:
        model = clone(self.estimator)
        if r.params:
            model.set_params(**r.params)
        kwargs = {} if r.weight is None else {_weight_argument(model): r.weight}
        model.fit(r.X, r.y, **kwargs)
        return model

    def scores(self, model: Any, X: NDArray, *, binary: bool, categorical: int | None) -> NDArray:
        if binary:
            if hasattr(model, "decision_function"):
                return np.asarray(model.decision_function(X), dtype=np.float64)
            p = np.asarray(model.predict_proba(X), dtype=np.float64)
            return safe_log(p[:, 1]) - safe_log(p[:, 0])
        return safe_log(model.predict_proba(X))

    def classes(self, model: Any) -> NDArray[np.int64] | None:
        return np.asarray(model.classes_, dtype=np.int64)


def _saved_reference(saved: Any, key: str, library: str) -> Any:
    """The file reference ``saved[key]`` of a saved model description, or a message saying it lacks one."""
    if not isinstance(saved, dict) or key not in saved:
        raise ValidationError(f"a saved {library} model must be a JSON object with a {key!r} file reference; "
                              f"got {_clip(repr(saved))}.")
    return saved[key]


def _blob_key(reference: Any) -> str:
    """The artifact key a ``{"__blob__": key}`` reference names, for messages."""
    key = reference.get("__blob__") if isinstance(reference, dict) else None
    return key if isinstance(key, str) else _clip(repr(reference))


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _weight_argument(model: Any) -> str:
    """``sample_weight`` for plain estimators, ``<last step>__sample_weight`` for pipelines."""
    steps = getattr(model, "steps", None)
    return f"{steps[-1][0]}__sample_weight" if steps else "sample_weight"


def _logreg() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))


def _logreg_solver(n_rows: int, n_features: int, n_classes: int) -> str:
    """The faster exact solver for a logistic fit of this size (see :data:`_NEWTON_CHOLESKY_MAX_WORK`).

    For the wide, unscaled layout. On strongly correlated log-probabilities ``lbfgs`` needs
    hundreds of iterations where ``newton-cholesky`` needs ten, but a Newton step costs rows x
    coefficients^2: measured 8-16x faster on real stacks of 1,800-5,000 rows and up to 480
    coefficients, and 12x slower on a synthetic 40,000-row, 1,080-coefficient one
    (``benchmarks/README.md``).
    """
    coefficients = n_features * (1 if n_classes <= 2 else n_classes)
    return "newton-cholesky" if n_rows * coefficients ** 2 <= _NEWTON_CHOLESKY_MAX_WORK else "lbfgs"


@contextmanager
def _newton_fallback_is_expected() -> Iterator[None]:
    """Silence scikit-learn's note that ``newton-cholesky`` handed an ill-conditioned fit to ``lbfgs``.

    Near-separable stacks (very good base models) at the grid's weakest penalties make the
    Hessian singular; scikit-learn then finishes that fit with ``lbfgs`` from where Newton
    stopped, which reaches the same optimum. The warning would reach users from inside the
    inner CV, about a step they did not choose.
    """
    from scipy.linalg import LinAlgWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*NewtonCholeskySolver.*", category=LinAlgWarning)
        yield


class _LogReg(EstimatorLearner):
    """Logistic regression, ``C`` by inner CV (``params`` like ``{"C": 0.1}`` or ``{"logisticregression__C": 0.1}``).

    Wide rows are fitted unscaled: every column is one model's value in nats (or a probability),
    so one L2 penalty shrinks every model alike, where standardising would divide a confident
    model's log-probabilities by their larger spread. That holds while the stage solves by Newton
    steps; a wide stack too large for them is standardised, because ``lbfgs`` on unscaled
    log-probabilities is 10x slower and stops unconverged. Class-wise rows mix ranks, gaps and a
    class id, so they are standardised.
    """

    _ARRAYS = {"standardscaler": ("mean_", "scale_", "var_"), "logisticregression": ("coef_", "intercept_", "classes_")}

    def __init__(self) -> None:
        super().__init__(_logreg())

    def save(self, model: Any, out: Any, key: str, *, n_iterations: int | None) -> dict[str, Any]:
        steps = dict(model.steps)
        return {"params": {name: {k: v for k, v in steps[name].get_params(deep=False).items()
                                  if v is None or isinstance(v, (bool, int, float, str))} for name in self._ARRAYS},
                # an unscaled fit has no scaler arrays (None): absent from the saved stack
                "arrays": {f"{name}.{attr}": out.array(f"{key}.{name}.{attr}", getattr(steps[name], attr))
                           for name, attrs in self._ARRAYS.items() for attr in attrs
                           if getattr(steps[name], attr) is not None},
                "n_features_in": int(model.n_features_in_)}

    def load(self, saved: dict[str, Any], source: Any) -> Any:
        model = _logreg()
        steps = dict(model.steps)
        for name, params in saved["params"].items():
            steps[name].set_params(**params)
        scaler = steps["standardscaler"]
        unused = {"standardscaler.mean_": not scaler.with_mean, "standardscaler.scale_": not scaler.with_std,
                  "standardscaler.var_": not scaler.with_std}  # an unscaled fit saves no scaler arrays
        for name, attrs in self._ARRAYS.items():
            for attr in attrs:
                key = f"{name}.{attr}"
                if unused.get(key, False):
                    setattr(steps[name], attr, None)
                elif key in saved["arrays"]:
                    setattr(steps[name], attr, source.array(saved["arrays"][key]))
                else:
                    raise ValidationError(f"the saved logistic regression lacks its {key!r} array.")
            steps[name].n_features_in_ = int(saved["n_features_in"])
        coef, classes = steps["logisticregression"].coef_, steps["logisticregression"].classes_
        n_features = int(saved["n_features_in"])
        scaler_shapes = {getattr(scaler, attr).shape for attr in ("mean_", "scale_", "var_")
                         if getattr(scaler, attr) is not None}
        if coef.ndim != 2 or coef.shape[1] != n_features or scaler_shapes - {(n_features,)} or len(classes) < 2:
            raise ValidationError("the saved logistic regression's arrays do not fit together.")
        scaler.n_samples_seen_ = 1
        return model

    def fit(self, r: FitRequest) -> Any:
        params = dict(r.params)
        # the short names of the old logreg meta-learner ("C", "max_iter") address the logistic step
        for short in ("C", "max_iter", "penalty", "solver", "tol", "class_weight"):
            if short in params:
                params[f"logisticregression__{short}"] = params.pop(short)
        # Newton steps do not care how the columns are scaled, lbfgs does: on a wide stack too large
        # for Newton (the 40,000-row CIFAR-10 one) unscaled lbfgs took 520-1,000 iterations and did
        # not converge at C >= 1, standardised 60-95, 10x faster (docs/stacking.md). So wide rows stay
        # unscaled only where the stage picks newton-cholesky; class-wise rows are always standardised.
        size_solver = "lbfgs" if r.binary else _logreg_solver(len(r.y), r.X.shape[1], r.n_classes)
        standardise = r.binary or ("logisticregression__solver" not in params and size_solver == "lbfgs")
        params.setdefault("standardscaler__with_mean", standardise)
        params.setdefault("standardscaler__with_std", standardise)
        params.setdefault("logisticregression__solver", size_solver)
        request = FitRequest(**{**r.__dict__, "params": params})
        with _newton_fallback_is_expected():
            if "logisticregression__C" not in params:
                params["logisticregression__C"] = self._inner_cv_C(request)
            return super().fit(request)

    @classmethod
    def _inner_cv_C(cls, r: FitRequest) -> float:
        """``C`` by an inner CV on the fitting rows only (log loss), so the stage's OOF stays nested.

        The search scales and solves as the fit will (``r.params``). With ``C=1`` fixed the stage
        was measured 0.03 test log loss behind a tuned-C LR stack on the balanced 6-class bundle
        and 0.003 on the imbalanced one (``benchmarks/README.md``): how much regularisation a
        stack needs depends on rows and models. :meth:`_choose_C` turns the scores into one ``C``.
        """
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.model_selection import GroupKFold, StratifiedKFold

        counts = np.bincount(r.y)
        folds = min(_LOGREG_INNER_FOLDS, int(counts[counts > 0].min()))
        if folds < 2:
            return 1.0  # a class with one row: nothing to cross-validate on
        if r.groups is not None:
            splits = list(GroupKFold(folds).split(r.X, r.y, r.groups))
        else:
            splits = list(StratifiedKFold(folds, shuffle=True, random_state=r.seed).split(r.X, r.y))
        scaler, logistic = (step for _, step in _logreg().set_params(**r.params).steps)  # as the fit will be
        X = scaler.fit_transform(r.X)
        search = LogisticRegressionCV(Cs=list(LOGREG_CS), cv=splits, scoring="neg_log_loss",
                                      max_iter=logistic.max_iter, solver=logistic.solver,
                                      refit=False, l1_ratios=(0.0,), use_legacy_attributes=False)
        search.fit(X, r.y, **({} if r.weight is None else {"sample_weight": r.weight}))
        return cls._choose_C(np.asarray(search.scores_).reshape(len(splits), len(LOGREG_CS)))

    @staticmethod
    def _choose_C(fold_scores: NDArray) -> float:
        """The mean of each inner fold's best ``C`` (``fold_scores``: folds x :data:`LOGREG_CS`, higher is better).

        ``LogisticRegressionCV(refit=False)``'s rule. A rule that reads the scores' curve instead
        (a parabola through the best mean score's grid point and its neighbours) was measured
        within noise of it (``benchmarks/README.md``).
        """
        return float(np.mean(np.asarray(LOGREG_CS)[np.argmax(fold_scores, axis=1)]))


def _log_softmax(z: NDArray) -> NDArray:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


register_learner("lightgbm", _LightGBM())
register_learner("catboost", _CatBoost())
register_learner("logreg", _LogReg())


def resolve_learner(learner: str | Any) -> LearnerBackend:
    """A registered backend by name, a backend instance, or a scikit-learn classifier (wrapped)."""
    if isinstance(learner, str):
        return LEARNERS.get(learner)
    if isinstance(learner, LearnerBackend):
        return learner
    return EstimatorLearner(learner)
