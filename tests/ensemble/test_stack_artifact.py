"""The fitted stack as one artifact: what it holds, what it refuses, what earlier versions saved."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ensemble_kit import LogitStore, Stacker
from ensemble_kit.cli.main import main
from ensemble_kit.decision.thresholds import ClassThresholds
from ensemble_kit.ensemble import StackSummary, read_stack
from ensemble_kit.errors import ArtifactError, DestinationError, StoreCorruptedError
from ensemble_kit.project import StackConfig, fit_stack, list_stacks, load_stack
from ensemble_kit.store._files import write_npy
from helpers import make_logits, reseal

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"


def _legacy_inputs() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    saved = np.load(LEGACY / "inputs.npz")
    names = ("m0", "m1", "m2")
    return {n: saved[f"oof_{n}"] for n in names}, {n: saved[f"test_{n}"] for n in names}, saved["y"]


def _aoi(seed: int = 0) -> tuple[Stacker, dict[str, np.ndarray]]:
    logits, y = make_logits(n=180, seed=seed)
    stk = Stacker.from_recipe("aoi", n_trials=4).set_params(thresholds=ClassThresholds(rules={2: 0.4}))
    return stk.fit(logits, y), logits


# ---------------------------------------------------------------------- earlier versions
@pytest.mark.parametrize("name", ["stack_full_v1", "stack_aoi_v1"])
def test_stacks_saved_by_format_1_load_and_predict_as_they_did(name, tmp_path):
    _, test, _ = _legacy_inputs()
    expected = np.load(LEGACY / f"{name}.expected.npy")
    folder = shutil.copytree(LEGACY / name, tmp_path / name)
    stacker = Stacker.load(folder)
    assert np.abs(stacker.predict_proba(test) - expected).max() <= 1e-6
    artifact = read_stack(folder)
    assert artifact.version == 1 and artifact.summary == stacker.describe() and artifact.oof_proba is None
    # saved again, it is a format-2 artifact that predicts the same
    again = Stacker.load(stacker.save(tmp_path / "resaved"))
    assert json.loads((tmp_path / "resaved" / "stack.json").read_text())["version"] == 2
    assert np.abs(again.predict_proba(test) - expected).max() <= 1e-6


def test_a_store_stack_saved_in_the_layout_before_format_2_is_read_submitted_verified_and_replaced(tmp_path):
    _, test, _ = _legacy_inputs()
    store = LogitStore(shutil.copytree(LEGACY / "store_v1", tmp_path / "store"))
    assert list_stacks(store) == ["hc"]
    old = load_stack(store)
    assert (old.name, old.version, old.info.recipe, old.metric) == ("hc", 1, "hill_climb", "log_loss")
    np.testing.assert_allclose(old.load_stacker().predict_proba(store), old.test_proba, atol=1e-6)
    assert main(["submit", str(store.path), "--out", str(tmp_path / "sub.csv")]) == 0
    store.verify()  # its Stacker is checked; the unchecksummed predictions are named in a warning
    # fitting a stack of the same name replaces the old layout with the artifact
    fit_stack(store, StackConfig(recipe="hill_climb", n_trials=4, name="hc"))
    new = load_stack(store, "hc")
    assert new.version == 2 and not (store.path / "stacks" / "hc" / "summary.json").exists()


# ---------------------------------------------------------------------- one artifact
def test_the_artifact_holds_summary_report_predictions_and_provenance(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    store = LogitStore.create(tmp_path / "s", np.arange(90), np.array(["a", "b", "c"])[y], ["a", "b", "c"], n_folds=3,
                              test_ids=np.arange(12))
    for i in range(3):
        store.put(f"m{i}", np.eye(3)[y] * (1 + i) + rng.normal(size=(90, 3)), rng.normal(size=(12, 3)))
    result = fit_stack(store, StackConfig(recipe="aoi", metric="accuracy", n_trials=4))
    stacker = result.load_stacker()
    assert isinstance(result.summary, StackSummary) and result.summary == stacker.describe()
    assert result.summary.class_rules == {2: 0.4} and result.info.classes == ("a", "b", "c")
    assert result.report.equals(stacker.report_)
    np.testing.assert_array_equal(result.oof_proba, stacker.oof_proba_)
    np.testing.assert_allclose(result.test_proba, stacker.predict_proba(store), atol=1e-9)
    np.testing.assert_array_equal(result.test_labels, stacker.decide(result.test_proba))
    document = json.loads((result.path / "stack.json").read_text())
    on_disk = {p.name for p in result.path.iterdir()} - {"stack.json"}
    assert on_disk == {record["file"] for record in document["files"].values()}  # every file is recorded


# ---------------------------------------------------------------------- 9: every file checksummed
@pytest.mark.parametrize("target", ["test probabilities", "OOF decisions", "the manifest"])
def test_a_flipped_bit_anywhere_in_a_saved_stack_is_caught_on_load_and_by_verify(target, tmp_path, capsys):
    rng = np.random.default_rng(1)
    y = np.arange(60) % 3
    store = LogitStore.create(tmp_path / "s", np.arange(60), y, [0, 1, 2], n_folds=3, test_ids=np.arange(8))
    for i in range(2):
        store.put(f"m{i}", np.eye(3)[y] * (1 + i) + rng.normal(size=(60, 3)), rng.normal(size=(8, 3)))
    folder = fit_stack(store, StackConfig(recipe="hill_climb", n_trials=4)).path
    store.verify()
    file = {"test probabilities": "predictions.test_proba.npy", "OOF decisions": "predictions.oof_labels.npy",
            "the manifest": "stack.json"}[target]
    data = bytearray((folder / file).read_bytes())
    if file == "stack.json":  # a weight's digit changes: still valid JSON, still a plausible stack
        text = data.decode()
        position = text.index('"model_weights"')
        digit = next(i for i in range(position, len(text)) if text[i] in "123456789")
        data[digit:digit + 1] = b"1" if text[digit] != "1" else b"2"
    else:
        data[-1] ^= 0x01
    (folder / file).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        read_stack(folder)
    with pytest.raises(ArtifactError, match="checksum"):
        Stacker.load(folder)
    with pytest.raises(StoreCorruptedError, match="stack 'hill_climb'"):
        store.verify()
    assert main(["verify", str(store.path)]) == 2
    assert main(["submit", str(store.path), "--out", str(tmp_path / "sub.csv")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err and not (tmp_path / "sub.csv").exists()


# ---------------------------------------------------------------------- 2: no secrets, no paths
def test_a_saved_stack_holds_no_password_and_no_path_of_the_machine(tmp_path):
    database = tmp_path / "private" / "studies.db"
    database.parent.mkdir()
    logits, y = make_logits(n=150)
    stk = Stacker.from_recipe("aoi", n_trials=3, storage=f"sqlite:///{database}").fit(logits, y)
    secret = "postgresql://alice:PASSWORD@db.internal:5432/studies"
    stk.set_params(storage=secret, soft_vote__storage=secret)
    folder = stk.save(tmp_path / "stack")
    for file in folder.iterdir():
        text = file.read_bytes()
        assert b"PASSWORD" not in text and b"alice" not in text and str(tmp_path).encode() not in text, file.name
    loaded = Stacker.load(folder)
    assert loaded.storage is None and loaded.get_params()["soft_vote__storage"] is None


def test_a_storage_saved_by_an_earlier_version_is_never_used_on_load(tmp_path):
    stk, _ = _aoi()
    folder = stk.save(tmp_path / "s")
    document = json.loads((folder / "stack.json").read_text())
    document["params"]["storage"] = f"sqlite:///{tmp_path / 'planted.db'}"
    reseal(folder, document=document)
    assert Stacker.load(folder).storage is None


# ---------------------------------------------------------------------- 3: stacker-level fields
@pytest.mark.parametrize("fault, field", [
    ("rule for a class that does not exist", "rules"), ("rule for a negative class", "rules"),
    ("rule threshold above 1", "rules"), ("temperature 0", "temperature"), ("temperature NaN-like string", "temperature"),
    ("offsets of the wrong length", "offsets"), ("n_classes a bool", "n_classes"), ("model names repeated", "model_names"),
    ("report rows of the wrong width", "report"), ("summary field of the wrong type", "fit_seconds"),
])
def test_every_restored_stack_field_is_checked_against_the_stacks_classes(fault, field, tmp_path):
    stk, logits = _aoi()
    folder = stk.save(tmp_path / "s")
    document = json.loads((folder / "stack.json").read_text())
    fitted = document["fitted"]
    if fault == "rule for a class that does not exist":
        fitted["thresholds"]["rules"] = {"7": 0.4}
    elif fault == "rule for a negative class":
        fitted["thresholds"]["rules"] = {"-1": 0.4}
    elif fault == "rule threshold above 1":
        fitted["thresholds"]["rules"] = {"2": 1.5}
    elif fault == "temperature 0":
        fitted["temperature"] = 0
    elif fault == "temperature NaN-like string":
        fitted["temperature"] = "nan"
    elif fault == "offsets of the wrong length":
        key = fitted["thresholds"]["offsets"]["__array__"]
        record = document["files"][key]
        record["checksum"] = write_npy(folder / record["file"], np.zeros(5))
        record["shape"] = [5]
    elif fault == "n_classes a bool":
        fitted["n_classes"] = True
    elif fault == "model names repeated":
        fitted["model_names"] = ["m0", "m0", "m2"]
    elif fault == "report rows of the wrong width":
        fitted["report"]["rows"][0] = fitted["report"]["rows"][0][:2]
    else:
        document["summary"]["fit_seconds"] = "fast"
    reseal(folder, document=document)
    with pytest.raises(ArtifactError, match=field) as raised:
        read_stack(folder).load_stacker()
    assert str(folder) in str(raised.value)


# ---------------------------------------------------------------------- 1: never destructive
def test_a_save_replaces_only_a_stack_and_refuses_everything_else_untouched(tmp_path, monkeypatch):
    stk, logits = _aoi()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    store = LogitStore.create(tmp_path / "store", np.arange(30), np.arange(30) % 3, [0, 1, 2], n_folds=3)
    file = tmp_path / "file.txt"
    file.write_text("a file")
    for target in (notes, store.path, file, tmp_path):
        with pytest.raises(DestinationError):
            stk.save(target)
    assert (notes / "todo.txt").read_text() == "keep me" and file.read_text() == "a file"
    LogitStore(store.path).verify()
    monkeypatch.chdir(notes)
    for target in (".", "..", notes):
        with pytest.raises(DestinationError, match="current folder"):
            stk.save(target)
    assert sorted(p.name for p in notes.iterdir()) == ["todo.txt"]  # no staging folder left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    stk.save(empty)
    other, _ = _aoi(seed=1)
    other.save(empty)  # an earlier stack is replaced atomically
    np.testing.assert_allclose(Stacker.load(empty).predict_proba(logits), other.predict_proba(logits), atol=1e-9)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# ---------------------------------------------------------------------- 11: one damaged stack
@pytest.mark.parametrize("damage", ["summary field missing", "summary field of the wrong type", "manifest not JSON"])
def test_a_damaged_stack_is_skipped_with_a_warning_and_the_stores_commands_still_work(damage, tmp_path, capsys, caplog):
    rng = np.random.default_rng(2)
    y = np.arange(60) % 3
    store = LogitStore.create(tmp_path / "s", np.arange(60), y, [0, 1, 2], n_folds=3, test_ids=np.arange(8))
    for i in range(2):
        store.put(f"m{i}", np.eye(3)[y] * (1 + i) + rng.normal(size=(60, 3)), rng.normal(size=(8, 3)))
    fit_stack(store, StackConfig(recipe="hill_climb", n_trials=4, name="good"))
    bad = fit_stack(store, StackConfig(recipe="aoi", n_trials=4, name="later")).path
    document = json.loads((bad / "stack.json").read_text())
    if damage == "summary field missing":
        del document["summary"]["models"]
        reseal(bad, document=document)
    elif damage == "summary field of the wrong type":
        document["summary"]["stages"] = "soft_vote"
        reseal(bad, document=document)
    else:
        (bad / "stack.json").write_text("{not json")
    assert list_stacks(store) == ["good"]
    assert "later" in caplog.text
    assert load_stack(store).name == "good"
    with pytest.raises(ArtifactError):
        load_stack(store, "later")
    assert main(["ls", str(store.path)]) == 0
    assert "stack 'good'" in capsys.readouterr().out
    assert main(["report", str(store.path), "--out", str(tmp_path / "report")]) == 0
    assert main(["submit", str(store.path), "--stack", "later", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "later" in err and "Traceback" not in err
    assert os.path.exists(tmp_path / "report" / "report.html")


# ---------------------------------------------------------------------- found by an attacker's review
def test_a_folder_that_merely_holds_a_stack_is_never_replaced_and_nothing_is_deleted(tmp_path):
    stk, _ = _aoi()
    project = tmp_path / "myproject"
    stk.save(project / "stacker")  # a stack kept in a sub-folder named like the old store layout's
    (project / "data").mkdir()
    (project / "data" / "important.txt").write_text("precious")
    with pytest.raises(DestinationError):
        stk.save(project)
    assert (project / "data" / "important.txt").read_text() == "precious"
    stk.save(tmp_path / "s")
    (tmp_path / "s" / "notes.txt").write_text("mine")  # a stack folder holding a file it does not record
    with pytest.raises(DestinationError, match="notes.txt"):
        stk.save(tmp_path / "s")
    assert (tmp_path / "s" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("path", ["under a file", "NUL byte", "name too long"])
def test_an_impossible_destination_is_a_named_error(tmp_path, path):
    stk, _ = _aoi()
    (tmp_path / "afile").write_text("x")
    target = {"under a file": str(tmp_path / "afile" / "sub"), "NUL byte": str(tmp_path / "a\0b"),
              "name too long": str(tmp_path / ("x" * 300))}[path]
    with pytest.raises(DestinationError):
        stk.save(target)


@pytest.mark.parametrize("fault, field", [
    ("an integer too large for a float", "fit_seconds"), ("a class index in superscript digits", "class_rules"),
    ("a bool as the version", "version"), ("stage names as one string", "stage_names"),
    ("a summary that does not describe the fitted state", "summary does not describe"),
])
def test_odd_values_in_a_resealed_stack_are_named_errors(tmp_path, fault, field):
    stk, _ = _aoi()
    folder = stk.save(tmp_path / "s")
    document = json.loads((folder / "stack.json").read_text())
    if fault == "an integer too large for a float":
        document["summary"]["fit_seconds"] = 10 ** 400
    elif fault == "a class index in superscript digits":
        document["summary"]["class_rules"] = {"\u00b2": 0.4}
    elif fault == "a bool as the version":
        document["version"] = True
    elif fault == "stage names as one string":
        document["fitted"]["stage_names"] = "soft_vote"
    else:
        document["summary"]["class_rules"] = {"1": 0.2}  # the rule in force stays 2 > 0.4
    reseal(folder, document=document)
    with pytest.raises(ArtifactError, match=field):
        read_stack(folder).load_stacker()


def test_submit_never_writes_into_a_store_nor_over_a_file_it_did_not_write(tmp_path, capsys):
    rng = np.random.default_rng(3)
    y = np.arange(60) % 3
    store = LogitStore.create(tmp_path / "s", np.arange(60), y, [0, 1, 2], n_folds=3, test_ids=np.arange(8))
    for i in range(2):
        store.put(f"m{i}", np.eye(3)[y] * (1 + i) + rng.normal(size=(60, 3)), rng.normal(size=(8, 3)))
    fit_stack(store, StackConfig(recipe="hill_climb", n_trials=4))
    labels = (store.path / "y.npy").read_bytes()
    assert main(["submit", str(store.path), "--out", str(store.path / "y.npy")]) == 2
    (tmp_path / "sub.json").write_text('{"my": "notes"}')
    assert main(["submit", str(store.path), "--out", str(tmp_path / "sub.csv")]) == 2
    assert main(["submit", str(store.path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 3 and "Traceback" not in err
    assert (store.path / "y.npy").read_bytes() == labels and (tmp_path / "sub.json").read_text() == '{"my": "notes"}'
    store.verify()
    assert main(["submit", str(store.path), "--out", str(tmp_path / "ok.csv")]) == 0
    assert main(["submit", str(store.path), "--out", str(tmp_path / "ok.csv")]) == 0  # its own settings file


def test_a_stack_name_whose_folder_holds_other_files_is_refused_before_fitting(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    y = np.arange(60) % 3
    store = LogitStore.create(tmp_path / "s", np.arange(60), y, [0, 1, 2], n_folds=3)
    for i in range(2):
        store.put(f"m{i}", np.eye(3)[y] * (1 + i) + rng.normal(size=(60, 3)))
    (store.path / "stacks" / "mine").mkdir(parents=True)
    (store.path / "stacks" / "mine" / "notes.txt").write_text("mine")
    monkeypatch.setattr(Stacker, "fit", lambda *a, **k: pytest.fail("fitted before the destination was checked"))
    with pytest.raises(DestinationError):
        fit_stack(store, StackConfig(recipe="hill_climb", n_trials=4, name="mine"))


def test_verify_names_a_linked_stacks_folder_and_a_file_a_stack_does_not_record(tmp_path):
    rng = np.random.default_rng(5)
    y = np.arange(60) % 3
    store = LogitStore.create(tmp_path / "s", np.arange(60), y, [0, 1, 2], n_folds=3)
    for i in range(2):
        store.put(f"m{i}", np.eye(3)[y] * (1 + i) + rng.normal(size=(60, 3)))
    folder = fit_stack(store, StackConfig(recipe="hill_climb", n_trials=4)).path
    (folder / "evil.npy").write_bytes(b"x")
    with pytest.raises(StoreCorruptedError, match="evil.npy"):
        store.verify()
    (folder / "evil.npy").unlink()
    store.verify()
    os.rename(store.path / "stacks", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", store.path / "stacks")
    with pytest.raises(StoreCorruptedError, match="symbolic link"):
        store.verify()
