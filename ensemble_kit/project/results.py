"""Fitted stacks saved inside the store (``STORE/stacks/<name>/``), for reports and submissions.

A saved stack is plain files: ``summary.json`` (recipe, metric, models, what was fitted:
weights, temperatures, class offsets or rules, and held-out test scores when the test labels
are known), ``report.csv`` (the Stacker's honest CV report), ``.npy`` arrays of OOF and test
probabilities and decided labels, and ``stacker/``: the fitted Stacker itself
(:meth:`Stacker.save <ensemble_kit.Stacker.save>`), which predicts new images. It is written to a staging folder and moved into place, so
a crash never leaves a half-written stack under the final name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ensemble_kit.ensemble._claims import masked_url, open_storage
from ensemble_kit.ensemble.blending import Blender
from ensemble_kit.ensemble.stacker import Stacker
from ensemble_kit.errors import StoreCorruptedError, StoreError, ValidationError
from ensemble_kit.ensemble._recipes import RECIPES
from ensemble_kit.metrics import list_metrics, scores
from ensemble_kit.project.config import StackConfig
from ensemble_kit.store import LogitStore, check_name
from ensemble_kit.store._paths import case_collision
from ensemble_kit.store._files import load_array, open_regular, read_json
from ensemble_kit.store._workspace import remove_tree

logger = logging.getLogger(__name__)

_ARRAYS = ("oof_proba", "oof_labels", "test_proba", "test_labels")
TEST_LABELS = "test_labels.npy"
SUMMARY = "summary.json"
STACKER_DIR = "stacker"


@dataclass(frozen=True)
class StackResult:
    """A fitted stack as saved in the store."""

    name: str
    path: Path
    summary: dict[str, Any]
    report: pd.DataFrame
    oof_proba: NDArray
    oof_labels: NDArray
    test_proba: NDArray | None
    test_labels: NDArray | None

    @property
    def metric(self) -> str:
        return self.summary["metric"]

    @property
    def models(self) -> list[str]:
        return list(self.summary["models"])

    @property
    def stacker_path(self) -> Path:
        return self.path / STACKER_DIR

    def load_stacker(self) -> Stacker:
        """The fitted Stacker, to predict new logits (:meth:`Stacker.load <ensemble_kit.Stacker.load>`)."""
        return Stacker.load(self.stacker_path)


def fit_stack(store: LogitStore, config: StackConfig) -> StackResult:
    """Fit :class:`~ensemble_kit.Stacker` on the store as ``config`` says, save it, return it.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from ensemble_kit import LogitStore
    >>> rng = np.random.default_rng(0)
    >>> y = np.arange(60) % 3
    >>> store = LogitStore.create(tempfile.mkdtemp() + "/s", np.arange(60), y, [0, 1, 2], n_folds=3,
    ...                           test_ids=np.arange(10))
    >>> for i in range(2):
    ...     _ = store.put(f"m{i}", np.eye(3)[y] * (i + 1) + rng.normal(size=(60, 3)), rng.normal(size=(10, 3)))
    >>> result = fit_stack(store, StackConfig(recipe="hill_climb"))
    >>> result.name, result.test_proba.shape, sorted(p.name for p in result.path.glob("*.json"))
    ('hill_climb', (10, 3), ['summary.json'])
    """
    _check_new_stack(store, config.result_name)
    stacker = Stacker.from_recipe(config.recipe, metric=config.metric, n_trials=config.n_trials, seed=config.seed,
                                  storage=config.storage)
    stacker.fit(store, models=list(config.models) if config.models else None)
    has_test = store.test_ids is not None
    test_proba = stacker.predict_proba(store) if has_test else None
    test_labels = stacker.decide(test_proba) if has_test else None
    summary = {
        "name": config.result_name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": _plain_config(config),
        "recipe": config.recipe, "metric": config.metric, "description": RECIPES.summary(config.recipe),
        "models": list(stacker.model_names_), "classes": list(store.classes), "fit_seconds": stacker.fit_seconds_,
        "optuna_storage": masked_url(str(stacker.storage_)), "study_names": stacker.study_names_,
        "fitted": describe_stacker(stacker),
    }
    y_test = held_out_labels(store)
    if y_test is not None and test_proba is not None:
        summary["held_out_test"] = scores(y_test, test_proba, kind="probs", labels=test_labels)
    arrays = {"oof_proba": stacker.oof_proba_, "oof_labels": stacker.oof_labels_, "test_proba": test_proba,
              "test_labels": test_labels}
    _save(store, config.result_name, summary, stacker, arrays)
    _label_studies(stacker, config.result_name)
    return load_stack(store, config.result_name)


def describe_stacker(stacker: Stacker) -> dict[str, Any]:
    """What a fitted Stacker learned, as plain JSON-able values (weights per model/stage, decisions)."""
    names = list(stacker.model_names_)
    out: dict[str, Any] = {"stages": {}}
    ensemble = stacker.ensemble_
    stages = ensemble.stages_ if isinstance(ensemble, Blender) else {stacker.stage_names_[0]: ensemble}
    for stage_name, stage in stages.items():
        info: dict[str, Any] = {"type": type(stage).__name__}
        weights = getattr(stage, "weights_", None)
        if weights is not None and not isinstance(weights, dict):
            info["model_weights"] = dict(zip(names, np.asarray(weights, dtype=float).round(6).tolist()))
        temperatures = getattr(stage, "temperatures_", None)
        if temperatures is not None:
            info["model_temperatures"] = dict(zip(names, np.asarray(temperatures, dtype=float).round(6).tolist()))
        for attr in ("layout_", "n_iterations_"):
            if getattr(stage, attr, None) is not None:
                info[attr.rstrip("_")] = getattr(stage, attr)
        out["stages"][stage_name] = info
    blend = getattr(ensemble, "weights_", None)
    if isinstance(blend, dict):
        out["blend_weights"] = {k: round(float(v), 6) for k, v in blend.items()}
        out["blend_temperatures"] = {k: round(float(v), 6) for k, v in ensemble.temperatures_.items()}
    if stacker.temperature_ is not None:
        out["temperature"] = float(stacker.temperature_)
    out["temperature_rejected"] = bool(stacker.temperature_rejected_)
    out["thresholds_rejected"] = bool(stacker.thresholds_rejected_)
    thresholds = stacker.thresholds_
    if thresholds is not None:
        if thresholds.rules is not None:
            out["class_rules"] = {str(k): float(v) for k, v in thresholds.rules.items()}
        else:
            out["class_offsets"] = np.asarray(thresholds.offsets_, dtype=float).round(6).tolist()
            out["thresholds_optimize"] = thresholds.optimize
    return out


def _save(store: LogitStore, name: str, summary: dict[str, Any], stacker: Stacker,
          arrays: dict[str, NDArray | None]) -> Path:
    final = _check_new_stack(store, name)
    root = store.workspace.stacks_root(create=True)
    staging = root / f".{name}.writing-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        for key, array in arrays.items():
            if array is not None:
                np.save(staging / f"{key}.npy", np.asarray(array), allow_pickle=False)
        stacker.report_.to_csv(staging / "report.csv", index=False)
        stacker.save(staging / STACKER_DIR)
        (staging / SUMMARY).write_text(json.dumps(summary, indent=2, allow_nan=False), encoding="utf-8")
        retired = None
        if os.path.lexists(final):
            retired = root / f".{name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, retired)
        os.rename(staging, final)
        if retired is not None:
            remove_tree(retired, trash_root=root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("saved stack %r to %s", name, final)
    return final


def _plain_config(config: StackConfig) -> dict[str, Any]:
    """The stack's settings as JSON, with a storage URL's password masked (a store is shared)."""
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
    if config.storage is not None:
        plain["storage"] = masked_url(config.storage)
    return plain


def _label_studies(stacker: Stacker, name: str) -> None:
    """Name the saved stack in each of its studies (optuna-dashboard shows user attributes)."""
    import optuna

    for study_name in stacker.study_names_:
        optuna.load_study(study_name=study_name, storage=open_storage(stacker.storage_)).set_user_attr("stack", name)


def _check_new_stack(store: LogitStore, name: str) -> Path:
    """The folder a stack ``name`` will be saved in, refused before anything is fitted if unusable."""
    final = store.workspace.stack_dir(name)
    root = store.workspace.stacks_root()
    if root.is_dir():
        other = case_collision(name, (p.name for p in root.iterdir() if not p.name.startswith(".")))
        if other is not None:
            raise ValidationError(f"Stack name {name!r} differs only in case from the saved stack {other!r}; on "
                                  "case-insensitive file systems (macOS, Windows) both would share one folder.")
    return final


def list_stacks(store: LogitStore) -> list[str]:
    """Names of the stacks saved in the store, oldest first (damaged ones are skipped with a warning)."""
    root = store.workspace.stacks_root()
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.name.startswith("."):
            continue
        try:
            check_name(child.name, what="stack name")
            summary = read_json(store.workspace.stack_dir(child.name) / SUMMARY)
        except FileNotFoundError:
            continue
        except (StoreCorruptedError, ValidationError) as exc:
            logger.warning("skipping saved stack %r: %s", child.name, exc)
            continue
        found.append((str(summary.get("created", "")), child.name))
    return [name for _, name in sorted(found)]


def load_stack(store: LogitStore, name: str | None = None) -> StackResult:
    """A saved stack (default: the most recently fitted one)."""
    available = list_stacks(store)
    if not available:
        raise StoreError(f"Store {str(store.path)!r} has no fitted stack yet: run `ensemble-kit stack "
                         f"{store.path}` first.")
    name = available[-1] if name is None else name
    if name not in available:
        raise StoreError(f"Store {str(store.path)!r} has no stack {name!r}; saved stacks: {available}.")
    path = store.workspace.stack_dir(name)
    summary = read_json(path / SUMMARY)
    loaded = {key: load_array(path / f"{key}.npy") if os.path.lexists(path / f"{key}.npy") else None
              for key in _ARRAYS}
    with open_regular(path / "report.csv") as fh:
        report = pd.read_csv(fh)
    return StackResult(name=name, path=path, summary=summary, report=report, **loaded)


def held_out_labels(store: LogitStore) -> np.ndarray | None:
    """Test labels saved by :func:`open_project_store` (``None`` when the test set is unlabelled)."""
    path = store.workspace.project_dir() / TEST_LABELS
    if not os.path.lexists(path):
        return None
    labels = load_array(path)
    if labels.shape != (0 if store.test_ids is None else len(store.test_ids),) or labels.dtype.kind != "i" \
            or (labels.size and (labels.min() < 0 or labels.max() >= store.n_classes)):
        raise StoreCorruptedError(f"{str(path)!r} does not hold one class index per test id of the store.", path=path)
    return labels


def results_table(store: LogitStore, stack: StackResult | None = None) -> pd.DataFrame:
    """Every base model and every stack step with honest OOF scores, plus held-out test scores.

    Without a stack, the base models' OOF scores. Columns ``test_<metric>`` appear when the
    project kept the test labels (:func:`~ensemble_kit.project.held_out_labels`); the last row
    then scores the stack's submitted test predictions (decided labels included).
    """
    metrics = list_metrics()
    if stack is not None:
        columns = ["step", "kind", *(["kept"] if "kept" in stack.report.columns else []),
                   *[m for m in metrics if m in stack.report.columns], "fit_seconds"]
        table = stack.report[columns].copy()
        models = stack.models
    else:
        board = store.leaderboard("log_loss")
        table = board[["model", *metrics]].rename(columns={"model": "step"})
        table.insert(1, "kind", "base model")
        models = list(board["model"])
    y_test = held_out_labels(store)
    if y_test is None or store.test_ids is None:
        return table
    test_scores = {name: scores(y_test, store.test(name), kind="logits") for name in models}
    # only base models have test scores of their own: key by (kind, name), never by display name alone
    is_model = table["kind"] == "base model"
    for m in metrics:
        table[f"test_{m}"] = [test_scores[step][m] if model and step in test_scores else np.nan
                              for step, model in zip(table["step"], is_model)]
    if stack is not None and "held_out_test" in stack.summary:
        final = {"step": "final (as submitted)", "kind": "held-out test",
                 **{f"test_{m}": v for m, v in stack.summary["held_out_test"].items()}}
        table = pd.concat([table, pd.DataFrame([final])], ignore_index=True)
    return table
