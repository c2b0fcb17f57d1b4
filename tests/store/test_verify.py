import json

import numpy as np
import pytest

from ensemble_kit import LogitStore
from ensemble_kit.errors import StoreCorruptedError


def _entry_file(store, name, part):
    entry_dir = store.path / "entries" / name
    return entry_dir / json.loads((entry_dir / "entry.json").read_text())[part]["file"]


def test_verify_passes_on_healthy_store(store, rng):
    store.put("a", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    store.put_fold("b", 0, rng.normal(size=(20, 3)), rng.normal(size=(12, 3)))
    store.verify()


def test_flipped_byte_is_found_by_verify_and_on_read(store, rng):
    store.put("a", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    store.put("b", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    file = _entry_file(store, "a", "oof")
    data = bytearray(file.read_bytes())
    data[200] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptedError, match=r"entry 'a' oof \(oof-.*\.npy\): checksum mismatch") as raised:
        store.verify()
    assert "entry 'b'" not in str(raised.value)
    with pytest.raises(StoreCorruptedError, match="Entry 'a'.*does not match its checksum"):
        store.oof("a")  # small arrays are hashed on every read
    assert store.oof("b").shape == (60, 3)


def test_truncated_file_is_refused_on_read(store, rng, monkeypatch):
    store.put("a", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    file = _entry_file(store, "a", "test")
    file.write_bytes(file.read_bytes()[:-8])
    with pytest.raises(StoreCorruptedError, match="bytes but its header describes"):
        store.test("a")
    with pytest.raises(StoreCorruptedError, match="entry 'a' test"):
        store.verify()


def test_missing_file_and_bad_manifest(store, rng):
    store.put("a", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    store.put("b", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    _entry_file(store, "a", "test").unlink()
    (store.path / "entries" / "b" / "entry.json").write_text("{not json")
    with pytest.raises(StoreCorruptedError, match="2 problem") as raised:
        store.verify()
    assert "entry 'a' test" in str(raised.value) and "file is missing" in str(raised.value)
    assert "entry 'b': unreadable manifest" in str(raised.value)


def test_large_arrays_checked_by_verify_only(tmp_path, rng, monkeypatch):
    import ensemble_kit.store._store as store_module

    monkeypatch.setattr(store_module, "HASH_ON_READ_BYTES", 0)
    store = LogitStore.create(tmp_path / "s", np.arange(40), np.arange(40) % 2, [0, 1], n_folds=2)
    store.put("a", rng.normal(size=(40, 2)))
    file = _entry_file(store, "a", "oof")
    data = bytearray(file.read_bytes())
    data[-1] ^= 0x01
    file.write_bytes(bytes(data))
    store.oof("a")  # same size, only the hash differs: not re-hashed on read
    with pytest.raises(StoreCorruptedError, match="checksum mismatch"):
        store.verify()


def test_checksums_are_tagged_and_sha256_is_accepted(store, rng):
    import hashlib

    store.put("a", rng.normal(size=(60, 3)), rng.normal(size=(3, 12, 3)))
    manifest_path = store.path / "entries" / "a" / "entry.json"
    document = json.loads(manifest_path.read_text())
    assert document["oof"]["checksum"].startswith("xxh3_128:")
    file = store.path / "entries" / "a" / document["oof"]["file"]
    document["oof"]["checksum"] = "sha256:" + hashlib.sha256(file.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(document))
    store.verify()
    assert store.oof("a").shape == (60, 3)
    document["oof"]["checksum"] = "md4:00"
    manifest_path.write_text(json.dumps(document))
    with pytest.raises(StoreCorruptedError, match="Unknown checksum algorithm 'md4'"):
        store.oof("a")
