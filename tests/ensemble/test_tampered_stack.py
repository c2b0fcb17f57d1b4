"""A saved stack is untrusted: every field an ensembler restores is checked, and a stack edited
together with its checksums is refused with an ArtifactError naming the folder and the field,
never loaded into NaN probabilities, labels of -1 or a raw IndexError."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ensemble_kit import HillClimbing, MetaLearner, SoftVoting, Stacker
from ensemble_kit.ensemble._restore_checks import check_int, check_number, check_vector
from ensemble_kit.errors import ArtifactError, ValidationError
from ensemble_kit.store._files import write_npy
from helpers import make_logits

MANIFEST = "stack.json"
N_CLASSES = 3
# No calibration or class rules: those are the Stacker's own fields; these tests are about the ensemblers'.
_PLAIN = {"calibrate": False, "thresholds": None, "n_trials": 5}
STACKS: dict[str, Callable[[], Stacker]] = {
    "soft_vote": lambda: Stacker([("vote", SoftVoting(n_trials=5, temperature=True))], **_PLAIN),
    "hill_climbing": lambda: Stacker([("hill", HillClimbing(n_iter=10))], **_PLAIN),
    "meta_learner": lambda: Stacker([("lr", MetaLearner("logreg"))], **_PLAIN),
    "blend": lambda: Stacker([("vote", SoftVoting("equal", temperature=True)), ("hill", HillClimbing(n_iter=8)),
                              ("lr", MetaLearner("logreg"))], blend="optuna", **_PLAIN),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, np.ndarray], np.ndarray]]:
    """Each stack fitted once and saved: its folder, unseen logits and its predictions for them."""
    logits, y = make_logits(n=150, n_classes=N_CLASSES)
    rng = np.random.default_rng(7)
    unseen = {name: rng.normal(size=(30, N_CLASSES)) * 3 for name in logits}
    root = tmp_path_factory.mktemp("stacks")
    out = {}
    for kind, build in STACKS.items():
        stacker = build().fit(logits, y)
        out[kind] = (stacker.save(root / kind), unseen, stacker.predict_proba(unseen))
    return out


def _copy(saved: dict, kind: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved[kind][0], tmp_path / kind))


def _tamper(folder: Path, *, edit_json: Callable[[dict[str, Any]], None] | None = None,
            arrays: dict[str, np.ndarray] | None = None) -> None:
    """Edit a saved stack as an attacker would: new arrays and JSON, with every checksum made to match.

    Each array replaces the file its ``files`` record names, and the record's checksum, shape and
    dtype are rewritten; ``edit_json`` edits the manifest in place; a manifest that checksums
    itself (``manifest_checksum``) gets a fresh one.
    """
    manifest = folder / MANIFEST
    document = json.loads(manifest.read_text())
    for key, array in (arrays or {}).items():
        record = document["files"][key]
        array = np.asarray(array)
        record.update(checksum=write_npy(folder / record["file"], array), shape=list(array.shape),
                      dtype=array.dtype.str)
    if edit_json is not None:
        edit_json(document)
    if "manifest_checksum" in document:
        try:
            from ensemble_kit.store._artifacts import manifest_checksum
        except ImportError:  # a manifest format without a self-checksum: nothing to recompute
            pass
        else:
            document["manifest_checksum"] = manifest_checksum(document)
    manifest.write_text(json.dumps(document, indent=2, sort_keys=True))


def _ensembler(document: dict[str, Any], stage: str | None = None) -> dict[str, Any]:
    """The saved ensembler: the stack's own, or one stage of its blend."""
    ensemble = document["fitted"]["ensemble"]
    return ensemble if stage is None else ensemble["fitted"]["stages"][stage]


def _array_key(document: dict[str, Any], suffix: str) -> str:
    """The key of the one array whose file name ends in ``suffix``."""
    (key,) = [key for key, record in document["files"].items() if record["file"].endswith(suffix)]
    return key


# ------------------------------------------------------------------ the ways a stack is tampered with
def edit_array(suffix: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    """Replace the array whose file key ends in ``suffix`` by ``change(original)``."""

    def tamper(folder: Path) -> None:
        document = json.loads((folder / MANIFEST).read_text())
        key = _array_key(document, suffix)
        original = np.load(folder / document["files"][key]["file"])
        _tamper(folder, arrays={key: change(original)})

    return tamper


def edit_state(change: Callable[[dict[str, Any]], None], stage: str | None = None,
               part: str = "fitted") -> Callable[[Path], None]:
    """Edit the ``fitted`` (or ``params``) JSON of the stack's ensembler, or of one stage of its blend."""
    return lambda folder: _tamper(folder, edit_json=lambda document: change(_ensembler(document, stage)[part]))


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda node: node.__setitem__(key, value)


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda node: node.pop(key)


def _set_in(key: str, inner: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda node: node[key].__setitem__(inner, value)


def _put(position: int, value: float) -> Callable[[np.ndarray], np.ndarray]:
    def change(array: np.ndarray) -> np.ndarray:
        array = array.copy()
        array[position] = value
        return array

    return change


def _rename_stage(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    """A stage renamed consistently in the blend's fitted state (stages, weights, temperatures), not in its params."""

    def change(fitted: dict[str, Any]) -> None:
        for key in ("stages", "weights", "temperatures"):
            fitted[key][new] = fitted[key].pop(old)

    return change


def _swap_stages(a: str, b: str) -> Callable[[dict[str, Any]], None]:
    def change(fitted: dict[str, Any]) -> None:
        stages = fitted["stages"]
        stages[a], stages[b] = stages[b], stages[a]

    return change


def _both_model_formats(fitted: dict[str, Any]) -> None:
    fitted["model"] = fitted["models"][0]


def _wider_coefficients(document: dict[str, Any]) -> None:
    """The logistic model made one feature wider, consistently (coef_ and n_features_in): it no
    longer fits the stack's 3 models x 3 classes."""
    saved = _ensembler(document)["fitted"]["models"][0]
    saved["n_features_in"] += 1


def _wider(folder: Path) -> None:
    document = json.loads((folder / MANIFEST).read_text())
    key = _array_key(document, "logisticregression.coef_.npy")
    coef = np.load(folder / document["files"][key]["file"])
    _tamper(folder, arrays={key: np.concatenate([coef, np.zeros((coef.shape[0], 1))], axis=1)},
            edit_json=_wider_coefficients)


W = "weights.npy"
T = "temperatures.npy"
CASES = [  # pytest.param(stack, what is done to it, what the message must name, id=...)
    # ---- SoftVoting: weights (n_models,) float, finite, >= 0, sum > 0; temperatures finite in range
    pytest.param("soft_vote", edit_array(W, lambda w: np.append(w, 0.2)),
                 r"fitted\.weights.*shape \(3,\).*shape \(4,\)", id="vote-weights-one-too-many"),
    pytest.param("soft_vote", edit_array(W, lambda w: w[None, :]), r"fitted\.weights.*shape \(1, 3\)",
                 id="vote-weights-2d"),
    pytest.param("soft_vote", edit_array(W, _put(0, np.nan)), r"fitted\.weights.*finite", id="vote-weights-nan"),
    pytest.param("soft_vote", edit_array(W, _put(1, -0.5)), r"fitted\.weights.*>= 0", id="vote-weights-negative"),
    pytest.param("soft_vote", edit_array(W, np.zeros_like), r"fitted\.weights.*sum > 0", id="vote-weights-zero"),
    pytest.param("soft_vote", edit_array(W, lambda w: np.full_like(w, 1e308)), r"fitted\.weights.*sum inf",
                 id="vote-weights-sum-overflows"),
    pytest.param("soft_vote", edit_array(W, lambda w: np.array([1, 0, 0])), r"fitted\.weights.*floating-point.*int64",
                 id="vote-weights-int"),
    pytest.param("soft_vote", edit_array(T, _put(0, 0.0)), r"fitted\.temperatures", id="vote-temperature-zero"),
    pytest.param("soft_vote", edit_array(T, _put(2, -1.0)), r"fitted\.temperatures", id="vote-temperature-negative"),
    pytest.param("soft_vote", edit_array(T, _put(2, np.inf)), r"fitted\.temperatures", id="vote-temperature-inf"),
    pytest.param("soft_vote", edit_array(T, _put(1, 1e-40)), r"fitted\.temperatures.*>= 0\.001",
                 id="vote-temperature-tiny"),
    pytest.param("soft_vote", edit_state(_delete("weights")), r"fitted\.weights' is missing",
                 id="vote-weights-missing"),
    pytest.param("soft_vote", edit_state(_set("space", "median"), part="params"), r"params\.space.*'median'",
                 id="vote-space-unknown"),
    pytest.param("soft_vote", edit_state(_set("temperature", "no"), part="params"),
                 r"params\.temperature.*true or false", id="vote-temperature-flag-string"),
    # ---- HillClimbing: selection weights
    pytest.param("hill_climbing", edit_array(W, _put(0, -1.0)), r"fitted\.weights.*>= 0", id="hill-weights-negative"),
    pytest.param("hill_climbing", edit_array(W, _put(2, np.nan)), r"fitted\.weights.*finite", id="hill-weights-nan"),
    pytest.param("hill_climbing", edit_array(W, np.zeros_like), r"fitted\.weights.*sum > 0", id="hill-weights-zero"),
    pytest.param("hill_climbing", edit_array(W, lambda w: w[:2]), r"fitted\.weights.*shape \(2,\)",
                 id="hill-weights-one-too-few"),
    pytest.param("hill_climbing", edit_array(W, lambda w: w.astype(bool)), r"fitted\.weights.*dtype bool",
                 id="hill-weights-bool"),
    pytest.param("hill_climbing", edit_state(_set("space", 3), part="params"), r"params\.space", id="hill-space-int"),
    # ---- MetaLearner: layout, bags, round counts, and what the models know
    pytest.param("meta_learner", edit_state(_set("layout", "tall")), r"fitted\.layout.*'tall'",
                 id="meta-layout-unknown"),
    pytest.param("meta_learner", edit_state(_set("layout", "classwise"), part="params"),
                 r"fitted\.layout.*params\.layout", id="meta-layout-not-the-one-asked-for"),
    pytest.param("meta_learner", edit_state(_set("n_iterations", [True])),
                 r"fitted\.n_iterations\[0\].*integer.*\(bool\)", id="meta-rounds-bool"),
    pytest.param("meta_learner", edit_state(_set("n_iterations", [1.5])), r"fitted\.n_iterations\[0\].*\(float\)",
                 id="meta-rounds-float"),
    pytest.param("meta_learner", edit_state(_set("n_iterations", ["3"])), r"fitted\.n_iterations\[0\].*\(str\)",
                 id="meta-rounds-string"),
    pytest.param("meta_learner", edit_state(_set("n_iterations", [0])), r"fitted\.n_iterations\[0\].*>= 1",
                 id="meta-rounds-zero"),
    pytest.param("meta_learner", edit_state(_set("n_iterations", [None, None])),
                 r"fitted\.n_iterations.*one round count", id="meta-rounds-not-one-per-model"),
    pytest.param("meta_learner", edit_state(_delete("n_iterations")), r"fitted\.n_iterations' is missing",
                 id="meta-rounds-missing"),
    pytest.param("meta_learner", edit_state(_set("models", [])), r"fitted\.models.*non-empty list",
                 id="meta-no-models"),
    pytest.param("meta_learner", edit_state(_set("models", {})), r"fitted\.models.*non-empty list",
                 id="meta-models-object"),
    pytest.param("meta_learner", edit_state(_set("models", [5])), r"fitted\.models\[0\].*JSON object",
                 id="meta-model-number"),
    pytest.param("meta_learner", edit_state(_both_model_formats), r"fitted\.model'.*absent", id="meta-both-formats"),
    pytest.param("meta_learner", edit_state(_set("max_candidates", True), part="params"),
                 r"params\.max_candidates.*\(bool\)", id="meta-max-candidates-bool"),
    pytest.param("meta_learner", edit_state(_set("features", "ranks"), part="params"), r"params\.features",
                 id="meta-features-unknown"),
    pytest.param("meta_learner", edit_state(_set("learner", "xgboost"), part="params"), r"params\.learner.*'xgboost'",
                 id="meta-learner-unknown"),
    pytest.param("meta_learner", edit_array("classes_.npy", lambda c: np.array([0, 1, 5])),
                 r"fitted\.models\[0\] classes.*\[0, 3\)", id="meta-class-beyond-the-stack"),
    pytest.param("meta_learner", edit_array("classes_.npy", lambda c: np.array([-1, 0, 1])),
                 r"fitted\.models\[0\] classes", id="meta-class-negative"),
    pytest.param("meta_learner", _wider, r"fitted\.models\[0\].*15 wide features", id="meta-model-of-other-features"),
    # ---- Blender: weights and temperatures keyed by exactly its stages; stages fitted on its models and classes
    pytest.param("blend", edit_state(_set_in("weights", "ghost", 0.1)), r"fitted\.weights.*unknown \['ghost'\]",
                 id="blend-weight-of-no-stage"),
    pytest.param("blend", edit_state(lambda f: f["weights"].pop("vote")), r"fitted\.weights.*missing \['vote'\]",
                 id="blend-weight-missing"),
    pytest.param("blend", edit_state(_set_in("weights", "vote", -0.5)), r"fitted\.weights\.vote.*>= 0",
                 id="blend-weight-negative"),
    pytest.param("blend", edit_state(_set_in("weights", "vote", "0.5")), r"fitted\.weights\.vote.*\(str\)",
                 id="blend-weight-string"),
    pytest.param("blend", edit_state(_set_in("weights", "vote", True)), r"fitted\.weights\.vote.*\(bool\)",
                 id="blend-weight-bool"),
    pytest.param("blend", edit_state(lambda f: f.__setitem__("weights", dict.fromkeys(f["weights"], 0.0))),
                 r"fitted\.weights.*sum > 0", id="blend-weights-zero"),
    pytest.param("blend", edit_state(lambda f: f.__setitem__("weights", dict.fromkeys(f["weights"], 1e308))),
                 r"fitted\.weights.*sum inf", id="blend-weights-sum-overflows"),
    pytest.param("blend", edit_state(_set_in("temperatures", "hill", 0.0)), r"fitted\.temperatures\.hill",
                 id="blend-temperature-zero"),
    pytest.param("blend", edit_state(_set_in("temperatures", "hill", -2.0)), r"fitted\.temperatures\.hill",
                 id="blend-temperature-negative"),
    pytest.param("blend", edit_state(_set_in("temperatures", "hill", "1")), r"fitted\.temperatures\.hill.*\(str\)",
                 id="blend-temperature-string"),
    pytest.param("blend", edit_state(_set_in("temperatures", "ghost", 1.0)),
                 r"fitted\.temperatures.*unknown \['ghost'\]", id="blend-temperature-of-no-stage"),
    pytest.param("blend", edit_state(_set("stages", {})), r"fitted\.stages.*non-empty", id="blend-no-stages"),
    pytest.param("blend", edit_state(_rename_stage("vote", "vote2")), r"fitted\.stages.*params\.stages",
                 id="blend-stage-not-in-params"),
    pytest.param("blend", edit_state(_swap_stages("vote", "hill")), r"stage 'vote'.*'type'.*SoftVoting.*HillClimbing",
                 id="blend-stage-of-another-type"),
    pytest.param("blend", edit_state(_set("model_names", ["m0", "m1", "mX"]), stage="vote"),
                 r"stage 'vote'.*model_names", id="blend-stage-of-other-models"),
    pytest.param("blend", edit_state(_set("n_classes", 4), stage="vote"), r"stage 'vote'.*fitted\.n_classes.*3",
                 id="blend-stage-of-other-classes"),
    pytest.param("blend", edit_array("vote.weights.npy", _put(0, -1.0)), r"stage 'vote'.*SoftVoting.*fitted\.weights",
                 id="blend-stage-vote-weights-negative"),
    pytest.param("blend", edit_array("hill.weights.npy", _put(0, np.nan)),
                 r"stage 'hill'.*HillClimbing.*fitted\.weights", id="blend-stage-hill-weights-nan"),
    pytest.param("blend", edit_array("vote.temperatures.npy", _put(0, 0.0)), r"stage 'vote'.*fitted\.temperatures",
                 id="blend-stage-vote-temperature-zero"),
    pytest.param("blend", edit_array("lr.model.logisticregression.classes_.npy", lambda c: np.array([0, 1, 7])),
                 r"stage 'lr'.*classes", id="blend-stage-meta-class-beyond-the-stack"),
    pytest.param("blend", edit_state(_set("layout", None), stage="lr"), r"stage 'lr'.*fitted\.layout",
                 id="blend-stage-meta-layout-null"),
]


@pytest.mark.parametrize(("kind", "tamper", "field"), CASES)
def test_a_tampered_field_is_refused_by_name(saved, tmp_path, kind, tamper, field):
    folder = _copy(saved, kind, tmp_path)
    tamper(folder)
    with pytest.raises(ArtifactError, match=field) as raised:
        Stacker.load(folder)
    assert str(folder) in str(raised.value)


def test_an_untouched_stack_loads_and_predicts_the_same(saved):
    for kind, (folder, unseen, expected) in saved.items():
        stacker = Stacker.load(folder)
        proba = stacker.predict_proba(unseen)
        assert np.abs(proba - expected).max() <= 1e-6, kind
        assert np.isfinite(proba).all() and set(stacker.predict(unseen).tolist()) <= set(range(N_CLASSES)), kind


@pytest.mark.parametrize(("kind", "tamper"), [
    # extreme but allowed values: edited, yet still a stack that predicts probabilities and labels
    pytest.param("soft_vote", edit_array(T, lambda t: np.array([1e-3, 1e3, 1.0])),
                 id="vote-temperatures-at-the-bounds"),
    pytest.param("soft_vote", edit_array(W, lambda w: np.array([0.0, 0.0, 5.0])), id="vote-one-model-unnormalised"),
    pytest.param("hill_climbing", edit_array(W, lambda w: np.array([1.0, 0.0, 0.0])), id="hill-one-model"),
    pytest.param("blend", edit_state(lambda f: f.__setitem__("weights", {**dict.fromkeys(f["weights"], 0.0),
                                                                            "lr": 2.0})), id="blend-one-stage"),
    pytest.param("blend", edit_state(lambda f: f.__setitem__("temperatures", dict.fromkeys(f["temperatures"], 1e-3))),
                 id="blend-temperatures-at-the-bound"),
])
def test_an_edited_stack_that_loads_predicts_finite_probabilities_and_real_labels(saved, tmp_path, kind, tamper):
    folder = _copy(saved, kind, tmp_path)
    tamper(folder)
    # a consistent attacker also rewrites the summary, which must describe the fitted state
    _tamper(folder, edit_json=lambda d: d.__setitem__("summary", None))
    summary = Stacker.load(folder).describe().to_json()
    _tamper(folder, edit_json=lambda d: d.__setitem__("summary", summary))
    stacker = Stacker.load(folder)
    unseen = {name: values * 1e3 for name, values in saved[kind][1].items()}  # far beyond anything fitted on
    proba = stacker.predict_proba(unseen)
    assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1.0)
    assert set(stacker.predict(unseen).tolist()) <= set(range(N_CLASSES))


@pytest.mark.parametrize("value", [True, 1.0, "1", None, [1]])
def test_an_int_field_must_be_a_json_integer(value):
    with pytest.raises(ValidationError, match=r"'n'.*integer"):
        check_int(value, "n", minimum=1)
    assert check_int(3, "n", minimum=1) == 3 and check_int(None, "n", allow_none=True) is None


@pytest.mark.parametrize("value", [True, "0.5", None, pytest.param(10 ** 400, id="int-beyond-float"),
                                   float("nan"), -1.0])
def test_a_number_field_must_be_a_finite_json_number_in_range(value):
    with pytest.raises(ValidationError, match=r"'x'.*finite number"):
        check_number(value, "x", minimum=0.0)
    assert check_number(2, "x", minimum=0.0) == 2.0


def test_a_vector_is_refused_with_its_first_bad_position():
    with pytest.raises(ValidationError, match=r"'w'.*>= 0.*position 1"):
        check_vector(np.array([1.0, -1.0]), "w", 2, nonnegative=True)
    with pytest.raises(ValidationError, match=r"'w'.*an array of 2 numbers.*\(list\)"):
        check_vector([1.0, 1.0], "w", 2)
    assert check_vector(np.array([1.0, 0.0], dtype=np.float32), "w", 2, positive_sum=True).dtype == np.float64
