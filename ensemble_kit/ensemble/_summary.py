"""What a fitted stack learned and where it came from, as typed values (saved in its artifact).

:class:`StackSummary` is what :meth:`Stacker.describe <ensemble_kit.Stacker.describe>` returns:
the models, every stage's weights and temperatures, the blend, the final temperature and the
decision rules. :class:`StackInfo` is the provenance ``ensemble-kit stack`` records beside it
(name, recipe, classes, settings, held-out test scores). Both are written into the stack's
``stack.json`` and read back through :meth:`from_json`, which checks every field's type, so
report and CLI code reads attributes, never string keys of a document received from elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ensemble_kit.ensemble._registry import ENSEMBLERS
from ensemble_kit.errors import ArtifactError

if TYPE_CHECKING:
    from ensemble_kit.ensemble.stacker import Stacker

__all__ = ["StackInfo", "StackSummary", "StageSummary", "describe_stacker", "registered_name"]


def registered_name(estimator: Any) -> str:
    """The name ``estimator``'s class is registered under in :data:`ENSEMBLERS`."""
    for name in ENSEMBLERS.names():
        if type(estimator) is ENSEMBLERS.get(name):
            return name
    raise ArtifactError(f"{type(estimator).__name__} is not a registered ensembler, so it cannot be saved; "
                        "register it with register_ensembler(name).")


# ---------------------------------------------------------------------- field checks
class _Fields:
    """Typed reads of one JSON object, each fault an :class:`ArtifactError` naming the field."""

    def __init__(self, document: Any, where: str) -> None:
        if not isinstance(document, dict):
            raise ArtifactError(f"{where}: expected a JSON object, got {type(document).__name__}.")
        self.document, self.where = document, where

    def _fail(self, key: str, expected: str) -> ArtifactError:
        value = self.document.get(key, "<missing>")
        return ArtifactError(f"{self.where}: field {key!r} must be {expected}; got {str(value)[:80]!r}.")

    def text(self, key: str, *, optional: bool = False) -> str | None:
        value = self.document.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def number(self, key: str, *, optional: bool = False, positive: bool = False) -> float | None:
        value = self.document.get(key)
        if value is None and optional:
            return None
        if not _finite(value) or (positive and value <= 0) or value < 0:
            raise self._fail(key, "a finite positive number" if positive else "a finite number >= 0")
        return float(value)

    def integer(self, key: str, *, minimum: int = 0) -> int:
        value = self.document.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._fail(key, f"an integer >= {minimum}")
        return value

    def flag(self, key: str) -> bool:
        value = self.document.get(key)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.document.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)

    def numbers_by_name(self, key: str) -> dict[str, float] | None:
        value = self.document.get(key)
        if value is None:
            return None
        if not isinstance(value, dict) or not all(_finite(v) for v in value.values()):
            raise self._fail(key, "an object of finite numbers")
        return {str(k): float(v) for k, v in value.items()}

    def mapping(self, key: str, *, optional: bool = True) -> dict[str, Any] | None:
        value = self.document.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, dict):
            raise self._fail(key, "a JSON object")
        return value


def _finite(value: Any) -> bool:
    """A JSON number that is a finite float (an integer too large for a float is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _class_index(key: str, n_classes: int) -> bool:
    """Whether a JSON key is a class index: ASCII digits only (``"²"`` and ``"٢"`` are digits to
    ``str.isdigit`` but not indices), below ``n_classes``."""
    return key.isascii() and key.isdecimal() and int(key) < n_classes


# ---------------------------------------------------------------------- the summary
@dataclass(frozen=True)
class StageSummary:
    """What one stage learned: per-model weights and temperatures, a meta-learner's layout and rounds."""

    name: str
    type: str
    model_weights: Mapping[str, float] | None = None
    model_temperatures: Mapping[str, float] | None = None
    layout: str | None = None
    n_iterations: tuple[int | None, ...] | None = None

    @classmethod
    def from_json(cls, document: Any, where: str) -> StageSummary:
        f = _Fields(document, where)
        rounds = f.document.get("n_iterations")
        if rounds is not None and (not isinstance(rounds, list) or not all(
                r is None or (isinstance(r, int) and not isinstance(r, bool) and r >= 0) for r in rounds)):
            raise f._fail("n_iterations", "a list of round counts")
        return cls(name=str(f.text("name")), type=str(f.text("type")), model_weights=f.numbers_by_name("model_weights"),
                   model_temperatures=f.numbers_by_name("model_temperatures"), layout=f.text("layout", optional=True),
                   n_iterations=None if rounds is None else tuple(rounds))


@dataclass(frozen=True)
class StackSummary:
    """What a fitted :class:`~ensemble_kit.Stacker` learned (:meth:`Stacker.describe <ensemble_kit.Stacker.describe>`).

    Attributes
    ----------
    models : tuple of str
        The base models, in the order predictions must come in.
    n_classes : int
    metric : str
    stages : tuple of StageSummary
    blend_weights, blend_temperatures : dict stage name -> float, or None
        The blend of several stages (``None`` for a single stage).
    temperature : float or None
        The final temperature in force (``None`` when none was fitted or it was rejected).
    temperature_rejected, thresholds_rejected : bool
        Whether that optional step lost on held-out folds and is not applied.
    class_rules : dict class index -> probability, or None
        Fixed rules ("predict class 2 when p > 0.4").
    class_offsets : tuple of float, or None
        Tuned per-class log-probability offsets, and ``thresholds_optimize`` the metric they were tuned for.
    fit_seconds : float
    study_names : tuple of str
        The Optuna studies the fit ran.
    """

    models: tuple[str, ...]
    n_classes: int
    metric: str
    stages: tuple[StageSummary, ...]
    blend_weights: Mapping[str, float] | None = None
    blend_temperatures: Mapping[str, float] | None = None
    temperature: float | None = None
    temperature_rejected: bool = False
    class_rules: Mapping[int, float] | None = None
    class_offsets: tuple[float, ...] | None = None
    thresholds_optimize: str | None = None
    thresholds_rejected: bool = False
    fit_seconds: float = 0.0
    study_names: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (class indices of ``class_rules`` as strings: JSON keys are strings)."""
        out = asdict(self)
        out["stages"] = [asdict(stage) for stage in self.stages]
        if self.class_rules is not None:
            out["class_rules"] = {str(k): v for k, v in self.class_rules.items()}
        return out

    @classmethod
    def from_json(cls, document: Any, where: str) -> StackSummary:
        """The summary a :meth:`to_json` document describes; a wrong or missing field is an :class:`ArtifactError`."""
        f = _Fields(document, where)
        stages = f.document.get("stages")
        if not isinstance(stages, list):
            raise f._fail("stages", "a list of stage summaries")
        n_classes = f.integer("n_classes", minimum=2)
        rules = f.numbers_by_name("class_rules")
        if rules is not None:
            if not all(_class_index(k, n_classes) and 0 <= v <= 1 for k, v in rules.items()):
                raise f._fail("class_rules", f"an object of class indices 0..{n_classes - 1} -> probabilities")
        offsets = f.document.get("class_offsets")
        if offsets is not None and (not isinstance(offsets, list) or len(offsets) != n_classes
                                    or not all(_finite(v) for v in offsets)):
            raise f._fail("class_offsets", f"{n_classes} finite numbers")
        return cls(
            models=f.texts("models"), n_classes=n_classes, metric=str(f.text("metric")),
            stages=tuple(StageSummary.from_json(s, f"{where} stage {i}") for i, s in enumerate(stages)),
            blend_weights=f.numbers_by_name("blend_weights"), blend_temperatures=f.numbers_by_name("blend_temperatures"),
            temperature=f.number("temperature", optional=True, positive=True),
            temperature_rejected=f.flag("temperature_rejected"),
            class_rules=None if rules is None else {int(k): v for k, v in rules.items()},
            class_offsets=None if offsets is None else tuple(float(v) for v in offsets),
            thresholds_optimize=f.text("thresholds_optimize", optional=True),
            thresholds_rejected=f.flag("thresholds_rejected"), fit_seconds=float(f.number("fit_seconds") or 0.0),
            study_names=f.texts("study_names"))


@dataclass(frozen=True)
class StackInfo:
    """Where a saved stack came from (recorded by ``ensemble-kit stack`` / :func:`~ensemble_kit.project.fit_stack`).

    ``settings`` are the resolved stack settings (a storage URL reduced to its scheme: a saved
    stack holds no password and no path of the machine it was fitted on); ``held_out_test`` the
    scores of its test predictions when the project kept the test labels.
    """

    name: str
    created: str
    recipe: str | None = None
    description: str | None = None
    classes: tuple[Any, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    held_out_test: Mapping[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "classes": list(self.classes), "settings": dict(self.settings)}

    @classmethod
    def from_json(cls, document: Any, where: str) -> StackInfo:
        f = _Fields(document, where)
        classes = f.document.get("classes", [])
        if not isinstance(classes, list) or not all(isinstance(c, (str, int)) and not isinstance(c, bool)
                                                     for c in classes):
            raise f._fail("classes", "a list of class names (strings or integers)")
        return cls(name=str(f.text("name")), created=str(f.text("created")), recipe=f.text("recipe", optional=True),
                   description=f.text("description", optional=True), classes=tuple(classes),
                   settings=f.mapping("settings") or {}, held_out_test=f.numbers_by_name("held_out_test"))


def describe_stacker(stacker: Stacker) -> StackSummary:
    """The :class:`StackSummary` of a fitted Stacker."""
    names = list(stacker.model_names_)
    ensemble = stacker.ensemble_
    blend = isinstance(getattr(ensemble, "stages_", None), dict)  # a Blender of several stages
    stages = ensemble.stages_ if blend else {stacker.stage_names_[0]: ensemble}

    def per_model(values: Any) -> dict[str, float] | None:
        if values is None or isinstance(values, dict):
            return None
        return dict(zip(names, np.asarray(values, dtype=float).round(6).tolist()))

    summaries = tuple(StageSummary(
        name=stage_name, type=registered_name(stage), model_weights=per_model(getattr(stage, "weights_", None)),
        model_temperatures=per_model(getattr(stage, "temperatures_", None)), layout=getattr(stage, "layout_", None),
        n_iterations=None if getattr(stage, "n_iterations_", None) is None else tuple(stage.n_iterations_))
        for stage_name, stage in stages.items())
    thresholds = stacker.thresholds_
    rules = dict(thresholds.rules_) if thresholds is not None else {}
    return StackSummary(
        models=tuple(names), n_classes=int(stacker.n_classes_), metric=stacker.metric, stages=summaries,
        blend_weights={k: round(float(v), 6) for k, v in ensemble.weights_.items()} if blend else None,
        blend_temperatures={k: round(float(v), 6) for k, v in ensemble.temperatures_.items()} if blend else None,
        temperature=None if stacker.temperature_ is None else float(stacker.temperature_),
        temperature_rejected=bool(stacker.temperature_rejected_),
        class_rules={int(k): float(v) for k, v in rules.items()} if rules else None,
        class_offsets=None if thresholds is None or rules
        else tuple(np.asarray(thresholds.offsets_, dtype=float).round(6).tolist()),
        thresholds_optimize=None if thresholds is None else thresholds.optimize,
        thresholds_rejected=bool(stacker.thresholds_rejected_), fit_seconds=float(stacker.fit_seconds_),
        study_names=tuple(stacker.study_names_))
