"""The fitted-stack artifact: one folder that holds a Stacker, what it learned and what it predicted.

:func:`save_stack` writes, through the library's one atomic publish: the Stacker's parameters
and fitted state (JSON, ``.npy`` arrays, the GBMs' model files), the honest nested-CV report, a
typed :class:`~ensemble_kit.ensemble.StackSummary`, optionally its provenance
(:class:`~ensemble_kit.ensemble.StackInfo`) and its OOF/test probabilities and decisions. Every
file is recorded with its checksum, and the manifest carries its own. :func:`read_stack` reads
it back, from this version or any earlier layout (stack format 1, and the store's
``stacks/<name>/`` folders written before format 2), checking every field; nothing in it can
run code. See ``docs/stack-format.md``.

Every ensembler describes its fitted state with ``_fitted_state(out, key)`` and restores it with
``_restore_fitted(state, source)``; classes are named by their registry name and resolved
through :data:`~ensemble_kit.ensemble.ENSEMBLERS` on load, so a saved stack can only ever
instantiate registered ensemblers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ensemble_kit._version import __version__
from ensemble_kit.ensemble._registry import ENSEMBLERS
from ensemble_kit.ensemble._restore_checks import TEMPERATURE_RANGE
from ensemble_kit.ensemble._summary import StackInfo, StackSummary, describe_stacker, registered_name
from ensemble_kit.errors import ArtifactError, EnsembleKitError, StoreCorruptedError
from ensemble_kit.store._artifacts import ArtifactKind, ArtifactReader, ArtifactWriter, publish
from ensemble_kit.store._files import load_array, open_regular, read_json
from ensemble_kit.store._paths import safe_dir

if TYPE_CHECKING:
    import pandas as pd

    from ensemble_kit.ensemble._base import BaseEnsembler
    from ensemble_kit.ensemble.stacker import Stacker

__all__ = ["STACK_FORMAT", "STACK_MANIFEST", "STACK_VERSION", "StackArtifact", "is_stack", "load_stacker",
           "read_stack", "save_stack"]

STACK_FORMAT = "ensemble_kit.stack"
#: 2: the whole fitted stack in one artifact (summary, provenance, predictions), the manifest
#: checksummed, no storage URL or machine path saved. 1: the Stacker alone.
STACK_VERSION = 2
STACK_MANIFEST = "stack.json"
_READABLE_VERSIONS = (1, 2)
_SEALED_VERSIONS = (2,)
# The store's stacks/<name>/ layout before format 2: summary.json, report.csv, four .npy files
# (no checksums) and the Stacker (format 1) in stacker/.
_LEGACY_SUMMARY = "summary.json"
_LEGACY_STACKER = "stacker"
_LEGACY_ARRAYS = ("oof_proba", "oof_labels", "test_proba", "test_labels")
_PREDICTIONS = ("oof_proba", "oof_labels", "test_proba", "test_labels")


def dump_params(estimator: Any, out: ArtifactWriter, key: str) -> dict[str, Any]:
    """An unfitted estimator's constructor parameters as JSON (stages recursively)."""
    params = {}
    for name, value in estimator.get_params(deep=False).items():
        if name == "storage":
            # a storage URL may hold a password, an SQLite URL a path of this machine: never saved
            params[name] = None
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
    if "storage" in loaded:
        loaded["storage"] = None  # stacks saved before format 2 kept it; a received stack never picks a database
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
    estimator.model_names_ = _model_names(fitted.get("model_names"), where)
    estimator.n_models_ = len(estimator.model_names_)
    estimator.n_classes_ = _n_classes(fitted.get("n_classes"), where)
    estimator.classes_ = np.arange(estimator.n_classes_)
    estimator.study_names_ = list(fitted.get("study_names", []))
    estimator._restore_fitted(fitted, source)
    return estimator




def _model_names(names: Any, where: str) -> tuple[str, ...]:
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names) \
            or len(set(names)) != len(names):
        raise ArtifactError(f"{where}: 'model_names' must list the models' distinct names; got {str(names)[:80]}.")
    return tuple(names)


def _n_classes(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ArtifactError(f"{where}: 'n_classes' must be an integer >= 2; got {value!r}.")
    return value


# ---------------------------------------------------------------------- the artifact
@dataclass(frozen=True)
class StackArtifact:
    """A saved fitted stack as read by :func:`read_stack`: what it learned and predicted, checked.

    The Stacker itself (its GBM model files, arrays) is read only by :meth:`load_stacker`.

    Attributes
    ----------
    path : Path
    summary : StackSummary
        What the stack learned (:meth:`Stacker.describe <ensemble_kit.Stacker.describe>`).
    report : pandas.DataFrame
        The honest nested-CV report (``Stacker.report_``).
    info : StackInfo or None
        Provenance, for stacks saved by ``ensemble-kit stack`` (name, recipe, classes, settings).
    oof_proba, oof_labels : ndarray or None
        Honest OOF probabilities and decisions (``None`` in a bundle's stack).
    test_proba, test_labels : ndarray or None
        Predictions for the store's test set, when it was saved with them.
    version : int
        The stack format it was written in.
    """

    path: Path
    summary: StackSummary
    report: pd.DataFrame
    info: StackInfo | None = None
    oof_proba: NDArray | None = None
    oof_labels: NDArray | None = None
    test_proba: NDArray | None = None
    test_labels: NDArray | None = None
    version: int = STACK_VERSION

    @property
    def name(self) -> str:
        return self.info.name if self.info is not None else self.path.name

    @property
    def metric(self) -> str:
        return self.summary.metric

    @property
    def models(self) -> list[str]:
        return list(self.summary.models)

    def load_stacker(self) -> Stacker:
        """The fitted Stacker, ready to predict new logits."""
        from ensemble_kit.ensemble import Stacker  # the public name: no import cycle with stacker.py

        return load_stacker(stacker_folder(self.path), Stacker)


def stacker_folder(folder: Path) -> Path:
    """The folder holding a saved stack's Stacker: the stack itself, or ``stacker/`` in the store's older layout."""
    return folder / _LEGACY_STACKER if _is_legacy_store_stack(folder) else folder


def is_stack(folder: Path) -> bool:
    """Whether ``folder`` looks like a saved stack of any layout (its manifest is not read)."""
    folder = Path(folder)
    return os.path.lexists(folder / STACK_MANIFEST) or _is_legacy_store_stack(folder)


def _is_legacy_store_stack(folder: Path) -> bool:
    return os.path.lexists(folder / _LEGACY_SUMMARY) and os.path.lexists(folder / _LEGACY_STACKER / STACK_MANIFEST)


def _replaceable_legacy_store_stack(folder: Path) -> bool:
    """A store stack of the layout before format 2 holding nothing else: what a new save may replace."""
    legacy_names = {_LEGACY_SUMMARY, "report.csv", _LEGACY_STACKER, *(f"{k}.npy" for k in _LEGACY_ARRAYS)}
    return (_is_legacy_store_stack(folder) and not os.path.islink(folder / _LEGACY_STACKER)
            and set(os.listdir(folder)) <= legacy_names)


#: What a saved stack may replace: a stack of this format (nothing else in it) or the store's older layout.
STACK_KIND = ArtifactKind(STACK_MANIFEST, STACK_FORMAT, legacy=_replaceable_legacy_store_stack)


def save_stack(stacker: Stacker, path: str | Path, *, test_proba: NDArray | None = None, info: StackInfo | None = None,
               predictions: bool = True) -> Path:
    """Write a fitted Stacker as one stack artifact at the folder ``path``.

    ``test_proba``: its predictions for a test set, saved with their decisions. ``predictions=False``
    leaves out the OOF (and test) predictions (a bundle carries what predicts, not what was
    scored). An earlier stack at ``path`` is replaced atomically; any other non-empty folder is
    refused (:class:`~ensemble_kit.errors.DestinationError`).
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(stacker, "ensemble_")
    arrays: dict[str, NDArray | None] = dict.fromkeys(_PREDICTIONS)
    if predictions:
        # a Stacker loaded from a bundle's stack has none: nothing to save then
        arrays["oof_proba"] = getattr(stacker, "oof_proba_", None)
        arrays["oof_labels"] = getattr(stacker, "oof_labels_", None)
        if test_proba is not None:
            arrays["test_proba"] = np.asarray(test_proba, dtype=np.float64)
            arrays["test_labels"] = stacker.decide(arrays["test_proba"])
    with publish(Path(path), STACK_KIND) as staging:
        out = ArtifactWriter(staging)
        thresholds = stacker.thresholds_
        report = stacker.report_
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
                "report": {"columns": list(report.columns),
                           "rows": report.astype(object).where(report.notna(), None).values.tolist()},
                "fit_seconds": float(stacker.fit_seconds_),
            },
            "summary": describe_stacker(stacker).to_json(),
            "info": None if info is None else info.to_json(),
            "predictions": {key: out.array(f"predictions.{key}", np.asarray(array))
                            for key, array in arrays.items() if array is not None},
        }
        out.manifest(STACK_MANIFEST, document)
    return Path(path)


def read_stack(path: str | Path) -> StackArtifact:
    """The stack artifact at ``path`` (any layout this library wrote), every field checked.

    Raises
    ------
    ArtifactError
        Naming the file and field when anything is missing, malformed, or does not match its checksum.
    """
    folder = Path(path)
    if _is_legacy_store_stack(folder):
        return _read_legacy_store_stack(folder)
    source = ArtifactReader(folder, STACK_MANIFEST, format_name=STACK_FORMAT, versions=_READABLE_VERSIONS,
                            sealed_versions=_SEALED_VERSIONS)
    try:
        return _read_stack(folder, source)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
        raise ArtifactError(f"Saved stack {str(source.where)!r} is malformed ({type(exc).__name__}: {exc}).") from exc


def _read_stack(folder: Path, source: ArtifactReader) -> StackArtifact:
    where = str(source.where)
    document = source.document
    if source.version == 1:  # the Stacker alone: what it learned is read off the Stacker itself
        from ensemble_kit.ensemble import Stacker  # the public name: no import cycle with stacker.py

        stacker = _load_stacker(source, Stacker)
        return StackArtifact(path=folder, summary=stacker.describe(), report=stacker.report_, version=1)
    summary = StackSummary.from_json(document.get("summary"), f"{where} (summary)")
    info = None if document.get("info") is None else StackInfo.from_json(document["info"], f"{where} (info)")
    fitted = document.get("fitted")
    report = _report(fitted.get("report") if isinstance(fitted, dict) else None, where)
    saved = document.get("predictions")
    if not isinstance(saved, dict) or set(saved) - set(_PREDICTIONS):
        raise ArtifactError(f"{where}: 'predictions' must map some of {list(_PREDICTIONS)} to arrays.")
    arrays = _check_predictions({key: source.array(ref) for key, ref in saved.items()}, summary.n_classes, where)
    return StackArtifact(path=folder, summary=summary, report=report, info=info, version=source.version, **arrays)


def _read_legacy_store_stack(folder: Path) -> StackArtifact:
    """A store stack saved before format 2: its arrays have no checksums, so they are checked for
    shape and values only; what it learned is read off the (checksummed) Stacker in ``stacker/``."""
    from ensemble_kit.ensemble import Stacker  # the public name: no import cycle with stacker.py

    where = str(folder / _LEGACY_SUMMARY)
    try:
        legacy = read_json(folder / _LEGACY_SUMMARY)
        arrays = {key: load_array(folder / f"{key}.npy") if os.path.lexists(folder / f"{key}.npy") else None
                  for key in _LEGACY_ARRAYS}
    except StoreCorruptedError as exc:
        raise ArtifactError(f"Saved stack {str(folder)!r}: {exc}") from exc
    stacker = load_stacker(folder / _LEGACY_STACKER, Stacker)
    settings = legacy.get("config") if isinstance(legacy.get("config"), dict) else {}
    info = StackInfo.from_json({"name": legacy.get("name", folder.name), "created": legacy.get("created", ""),
                                "recipe": legacy.get("recipe"), "description": legacy.get("description"),
                                "classes": legacy.get("classes", []),
                                "settings": {k: v for k, v in settings.items() if k != "storage"},
                                "held_out_test": legacy.get("held_out_test")}, where)
    checked = _check_predictions({k: v for k, v in arrays.items() if v is not None}, stacker.n_classes_, str(folder))
    return StackArtifact(path=folder, summary=stacker.describe(), report=stacker.report_, info=info, version=1,
                         **checked)


def _report(saved: Any, where: str) -> pd.DataFrame:
    import pandas as pd

    columns = saved.get("columns") if isinstance(saved, dict) else None
    rows = saved.get("rows") if isinstance(saved, dict) else None
    scalar = (str, int, float, bool, type(None))
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) \
            or not {"step", "kind"} <= set(columns) or not isinstance(rows, list) \
            or not all(isinstance(r, list) and len(r) == len(columns) and all(isinstance(v, scalar) for v in r)
                       for r in rows):
        raise ArtifactError(f"{where}: 'fitted.report' must hold 'columns' (with 'step' and 'kind') and rows of "
                            "that many plain values.")
    return pd.DataFrame(rows, columns=columns).infer_objects()


def _check_predictions(arrays: dict[str, NDArray], n_classes: int, where: str) -> dict[str, NDArray]:
    """Probabilities ``(n, C)`` in [0, 1] summing to 1 and decisions ``(n,)`` of class indices, in pairs."""
    for split in ("oof", "test"):
        proba, labels = arrays.get(f"{split}_proba"), arrays.get(f"{split}_labels")
        if (proba is None) != (labels is None):
            raise ArtifactError(f"{where}: {split} probabilities and decisions must be saved together.")
        if proba is None:
            continue
        if proba.dtype.kind != "f" or proba.ndim != 2 or proba.shape[1] != n_classes or not np.isfinite(proba).all() \
                or proba.min(initial=0) < 0 or not np.allclose(proba.sum(axis=1), 1.0, atol=1e-4):
            raise ArtifactError(f"{where}: {split}_proba must be ({proba.shape[0] if proba.ndim else '?'}, {n_classes}) "
                                f"probabilities summing to 1; got {proba.dtype} {proba.shape}.")
        if labels.dtype.kind not in "iu" or labels.shape != (proba.shape[0],) \
                or (labels.size and (labels.min() < 0 or labels.max() >= n_classes)):
            raise ArtifactError(f"{where}: {split}_labels must be {proba.shape[0]} class indices in 0..{n_classes - 1}.")
    return arrays


def load_stacker(path: str | Path, cls: type[Stacker]) -> Stacker:
    """A ``cls`` saved by :func:`save_stack` (or an earlier version), ready to predict; nothing in the folder can run code."""
    source = ArtifactReader(Path(path), STACK_MANIFEST, format_name=STACK_FORMAT, versions=_READABLE_VERSIONS,
                            sealed_versions=_SEALED_VERSIONS)
    problems = source.verify_files()  # every file, not only those the Stacker reads
    if problems:
        raise ArtifactError(f"Saved stack {str(source.folder)!r} is damaged: " + "; ".join(problems[:5]))
    return _load_stacker(source, cls)


def _load_stacker(source: ArtifactReader, cls: type[Stacker]) -> Stacker:
    where = str(source.where)
    document = source.document
    try:
        stacker = cls(**load_params(document["params"], where))
        fitted = document["fitted"]
        stacker.model_names_ = _model_names(fitted["model_names"], where)
        stacker.n_classes_ = _n_classes(fitted["n_classes"], where)
        stacker.stage_names_ = _names(fitted["stage_names"], "stage_names", where)
        stacker.ensemble_ = load_estimator(fitted["ensemble"], source, f"{where} (ensemble)")
        stacker.temperature_ = _temperature(fitted["temperature"], where)
        stacker.temperature_rejected_ = _flag(fitted["temperature_rejected"], "temperature_rejected", where)
        stacker.thresholds_rejected_ = _flag(fitted["thresholds_rejected"], "thresholds_rejected", where)
        stacker.thresholds_ = None if fitted["thresholds"] is None else _thresholds(
            fitted["thresholds"], source, stacker.n_classes_, where)
        stacker.report_ = _report(fitted["report"], where)
        stacker.fit_seconds_ = float(fitted["fit_seconds"])
        saved = document.get("predictions") or {}
        if "oof_proba" in saved:
            oof = _check_predictions({k: source.array(saved[k]) for k in ("oof_proba", "oof_labels") if k in saved},
                                     stacker.n_classes_, where)
            stacker.oof_proba_, stacker.oof_labels_ = oof["oof_proba"], oof["oof_labels"]
    except EnsembleKitError as exc:
        if isinstance(exc, ArtifactError):
            raise
        raise ArtifactError(f"Saved stack {where!r} is not valid: {exc}") from exc
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
        raise ArtifactError(f"Saved stack {where!r} is malformed ({type(exc).__name__}: {exc}).") from exc
    if stacker.ensemble_.model_names_ != stacker.model_names_ or stacker.ensemble_.n_classes_ != stacker.n_classes_:
        raise ArtifactError(f"Saved stack {where!r}: the ensemble was fitted on other models or classes than the stack.")
    if document.get("summary") is not None and \
            StackSummary.from_json(document["summary"], f"{where} (summary)") != describe_stacker(stacker):
        # what `ls` and the report show must be what predicts
        raise ArtifactError(f"Saved stack {where!r}: its summary does not describe its fitted state (edited).")
    return stacker


def _names(value: Any, name: str, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ArtifactError(f"{where}: 'fitted.{name}' must be a non-empty list of names; got {str(value)[:80]!r}.")
    return list(value)


def _flag(value: Any, name: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise ArtifactError(f"{where}: 'fitted.{name}' must be true or false; got {value!r}.")
    return value


def _temperature(value: Any, where: str) -> float | None:
    low, high = TEMPERATURE_RANGE
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > high:
        value = math.inf  # an integer too large for a float: out of range, named below
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)) \
            or not low <= value <= high:
        raise ArtifactError(f"{where}: 'fitted.temperature' must be a number in [{low}, {high}] or null (a fit gives "
                            f"0.05-20); got {value!r}.")
    return float(value)


_THRESHOLD_PARAMS = {"rules", "optimize", "target_class", "min_precision", "max_offset", "grid_size", "n_passes"}


def _thresholds(saved: Any, source: ArtifactReader, n_classes: int, where: str) -> Any:
    """The fitted class rules, every value checked against the stack's classes."""
    from ensemble_kit.decision.thresholds import ClassThresholds

    if not isinstance(saved, dict) or not isinstance(saved.get("params"), dict) \
            or set(saved["params"]) - _THRESHOLD_PARAMS or not isinstance(saved.get("rules"), Mapping):
        raise ArtifactError(f"{where}: 'fitted.thresholds' must hold 'params' (of ClassThresholds), 'rules' and "
                            "'offsets'.")
    if saved.get("n_classes") != n_classes or isinstance(saved.get("n_classes"), bool):
        raise ArtifactError(f"{where}: 'fitted.thresholds.n_classes' is {saved.get('n_classes')!r}; the stack has "
                            f"{n_classes} classes.")
    rules = {}
    for key, value in saved["rules"].items():
        if not (isinstance(key, str) and key.isascii() and key.isdecimal() and int(key) < n_classes) \
                or isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
            raise ArtifactError(f"{where}: 'fitted.thresholds.rules' must map class indices 0..{n_classes - 1} to "
                                f"probabilities in (0, 1); got {key!r}: {value!r}.")
        rules[int(key)] = float(value)
    offsets = source.array(saved.get("offsets"))
    if offsets.dtype.kind != "f" or offsets.shape != (n_classes,) or not np.isfinite(offsets).all():
        raise ArtifactError(f"{where}: the class offsets must be {n_classes} finite numbers; got {offsets.dtype} "
                            f"{offsets.shape}.")
    try:
        rule = ClassThresholds(**_rules_keys(saved["params"]))
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{where}: 'fitted.thresholds.params' are not ClassThresholds parameters ({exc}).") from exc
    rule.rules_, rule.offsets_, rule.n_classes_ = rules, offsets.astype(np.float64), n_classes
    return rule
