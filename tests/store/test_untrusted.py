"""A store received from someone else: links, lying or damaged manifests, planted files.

Every case asserts the exception class, the named path or field, and that the store and every
file outside it are unchanged.
"""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from helpers import snapshot
from ensemble_kit import LogitStore
from ensemble_kit.errors import (
    EnsembleKitError,
    InvalidValuesError,
    StoreCorruptedError,
    UnsafePathError,
    ValidationError,
)

OOF, TEST = np.zeros((60, 3)), np.zeros((3, 12, 3))


@pytest.fixture
def outside(tmp_path):
    """A folder outside the store holding files a hostile store would like to delete or read."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    (folder / "notes.npy").write_bytes(b"not yours")
    return folder


def _manifest(store, name):
    return store.path / "entries" / name / "entry.json"


# ---------------------------------------------------------------------- links
@pytest.mark.parametrize("how", ["put", "put_fold", "import"])
def test_symlinked_entry_folder_is_refused_and_target_untouched(store, outside, how):
    os.symlink(outside, store.path / "entries" / "victim")
    before = snapshot(outside)
    with pytest.raises(UnsafePathError) as raised:
        if how == "put":
            store.put("victim", OOF, TEST, overwrite=True)
        elif how == "put_fold":
            store.put_fold("victim", 0, np.zeros((20, 3)), np.zeros((12, 3)))
        else:
            import pandas as pd
            table = pd.DataFrame({"id": store.train_ids, "0": 0.2, "1": 0.3, "2": 0.5})
            test = pd.DataFrame({"id": store.test_ids, "0": 0.2, "1": 0.3, "2": 0.5})
            store.import_predictions("victim", table, test=test, overwrite=True)
    assert raised.value.path.endswith("victim")
    assert snapshot(outside) == before
    assert store.problems() == {"victim": str(store.problems()["victim"])}
    with pytest.raises(UnsafePathError):
        store.remove("victim")
    assert snapshot(outside) == before


def test_symlinked_entries_and_locks_folders_are_refused(store, outside, tmp_path):
    store.put("kept", OOF, TEST)
    locks = store.path / "locks"
    os.rename(locks, tmp_path / "moved_locks")
    os.symlink(outside, locks)
    before = snapshot(outside)
    with pytest.raises(UnsafePathError, match="locks"):
        store.put("other", OOF, TEST)
    assert snapshot(outside) == before


def test_symlinked_lock_file_is_not_opened(store, outside):
    target = outside / "precious.txt"
    os.symlink(target, store.path / "locks" / "m.lock")
    with pytest.raises(UnsafePathError) as raised:
        store.put("m", OOF, TEST)
    assert raised.value.path.endswith("m.lock")
    assert target.read_text() == "keep me"


def test_symlinked_array_file_is_never_read(store, outside, rng):
    store.put("m", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    document = json.loads(_manifest(store, "m").read_text())
    array_file = store.path / "entries" / "m" / document["oof"]["file"]
    real = outside / "real.npy"
    os.replace(array_file, real)
    os.symlink(real, array_file)
    with pytest.raises(UnsafePathError) as raised:
        store.oof("m")
    assert raised.value.path == str(array_file)
    with pytest.raises(StoreCorruptedError, match="entry 'm' oof"):
        store.verify()


def test_manifest_cannot_name_a_file_outside_its_entry(store, outside, rng):
    store.put("m", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    path = _manifest(store, "m")
    document = json.loads(path.read_text())
    document["oof"]["file"] = "../../../outside/notes.npy"
    path.write_text(json.dumps(document))
    before = snapshot(outside)
    with pytest.raises(StoreCorruptedError) as raised:
        store.oof("m")
    assert raised.value.field == "oof.file"
    store.put("m", OOF, TEST, overwrite=True)  # a damaged entry can be replaced whole
    assert snapshot(outside) == before
    assert store.models() == ["m"] and store.problems() == {}


# ---------------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["lgbm\n", "./../entries", "..", "a/b", "con", "m.", " m", "m\x00"])
def test_names_that_are_not_one_plain_file_name_are_refused(store, name):
    before = snapshot(store.path)
    with pytest.raises(ValidationError, match="Invalid entry name"):
        store.put(name, OOF, TEST)
    assert snapshot(store.path) == before


def test_names_differing_only_in_case_are_refused(store):
    store.put("ResNet", OOF, TEST)
    before = snapshot(store.path)
    with pytest.raises(ValidationError, match="differs only in case.*'ResNet'"):
        store.put("resnet", OOF, TEST)
    with pytest.raises(ValidationError, match="differs only in case"):
        store.put_fold("RESNET", 0, np.zeros((20, 3)), np.zeros((12, 3)))
    assert snapshot(store.path) == before


# ---------------------------------------------------------------------- damaged manifests
def _flip_byte(text):
    return text.encode()[:10] + b"\xff" + text.encode()[11:]


def _nested(_text):
    return ("[" * 100_000 + "]" * 100_000).encode()


def _edit(key, value):
    def apply(text):
        document = json.loads(text)
        if value is _DELETE:
            del document[key]
        else:
            document[key] = value
        return json.dumps(document).encode()
    return apply


_DELETE = object()
MANIFEST_FAULTS = {
    "flipped byte": (_flip_byte, None),
    "deep nesting": (_nested, None),
    **{f"missing {k}": (_edit(k, _DELETE), k) for k in ("complete", "dtype", "oof", "folds_present", "kind_written")},
    "classes field as a string": (_edit("n_classes", "abc"), "n_classes"),
    "complete as a string": (_edit("complete", "false"), "complete"),
    "dtype never written": (_edit("dtype", "float64"), "dtype"),
    "folds_present out of range": (_edit("folds_present", [0, 1, 9]), "folds_present"),
    "meta as a list": (_edit("meta", [1]), "meta"),
    "nan constant": (lambda text: text.replace('"meta": {}', '"meta": {"x": NaN}').encode(), None),
}


@pytest.mark.parametrize("fault", sorted(MANIFEST_FAULTS))
def test_damaged_entry_manifest_is_named_and_the_rest_keeps_working(store, rng, fault):
    corrupt, field = MANIFEST_FAULTS[fault]
    store.put("good", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    store.put("bad", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    path = _manifest(store, "bad")
    path.write_bytes(corrupt(path.read_text()))
    before = snapshot(store.path)

    with pytest.raises(StoreCorruptedError) as raised:
        store.oof("bad")
    assert raised.value.path == str(path)
    if field is not None:
        assert raised.value.field == field
    with pytest.raises(StoreCorruptedError):
        store.put_fold("bad", 0, np.zeros((20, 3)), np.zeros((12, 3)), overwrite=True)

    assert store.models() == ["good"]
    assert list(store.problems()) == ["bad"]
    board = store.leaderboard()
    assert board["model"].tolist() == ["good", "bad"]
    assert board.loc[1, "problem"] and not board.loc[0, "problem"] and np.isnan(board.loc[1, "log_loss"])
    with pytest.raises(StoreCorruptedError, match="entry 'bad'") as verified:
        store.verify()
    assert "'good'" not in str(verified.value)
    assert store.oof("good").shape == (60, 3)
    assert snapshot(store.path) == before


def test_wrong_type_for_classes_in_store_manifest_is_named(store):
    path = store.path / "ensemble_kit_store.json"
    document = json.loads(path.read_text())
    document["classes"] = "abc"
    path.write_text(json.dumps(document))
    with pytest.raises(StoreCorruptedError) as raised:
        LogitStore(store.path)
    assert raised.value.field == "classes"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("which", ["manifest", "array"])
def test_fifo_in_place_of_a_file_is_refused_without_hanging(store, rng, which):
    store.put("m", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    document = json.loads(_manifest(store, "m").read_text())
    target = _manifest(store, "m") if which == "manifest" else store.path / "entries" / "m" / document["oof"]["file"]
    target.unlink()
    os.mkfifo(target)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            store.oof("m")
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert isinstance(outcome[0], UnsafePathError) and outcome[0].path == str(target)
    with pytest.raises(StoreCorruptedError, match="entry 'm'"):
        store.verify()


# ---------------------------------------------------------------------- lying sizes
@pytest.mark.parametrize("n_folds", [2, 10**12])
def test_store_manifest_n_folds_is_checked_against_the_folds_array(store, n_folds):
    path = store.path / "ensemble_kit_store.json"
    document = json.loads(path.read_text())
    document["n_folds"] = n_folds
    path.write_text(json.dumps(document))
    before = snapshot(store.path)
    start = time.perf_counter()
    with pytest.raises(StoreCorruptedError) as raised:
        LogitStore(store.path)
    assert time.perf_counter() - start < 5  # nothing sized by the lie was allocated
    assert raised.value.field == "n_folds"
    assert snapshot(store.path) == before


def test_store_manifest_n_train_must_match_the_ids(store):
    path = store.path / "ensemble_kit_store.json"
    document = json.loads(path.read_text())
    document["n_train"] = 10**9
    path.write_text(json.dumps(document))
    with pytest.raises(StoreCorruptedError, match=r"train_ids.*shape \(60,\)"):
        LogitStore(store.path)


def test_entry_manifest_shape_is_checked_against_the_store(store, rng):
    store.put_fold("m", 0, rng.normal(size=(20, 3)), rng.normal(size=(12, 3)))
    path = _manifest(store, "m")
    document = json.loads(path.read_text())
    document["folds"]["0"]["oof"]["shape"] = [5, 3]
    path.write_text(json.dumps(document))
    with pytest.raises(StoreCorruptedError) as raised:
        store.entry("m")
    assert raised.value.field == "folds.0.oof.shape"


# ---------------------------------------------------------------------- concurrent overwrites
def _overwrite_forever(path: str, stop_at: float) -> None:
    store = LogitStore(path)
    rng = np.random.default_rng(1)
    while time.time() < stop_at:
        store.put("m", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)), overwrite=True)


def test_reader_during_back_to_back_overwrites_sees_an_entry_or_a_named_error(store, rng):
    import multiprocessing

    store.put("m", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    writer = multiprocessing.get_context("spawn").Process(target=_overwrite_forever,
                                                          args=(str(store.path), time.time() + 6))
    writer.start()
    try:
        raw, reads = [], 0
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                assert store.oof("m").shape == (60, 3)
                assert store.test("m").shape == (12, 3)
            except EnsembleKitError:
                pass
            except Exception as exc:  # noqa: BLE001 - what this test is about
                raw.append(repr(exc))
            reads += 1
    finally:
        writer.join(timeout=20)
    assert reads > 100
    assert raw == []


# ---------------------------------------------------------------------- bad values
def test_probabilities_passed_as_logits_are_refused(store):
    p = np.random.default_rng(0).dirichlet(np.ones(3), size=60)
    before = snapshot(store.path)
    with pytest.raises(InvalidValuesError, match="kind='probs'"):
        store.put("m", p, TEST)
    assert snapshot(store.path) == before
    store.put("m", p, np.full((12, 3), 1 / 3), kind="probs")
    assert store.entry("m").kind_written == "probs"


@pytest.mark.parametrize("key, value", [("classes", _DELETE), ("dtype", _DELETE), ("arrays", _DELETE),
                                        ("n_folds", _DELETE), ("n_folds", -1), ("dtype", "float64"),
                                        ("n_test", "12")])
def test_store_manifest_faults_name_the_field(store, key, value):
    path = store.path / "ensemble_kit_store.json"
    document = json.loads(path.read_text())
    if value is _DELETE:
        del document[key]
    else:
        document[key] = value
    path.write_text(json.dumps(document))
    before = snapshot(store.path)
    with pytest.raises(StoreCorruptedError) as raised:
        LogitStore(store.path)
    assert raised.value.field == key and raised.value.path == str(path)
    assert snapshot(store.path) == before


def test_missing_checksum_in_an_array_record_is_named(store, rng):
    store.put("m", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    path = _manifest(store, "m")
    document = json.loads(path.read_text())
    del document["test"]["checksum"]
    path.write_text(json.dumps(document))
    with pytest.raises(StoreCorruptedError) as raised:
        store.test("m")
    assert raised.value.field == "test.checksum"
    assert store.problems().keys() == {"m"}
