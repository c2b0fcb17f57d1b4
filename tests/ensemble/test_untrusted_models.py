"""A saved stack's GBM files may be hostile: loading one never kills or hangs the caller.

Whoever can edit a stack folder can rewrite a model file together with its checksum. Each crafted
file below is written into a real saved stack (checksum and size updated, so only the model's
own checks stand between it and LightGBM or CatBoost) and loaded, and predicted with, in a child
process: a check that misses something shows up as a crash or a timeout of that child, not of
pytest.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xxhash

from ensemble_kit import MetaLearner, Stacker
from ensemble_kit.ensemble import _gbm_models
from ensemble_kit.ensemble._gbm_models import catboost_model_json, legacy_cbm_to_json, lightgbm_model_text
from ensemble_kit.ensemble._learners import FitRequest, resolve_learner
from ensemble_kit.errors import ValidationError

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
PARAMS = {"lightgbm": {"num_boost_round": 20}, "catboost": {"iterations": 20}}


def _logits(n=400, seed=0):
    """Six classes, two frequent ones the models' logits ignore: the class id carries information, so the
    class-wise GBMs split on it (LightGBM categorical splits, CatBoost CTRs)."""
    rng = np.random.default_rng(seed)
    prior = np.array([8, 8, 1, 1, 1, 1], dtype=float)
    y = rng.choice(6, size=n, p=prior / prior.sum())
    logits = {f"m{i}": np.eye(6)[y] * (0.5 + 0.5 * i) + rng.normal(size=(n, 6)) * 1.5 for i in range(3)}
    return logits, y


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """One saved stack per backend and layout, with the predictions the fitted stack made."""
    root = tmp_path_factory.mktemp("stacks")
    logits, y = _logits()
    unseen = {name: np.random.default_rng(1).normal(size=(30, 6)) * 2 for name in logits}
    np.savez(root / "unseen.npz", **unseen)
    built = {}
    for learner in ("lightgbm", "catboost"):
        for layout in ("wide", "classwise"):
            stk = Stacker([("gbm", MetaLearner(learner, layout=layout, params=PARAMS[learner]))], n_trials=2)
            stk.fit(logits, y)
            folder = stk.save(root / f"{learner}-{layout}")
            built[learner, layout] = (folder, stk.predict_proba(unseen))
    return root, built


def _model_file(folder: Path, suffixes: tuple[str, ...] = (".lgb.txt", ".cb.json")) -> Path:
    (path,) = [p for p in folder.iterdir() if p.name.endswith(suffixes)]
    return path


def _plant(source: Path, folder: Path, data: bytes, suffixes: tuple[str, ...] = (".lgb.txt", ".cb.json")) -> Path:
    """A copy of the stack ``source`` whose model file holds ``data``, its checksum and size rewritten."""
    shutil.copytree(source, folder)
    model = _model_file(folder, suffixes)
    model.write_bytes(data)
    manifest = folder / "stack.json"
    document = json.loads(manifest.read_text())
    (record,) = [r for r in document["files"].values() if r["file"] == model.name]
    record["checksum"] = "xxh3_128:" + xxhash.xxh3_128(data).hexdigest()
    record["bytes"] = len(data)
    if "manifest_checksum" in document:  # a manifest that checksums itself: the attacker reseals it too
        from ensemble_kit.store._artifacts import manifest_checksum

        document["manifest_checksum"] = manifest_checksum(document)
    manifest.write_text(json.dumps(document))
    return folder


# ------------------------------------------------------------------------ crafting LightGBM text
def _split_lgb(text: str) -> tuple[list[str], list[list[str]], str]:
    """Header lines (without tree_sizes), each tree's ``key=value`` lines, and everything after the trees."""
    head, rest = text.split("\n\nTree=0\n", 1)
    body, tail = ("Tree=0\n" + rest).split("end of trees\n", 1)
    trees = [block.split("\n")[1:] for block in body.split("\n\n\n") if block]
    return [line for line in head.split("\n") if not line.startswith("tree_sizes=")], trees, tail


def _join_lgb(header: list[str], trees: list[list[str]], tail: str) -> str:
    """Model text as LightGBM lays it out, tree_sizes recomputed (so only the edited field is wrong)."""
    blocks = [f"Tree={i}\n" + "\n".join(lines) + "\n\n\n" for i, lines in enumerate(trees)]
    sizes = " ".join(str(len(block)) for block in blocks)
    return "\n".join(header) + f"\ntree_sizes={sizes}\n\n" + "".join(blocks) + "end of trees\n" + tail


def _edit_tree(text: str, edit, *, min_leaves: int = 2) -> str:
    """Apply ``edit(fields)`` (a dict of a tree's ``key -> list of tokens``) to the first tree with enough leaves."""
    header, trees, tail = _split_lgb(text)
    for lines in trees:
        fields = {line.split("=", 1)[0]: line.split("=", 1)[1].split(" ") for line in lines}
        if int(fields["num_leaves"][0]) >= min_leaves and edit(fields) is not False:
            lines[:] = [f"{key}={' '.join(values)}" for key, values in fields.items()]
            return _join_lgb(header, trees, tail)
    raise AssertionError("no tree fits the edit")


def _detached_cycle(fields):
    """Root -> a -> b becomes root -> (b's leaf), b -> a: a and b reference each other, each once."""
    left, right = fields["left_child"], fields["right_child"]
    for a in range(1, len(left)):
        for b_side in (left, right):
            b = int(b_side[a])
            if b <= 0:
                continue
            leaf_side = left if int(left[b]) < 0 else right if int(right[b]) < 0 else None
            root_side = left if left[0] == str(a) else right if right[0] == str(a) else None
            if leaf_side is None or root_side is None:
                continue
            root_side[0], leaf_side[b] = leaf_side[b], str(a)
            return True
    return False


def _set(key, index, value, *, categorical=False):
    """An edit writing ``value`` at ``fields[key][index]`` (``categorical``: only in a tree with categorical splits)."""
    def edit(fields):
        if categorical and "cat_boundaries" not in fields:
            return False
        fields[key][index] = value
    return edit


def _one_more_leaf(fields):
    fields["num_leaves"] = [str(int(fields["num_leaves"][0]) + 1)]


def _categorical_split_on_feature_0(fields):
    """Feature 0 of the class-wise layout is numerical (the class id is the last column)."""
    if "cat_boundaries" not in fields:
        return False
    node = next(k for k, d in enumerate(fields["decision_type"]) if int(d) & 1)
    fields["split_feature"][node] = "0"


LGB_CASES = {  # name: (layout, craft(text) -> text, message pattern)
    "child points to itself": ("wide", lambda t: _edit_tree(t, _set("left_child", 1, "1"), min_leaves=3),
                               "child of 2 nodes|child of 0 nodes"),
    "child points back at the root": ("wide", lambda t: _edit_tree(t, _set("right_child", 1, "0"), min_leaves=3),
                                      "points back at the root"),
    "cycle away from the root": ("wide", lambda t: _edit_tree(t, _detached_cycle, min_leaves=4),
                                 "reached from the root"),
    "child out of range": ("wide", lambda t: _edit_tree(t, _set("right_child", 0, "9999")), r"right_child\[0\]"),
    "leaf out of range": ("wide", lambda t: _edit_tree(t, _set("left_child", 0, "-9999")), r"left_child\[0\]"),
    "split feature out of range": ("wide", lambda t: _edit_tree(t, _set("split_feature", 0, "100000")),
                                   r"split_feature\[0\]"),
    "num_leaves disagrees with the arrays": ("wide", lambda t: _edit_tree(t, _one_more_leaf),
                                             "where num_leaves requires"),
    "huge num_leaves": ("wide", lambda t: _edit_tree(t, _set("num_leaves", 0, "2147483647")), "num_leaves must be"),
    "NaN threshold": ("wide", lambda t: _edit_tree(t, _set("threshold", 0, "nan")), "threshold must be"),
    "overflowing leaf value": ("wide", lambda t: _edit_tree(t, _set("leaf_value", 0, "1e999")),
                               r"leaf_value\[0\] is not a finite number"),
    "infinite leaf value": ("wide", lambda t: _edit_tree(t, _set("leaf_value", 1, "inf")), "leaf_value must be"),
    "truncated text": ("wide", lambda t: t[: len(t) // 2], "truncated"),
    "unknown key in a tree": ("wide", lambda t: t.replace("is_linear=0\n", "is_linear=0\nleaf_const=1\n", 1),
                              "expected the field 'shrinkage'"),
    "unknown header line": ("wide", lambda t: t.replace("label_index=0\n", "label_index=0\naverage_output\n", 1),
                            "expected the field 'max_feature_idx'"),
    "wrong tree_sizes": ("wide", lambda t: t.replace("tree_sizes=", "tree_sizes=9", 1), r"tree_sizes\[0\]"),
    "parameter line LightGBM would index past": ("wide", lambda t: t.replace("[boosting: gbdt]", "[boosting]", 1),
                                                 r"expected '\[name: value\]'"),
    "linear trees": ("wide", lambda t: t.replace("[linear_tree: 0]", "[linear_tree: 1]", 1), "linear trees"),
    "unsupported objective": ("wide", lambda t: t.replace("objective=multiclass ", "objective=multiclassova ", 1),
                              "objective must be"),
    "category set past cat_threshold": ("classwise", lambda t: _edit_tree(
        t, _set("cat_boundaries", -1, "9999", categorical=True)), "cat_boundaries must"),
    "categorical split on a numerical feature": ("classwise", lambda t: _edit_tree(t, _categorical_split_on_feature_0),
                                                 "categorical split on feature 0"),
}


# ------------------------------------------------------------------------ crafting CatBoost JSON
def _cb_edit(edit):
    def craft(data: bytes) -> bytes:
        document = json.loads(data)
        edit(document)
        return json.dumps(document).encode()
    return craft


def _first_ctr_split(document):
    return next(s for tree in document["oblivious_trees"] for s in tree["splits"] if s["split_type"] == "OnlineCtr")


def _ctr_target_borders_past_the_table(document):
    for ctr in document["features_info"]["ctrs"]:
        ctr["target_border_idx"] = 7


def _other_bin(document):
    split = document["oblivious_trees"][0]["splits"][0]
    split["split_index"] = (split["split_index"] + 1) % sum(
        len(f["borders"]) for f in document["features_info"]["float_features"])


def _deep_tree(document):
    tree = document["oblivious_trees"][0]
    tree["splits"] = tree["splits"][:1] * 64
    tree["leaf_values"] = tree["leaf_values"][:1]


def _ctr_table(document):
    return next(iter(document["ctr_data"].values()))


CB_CASES = {  # name: (layout, craft(bytes) -> bytes, message pattern)
    "random bytes": ("wide", lambda data: np.random.default_rng(0).bytes(5000), "not JSON"),
    "split index out of range": ("wide", _cb_edit(lambda d: d["oblivious_trees"][0]["splits"][0].update(
        split_index=10**6)), r"oblivious_trees\[0\]\.splits\[0\]\.split_index"),
    "split index naming another split": ("wide", _cb_edit(_other_bin), "names the FloatFeature split"),
    "split on a float feature out of range": ("wide", _cb_edit(lambda d: d["oblivious_trees"][0]["splits"][0].update(
        float_feature_index=10**5)), "not the FloatFeature split"),
    "leaf_values of the wrong length": ("wide", _cb_edit(lambda d: d["oblivious_trees"][1]["leaf_values"].pop()),
                                        r"oblivious_trees\[1\]\.leaf_values: \d+ values where \d+ are required"),
    "absurd depth": ("wide", _cb_edit(_deep_tree), "64 entries, more than 16"),
    "NaN leaf value": ("wide", lambda data: data.replace(b'"leaf_values":[', b'"leaf_values":[NaN,', 1), "NaN"),
    "non-symmetric trees": ("wide", _cb_edit(lambda d: d.update(trees=d.pop("oblivious_trees"))), "non-symmetric"),
    "unsorted borders": ("wide", _cb_edit(lambda d: d["features_info"]["float_features"][0]["borders"].reverse()),
                         "strictly increasing"),
    "zero CTR hash stride": ("classwise", _cb_edit(lambda d: _ctr_table(d).update(hash_stride=0)), "hash_stride"),
    "CTR hash map cut short": ("classwise", _cb_edit(lambda d: _ctr_table(d)["hash_map"].pop()), "not a multiple"),
    "CTR table missing": ("classwise", _cb_edit(lambda d: d.pop("ctr_data")), "ctr_data: missing"),
    "CTR target border past the table": ("classwise", _cb_edit(_ctr_target_borders_past_the_table),
                                         "target_border_idx: 7 is past"),
    "CTR split disagreeing with its CTR": ("classwise", _cb_edit(lambda d: _first_ctr_split(d).update(
        ctr_target_border_idx=1)), "differs from CTR"),
    "a boolean for an index": ("wide", _cb_edit(lambda d: d["oblivious_trees"][0]["splits"][0].update(
        split_index=True)), "expected an integer"),
    "CTR over a categorical feature that does not exist": ("classwise", _cb_edit(
        lambda d: d["features_info"]["ctrs"][0]["elements"][0].update(cat_feature_index=3)), "cat_feature_index"),
}


_LOAD_ALL = textwrap.dedent("""
    import json, sys, numpy as np
    from ensemble_kit import Stacker
    from ensemble_kit.errors import ArtifactError
    cases, unseen = json.loads(sys.argv[1]), dict(np.load(sys.argv[2]))
    for name, folder in cases:
        print(json.dumps({"case": name, "started": True}), flush=True)
        try:
            Stacker.load(folder).predict_proba(unseen)
            outcome = {"case": name, "error": None}
        except Exception as exc:
            outcome = {"case": name, "error": type(exc).__name__, "message": str(exc)}
        print(json.dumps(outcome), flush=True)
""")


def _load_in_child(cases: dict[str, Path], unseen: Path) -> dict[str, dict]:
    """Load and predict with every crafted stack in one child process; a crash or hang fails naming the case."""
    command = [sys.executable, "-c", _LOAD_ALL, json.dumps([[k, str(v)] for k, v in cases.items()]), str(unseen)]
    try:
        result = subprocess.run(command, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        result = exc
    if isinstance(result, subprocess.TimeoutExpired):
        pytest.fail(f"the child hung in {_running(result.stdout or b'')!r}")
    running = _running(result.stdout)
    assert result.returncode == 0, f"the child died (exit {result.returncode}) in {running!r}: {result.stderr[-2000:]}"
    return {o["case"]: o for o in _outcomes(result.stdout) if not o.get("started")}


def _outcomes(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]


def _running(stdout: bytes) -> str | None:
    """The case the child had started but not finished when it stopped."""
    outcomes = _outcomes(stdout)
    return outcomes[-1]["case"] if outcomes and outcomes[-1].get("started") else None


def test_crafted_models_in_a_saved_stack_are_refused_by_name_without_crashing(stacks, tmp_path):
    root, built = stacks
    cases, patterns = {}, {}
    for learner, table in (("lightgbm", LGB_CASES), ("catboost", CB_CASES)):
        for name, (layout, craft, pattern) in table.items():
            source = built[learner, layout][0]
            original = _model_file(source).read_bytes()
            crafted = craft(original.decode()).encode() if learner == "lightgbm" else craft(original)
            assert crafted != original, name
            cases[f"{learner}: {name}"] = _plant(source, tmp_path / f"case{len(cases)}", crafted)
            patterns[f"{learner}: {name}"] = pattern
    # a legacy stack (CatBoost as .cbm) whose .cbm is garbage, and one cut in half (which CatBoost
    # reads without complaint, into a model without features: the JSON checks refuse it)
    legacy = _model_file(LEGACY / "stack_full_v1", (".cbm",))
    for name, data, pattern in (
            ("random bytes", np.random.default_rng(0).bytes(4000), r"CatBoost (cannot read|crashed reading)"),
            ("truncated", legacy.read_bytes()[: legacy.stat().st_size // 2], "not a valid model|CatBoost")):
        key = f"legacy .cbm: {name}"
        cases[key] = _plant(LEGACY / "stack_full_v1", tmp_path / f"case{len(cases)}", data, (".cbm",))
        patterns[key] = r"'ensemble\.catboost\.model' \(legacy \.cbm\).*(" + pattern + ")"

    outcomes = _load_in_child(cases, root / "unseen.npz")
    for case, folder in cases.items():
        outcome = outcomes[case]
        assert outcome["error"] == "ArtifactError", (case, outcome)
        assert str(folder) in outcome["message"], (case, outcome["message"])
        assert re.search(patterns[case], outcome["message"]), (case, outcome["message"])


@pytest.mark.parametrize("learner", ["lightgbm", "catboost"])
@pytest.mark.parametrize("layout", ["wide", "classwise"])
def test_saved_gbm_stages_predict_as_fitted(stacks, learner, layout):
    _, built = stacks
    folder, expected = built[learner, layout]
    model = _model_file(folder)
    assert model.name.endswith(".lgb.txt" if learner == "lightgbm" else ".cb.json")
    unseen = dict(np.load(folder.parent / "unseen.npz"))
    assert np.abs(Stacker.load(folder).predict_proba(unseen) - expected).max() <= 1e-6
    if learner == "lightgbm":  # LightGBM is handed the text it wrote, unchanged
        assert lightgbm_model_text(model.read_bytes()) == model.read_text()
    else:  # the saved JSON is the canonical form: checking it again changes nothing
        assert catboost_model_json(model.read_bytes()) == model.read_bytes()


def test_the_class_wise_models_exercise_categorical_splits_and_ctrs(stacks):
    """Otherwise the categorical checks above would be tested on models that have none."""
    _, built = stacks
    assert "num_cat=1" in _model_file(built["lightgbm", "classwise"][0]).read_text()
    document = json.loads(_model_file(built["catboost", "classwise"][0]).read_bytes())
    assert document["ctr_data"] and any(s["split_type"] == "OnlineCtr" for t in document["oblivious_trees"]
                                        for s in t["splits"])


def test_single_leaf_trees_pass_as_lightgbm_writes_them():
    """LightGBM writes a tree without splits with empty arrays and no leaf weight: still a valid model."""
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 3)), rng.integers(0, 2, 200)
    booster = lgb.train({"objective": "binary", "min_data_in_leaf": 150, "verbosity": -1}, lgb.Dataset(X, y),
                        num_boost_round=2)
    text = booster.model_to_string()
    assert "num_leaves=1\n" in text and "leaf_weight=\n" in text
    assert lightgbm_model_text(text.encode()) == text


def test_a_legacy_stack_with_a_cbm_model_still_loads_and_predicts_what_it_did():
    inputs = np.load(LEGACY / "inputs.npz")
    stk = Stacker.load(LEGACY / "stack_full_v1")
    proba = stk.predict_proba({f"m{i}": inputs[f"test_m{i}"] for i in range(3)})
    assert np.abs(proba - np.load(LEGACY / "stack_full_v1.expected.npy")).max() <= 1e-6


def test_the_legacy_conversion_child_is_stopped_and_named_when_it_hangs_or_crashes(monkeypatch):
    cbm = _model_file(LEGACY / "stack_full_v1", (".cbm",)).read_bytes()
    with pytest.raises(ValidationError, match=r"did not finish reading the \.cbm file within 0\.001 s"):
        legacy_cbm_to_json(cbm, timeout=0.001)
    monkeypatch.setattr(_gbm_models, "_CONVERT_CBM", "import os; os.abort()")
    with pytest.raises(ValidationError, match="killed by SIGABRT"):
        legacy_cbm_to_json(cbm)
    monkeypatch.setattr(_gbm_models, "_CONVERT_CBM", "raise SystemExit('unreadable model')")
    with pytest.raises(ValidationError, match=r"cannot read the \.cbm file \(unreadable model\)"):
        legacy_cbm_to_json(cbm)


def test_a_model_the_loader_would_refuse_is_refused_when_saving(tmp_path):
    """Non-symmetric CatBoost trees are not in the checked format: saving says so, not the next load."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 3)), rng.integers(0, 2, 200)
    request = FitRequest(X=X, y=y, binary=True, n_classes=2, categorical=None, weight=None, fit_rows=np.arange(150),
                         stop_rows=np.arange(150, 200), seed=0, threads=1,
                         params={"iterations": 5, "grow_policy": "Lossguide"})
    backend = resolve_learner("catboost")
    model = backend.fit(request)

    class Writer:
        def blob(self, key, data, *, suffix):
            raise AssertionError("nothing is written")

    with pytest.raises(ValidationError, match="non-symmetric trees"):
        backend.save(model, Writer(), "m", n_iterations=5)
