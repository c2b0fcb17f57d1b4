"""Id matching (``match_ids``): exact on text whatever the hash does, for every id representation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ensemble_kit.store import _validate
from ensemble_kit.store._validate import IdText, match_ids

pa = pytest.importorskip("pyarrow")


def _arrow(values) -> pd.Series:
    return pd.Series(list(values), dtype=pd.ArrowDtype(pa.large_string()))


def _shuffled(ids: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(ids))
    return ids[order], order


@pytest.mark.parametrize("as_given", [
    pytest.param(lambda ids: _arrow(ids), id="arrow-large-string"),
    pytest.param(lambda ids: pd.Series(list(ids), dtype=pd.ArrowDtype(pa.string())), id="arrow-string"),
    pytest.param(lambda ids: pd.Series(list(ids), dtype=object), id="object-series"),
    pytest.param(lambda ids: np.asarray(ids, dtype=str), id="unicode-array"),
    pytest.param(lambda ids: np.asarray(ids, dtype=object), id="object-array"),
])
@pytest.mark.parametrize("ids", [
    pytest.param([f"img_{i:05d}" for i in range(3000)], id="ascii"),
    pytest.param([f"bild_{i}_é日本🙂" for i in range(3000)], id="non-ascii"),
    pytest.param([str(i) for i in range(3000)] + ["", "a", "ab"], id="ragged-and-empty"),
])
def test_every_representation_finds_every_id(as_given, ids) -> None:
    store_ids = np.asarray(ids, dtype=str)
    given, order = _shuffled(store_ids)
    match = match_ids(as_given(given), store_ids)
    assert match.exact
    np.testing.assert_array_equal(given[match.position], store_ids)
    np.testing.assert_array_equal(match.position[order], np.arange(len(ids)))


def test_arrow_slices_and_chunks_are_read_at_their_offsets() -> None:
    store_ids = np.asarray([f"s{i}" for i in range(500)], dtype=str)
    full = _arrow(["junk", *store_ids[:250]])
    sliced = full.iloc[1:]  # the Arrow array starts at offset 1
    chunked = pd.concat([sliced, _arrow(store_ids[250:])], ignore_index=True)
    match = match_ids(chunked, store_ids)
    assert match.exact
    np.testing.assert_array_equal(match.position, np.arange(500))


def test_ids_shorter_than_their_dtype_match_wider_and_narrower_arrays() -> None:
    store_ids = np.arange(1000).astype(str)  # <U21: mostly padding
    given = _arrow(store_ids[::-1])
    assert store_ids.dtype.itemsize // 4 == 21
    match = match_ids(given, store_ids)
    assert match.exact
    np.testing.assert_array_equal(match.position, np.arange(999, -1, -1))


def test_mismatches_are_listed_as_text() -> None:
    store_ids = np.asarray(["007", "008", "009"], dtype=str)
    match = match_ids(_arrow(["007", "8", "009", "x"]), store_ids)
    assert not match.exact
    assert (match.missing, match.n_missing, match.extra, match.n_extra) == (["008"], 1, ["8", "x"], 2)
    np.testing.assert_array_equal(match.position, [0, -1, 2])


def test_integer_ids_match_their_text() -> None:
    match = match_ids(_arrow(["3", "1", "2"]), np.array([1, 2, 3]))
    assert match.exact
    np.testing.assert_array_equal(match.position, [1, 2, 0])


def test_duplicated_given_ids_are_named() -> None:
    match = match_ids(_arrow(["a", "b", "b", "c"]), np.asarray(["a", "b", "c"]))
    assert match.duplicated == ["b"]
    assert not match.exact


@pytest.mark.parametrize("collide", [
    pytest.param(lambda self, packing, n_words: np.zeros(self.n, np.int64), id="all-equal"),
    # order-blind: "ab" and "ba" share a hash, so the hash join alone would pair them
    pytest.param(lambda self, packing, n_words: np.add.reduce([c.astype(np.int64) for c in self.codes()], initial=0)
                 if self.width else np.zeros(self.n, np.int64), id="anagrams"),
])
def test_a_hash_collision_never_pairs_different_ids(monkeypatch, collide) -> None:
    monkeypatch.setattr(IdText, "hash", collide)
    store_ids = np.asarray(["ab", "cd", "ef"], dtype=str)
    match = match_ids(_arrow(["ba", "cd", "fe"]), store_ids)
    assert (match.n_missing, match.n_extra) == (2, 2)
    assert match.missing == ["ab", "ef"] and match.extra == ["ba", "fe"]
    assert match.position[1] == 1
    exact = match_ids(_arrow(["ef", "ab", "cd"]), store_ids)
    assert exact.exact
    np.testing.assert_array_equal(exact.position, [1, 2, 0])


def test_the_hash_join_itself_finds_every_shuffled_ascii_id(monkeypatch) -> None:
    """The fast path (not the exact fallback) does the matching for ordinary ids."""
    calls = []
    original = _validate._join_on_hashes
    monkeypatch.setattr(_validate, "_join_on_hashes", lambda *a: calls.append(r := original(*a)) or r)
    store_ids = np.asarray([f"img_{i}" for i in range(20_000)], dtype=str)
    given, _ = _shuffled(store_ids, seed=1)
    assert match_ids(_arrow(given), store_ids).exact
    assert calls and calls[0] is not None


@pytest.mark.parametrize("given_kind", ["arrow", "unicode"])
def test_ids_of_every_length_around_the_eight_byte_words_match(given_kind) -> None:
    """Ids end inside, at and just past 64-bit word boundaries; a longer or shorter id is never paired."""
    store_ids = np.asarray([("x" * length)[:-1] + str(k) for length in range(1, 26) for k in range(3)], dtype=str)
    given, order = _shuffled(store_ids, seed=2)
    as_given = _arrow if given_kind == "arrow" else (lambda ids: np.asarray(ids, dtype=str))
    match = match_ids(as_given(given), store_ids)
    assert match.exact
    np.testing.assert_array_equal(given[match.position], store_ids)
    # the given side has an id longer than any stored one (one more word), and one shorter
    longer = match_ids(as_given([*given, "x" * 40, "x"]), store_ids)
    assert (longer.n_extra, sorted(longer.extra)) == (2, ["x", "x" * 40])
    assert longer.n_missing == 0
    shorter = match_ids(as_given(given[np.char.str_len(given) <= 8]), store_ids)
    assert shorter.n_missing == int((np.char.str_len(store_ids) > 8).sum()) and shorter.n_extra == 0


def test_ascii_ids_match_a_store_that_also_has_non_ascii_ids(monkeypatch) -> None:
    """One non-ASCII side switches both sides to code-point words; the hash join still does the matching."""
    calls = []
    original = _validate._join_on_hashes
    monkeypatch.setattr(_validate, "_join_on_hashes", lambda *a: calls.append(r := original(*a)) or r)
    store_ids = np.asarray([f"img_{i}" for i in range(300)] + ["bild_é", "日本"], dtype=str)
    match = match_ids(_arrow(store_ids[:300][::-1]), store_ids)
    assert (match.n_missing, sorted(match.missing), match.n_extra) == (2, ["bild_é", "日本"], 0)
    np.testing.assert_array_equal(match.position[:300], np.arange(299, -1, -1))
    assert calls and calls[0] is not None


def test_arrow_and_wide_unicode_ids_hash_alike() -> None:
    short = IdText.of(_arrow(["ab", "img_12345"]))
    wide = IdText.of(np.asarray(["ab", "img_12345"], dtype="<U40"))
    np.testing.assert_array_equal(short.hash("bytes", 4), wide.hash("bytes", 4))
    assert len(set(short.hash("bytes", 2).tolist())) == 2
