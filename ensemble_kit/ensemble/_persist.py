"""Saving and loading fitted Stackers: JSON for parameters and decisions, ``.npy`` for arrays, the
GBMs' native model formats, never pickle (see ``docs/stack-format.md``).

Every ensembler describes its fitted state with ``_fitted_state(out, key)`` and restores it with
``_restore_fitted(state, source)``; classes are named by their registry name and resolved
through :data:`~ensemble_kit.ensemble.ENSEMBLERS` on load, so a saved stack can only ever
instantiate registered ensemblers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ensemble_kit._version import __version__
from ensemble_kit.ensemble._registry import ENSEMBLERS
from ensemble_kit.errors import ArtifactError, EnsembleKitError
from ensemble_kit.store._artifacts import ArtifactReader, ArtifactWriter, publish

if TYPE_CHECKING:
    from ensemble_kit.ensemble._base import BaseEnsembler
    from ensemble_kit.ensemble.stacker import Stacker

__all__ = ["STACK_FORMAT", "STACK_MANIFEST", "STACK_VERSION", "load_stacker", "save_stacker"]

STACK_FORMAT = "ensemble_kit.stack"
STACK_VERSION = 1
STACK_MANIFEST = "stack.json"


def registered_name(estimator: Any) -> str:
    for name in ENSEMBLERS.names():
        if type(estimator) is ENSEMBLERS.get(name):
            return name
    raise ArtifactError(f"{type(estimator).__name__} is not a registered ensembler, so it cannot be saved; "
                        "register it with register_ensembler(name).")


def dump_params(estimator: Any, out: ArtifactWriter, key: str) -> dict[str, Any]:
    """An unfitted estimator's constructor parameters as JSON (stages recursively)."""
    params = {}
    for name, value in estimator.get_params(deep=False).items():
        if name == "storage":
            params[name] = value if isinstance(value, str) else None
        elif name == "stages" and value is not None:
            params[name] = [{"name": stage_name, "type": registered_name(stage),
                             "params": dump_params(stage, out, f"{key}.{stage_name}")} for stage_name, stage in value]
        elif name == "thresholds" and value is not None and not isinstance(value, str):
            params[name] = {"type": "ClassThresholds", "params": _plain(value.get_params(deep=False), f"{key}.{name}")}
        else:
            params[name] = _plain(value, f"{key}.{name}")
    return params


def load_params(params: Any, where: str) -> dict[str, Any]:
    from ensemble_kit.decision.thresholds import ClassThresholds

    if not isinstance(params, dict):
        raise ArtifactError(f"{where}: parameters must be a JSON object.")
    loaded = dict(params)
    if loaded.get("stages") is not None:
        loaded["stages"] = [(stage["name"], ENSEMBLERS.get(stage["type"])(**load_params(stage["params"], where)))
                            for stage in loaded["stages"]]
    if isinstance(loaded.get("thresholds"), dict):
        loaded["thresholds"] = ClassThresholds(**_rules_keys(loaded["thresholds"]["params"]))
    if isinstance(loaded.get("blend"), dict):
        loaded["blend"] = {str(k): float(v) for k, v in loaded["blend"].items()}
    return loaded


def _rules_keys(params: dict[str, Any]) -> dict[str, Any]:
    """JSON object keys are strings: class indices of ``rules`` come back as integers."""
    params = dict(params)
    if isinstance(params.get("rules"), dict):
        params["rules"] = {int(k): float(v) for k, v in params["rules"].items()}
    return params


def _plain(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, where) for k, v in value.items()}
    if isinstance(value, np.ndarray) and not value.dtype.hasobject:
        return value.tolist()
    raise ArtifactError(f"Parameter {where} = {value!r} cannot be saved without pickle. Use a registered name (e.g. a "
                        "meta-learner backend registered with register_learner) instead of an object.")


def dump_estimator(estimator: BaseEnsembler, out: ArtifactWriter, key: str) -> dict[str, Any]:
    """A fitted ensembler: its registry name, parameters and fitted state."""
    return {"type": registered_name(estimator), "params": dump_params(estimator, out, key),
            "fitted": {"model_names": list(estimator.model_names_), "n_classes": int(estimator.n_classes_),
                       "study_names": list(getattr(estimator, "study_names_", [])),
                       **estimator._fitted_state(out, key)}}


def load_estimator(document: Any, source: ArtifactReader, where: str) -> BaseEnsembler:
    if not isinstance(document, dict) or not isinstance(document.get("fitted"), dict):
        raise ArtifactError(f"{where}: an ensembler must be a JSON object with 'type', 'params' and 'fitted'.")
    estimator = ENSEMBLERS.get(document.get("type"))(**load_params(document.get("params"), where))
    fitted = document["fitted"]
    names = fitted.get("model_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ArtifactError(f"{where}: 'model_names' must list the models' names.")
    estimator.model_names_ = tuple(names)
    estimator.n_models_ = len(names)
    estimator.n_classes_ = int(fitted["n_classes"])
    estimator.classes_ = np.arange(estimator.n_classes_)
    estimator.study_names_ = list(fitted.get("study_names", []))
    estimator._restore_fitted(fitted, source)
    return estimator


def save_stacker(stacker: Stacker, path: str | Path) -> Path:
    """Write a fitted Stacker to the folder ``path`` (replacing an earlier one atomically)."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(stacker, "ensemble_")
    final = Path(path)
    with publish(final) as staging:
        out = ArtifactWriter(staging)
        thresholds = stacker.thresholds_
        document = {
            "format": STACK_FORMAT, "version": STACK_VERSION, "library_version": __version__,
            "params": dump_params(stacker, out, "stacker"),
            "fitted": {
                "model_names": list(stacker.model_names_), "n_classes": int(stacker.n_classes_),
                "stage_names": list(stacker.stage_names_), "ensemble": dump_estimator(stacker.ensemble_, out, "ensemble"),
                "temperature": stacker.temperature_, "temperature_rejected": bool(stacker.temperature_rejected_),
                "thresholds_rejected": bool(stacker.thresholds_rejected_),
                "thresholds": None if thresholds is None else {
                    "params": _plain(thresholds.get_params(deep=False), "thresholds"),
                    "rules": {str(k): float(v) for k, v in thresholds.rules_.items()},
                    "offsets": out.array("thresholds.offsets", np.asarray(thresholds.offsets_, dtype=np.float64)),
                    "n_classes": int(thresholds.n_classes_)},
                # JSON objects are written with sorted keys: the column order is kept as a list
                "report": {"columns": list(stacker.report_.columns),
                           "rows": stacker.report_.astype(object).where(stacker.report_.notna(), None).values.tolist()},
                "fit_seconds": float(stacker.fit_seconds_),
            },
        }
        out.manifest(STACK_MANIFEST, document)
    return final


def load_stacker(path: str | Path, cls: type[Stacker]) -> Stacker:
    """A ``cls`` saved by :func:`save_stacker`, ready to predict; nothing in the folder can run code."""
    import pandas as pd

    from ensemble_kit.decision.thresholds import ClassThresholds

    source = ArtifactReader(Path(path), STACK_MANIFEST, format_name=STACK_FORMAT, versions=(STACK_VERSION,))
    where = str(source.where)
    document = source.document
    try:
        stacker = cls(**load_params(document["params"], where))
        fitted = document["fitted"]
        stacker.model_names_ = tuple(fitted["model_names"])
        stacker.n_classes_ = int(fitted["n_classes"])
        stacker.stage_names_ = list(fitted["stage_names"])
        stacker.ensemble_ = load_estimator(fitted["ensemble"], source, f"{where} (ensemble)")
        temperature = fitted["temperature"]
        stacker.temperature_ = None if temperature is None else float(temperature)
        stacker.temperature_rejected_ = bool(fitted["temperature_rejected"])
        stacker.thresholds_rejected_ = bool(fitted["thresholds_rejected"])
        stacker.thresholds_ = None
        if fitted["thresholds"] is not None:
            saved = fitted["thresholds"]
            rule = ClassThresholds(**_rules_keys(saved["params"]))
            rule.rules_ = {int(k): float(v) for k, v in saved["rules"].items()}
            rule.offsets_ = source.array(saved["offsets"])
            rule.n_classes_ = int(saved["n_classes"])
            stacker.thresholds_ = rule
        stacker.report_ = pd.DataFrame(fitted["report"]["rows"], columns=fitted["report"]["columns"]).infer_objects()
        stacker.fit_seconds_ = float(fitted["fit_seconds"])
    except EnsembleKitError as exc:
        if isinstance(exc, ArtifactError):
            raise
        raise ArtifactError(f"Saved stack {where!r} is not valid: {exc}") from exc
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ArtifactError(f"Saved stack {where!r} is malformed ({type(exc).__name__}: {exc}).") from exc
    if stacker.ensemble_.model_names_ != stacker.model_names_ or stacker.ensemble_.n_classes_ != stacker.n_classes_:
        raise ArtifactError(f"Saved stack {where!r}: the ensemble was fitted on other models or classes than the stack.")
    return stacker
