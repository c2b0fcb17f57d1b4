"""Strict checks of GBM model files read from saved stacks, before LightGBM or CatBoost sees them.

A saved stack's checksums only catch accidents: whoever can edit the folder can rewrite a model
file together with its checksum. LightGBM's and CatBoost's model readers trust their input
(measured with LightGBM 4.7 and CatBoost 1.2.10: a tree node that is its own child makes
prediction loop forever, a wrong ``tree_sizes`` entry is a SIGSEGV, a CTR table with hash stride
0 a SIGFPE, a split index past CatBoost's split table or a short leaf array is read out of
bounds), so a model read from a stack reaches them only once it has been parsed here,
independently, and found to be exactly what those libraries write for this package's
meta-learners:

* LightGBM model text (:func:`lightgbm_model_text`) is parsed line by line against the layout
  LightGBM 4 writes; every tree must be a proper binary tree whose indices, arrays and numbers
  are in range. The text that passes is handed to LightGBM unchanged.
* CatBoost models are stored as CatBoost's JSON format (:func:`catboost_model_json`); the
  document is checked field by field (oblivious trees, split table, CTR tables, leaf counts)
  and rebuilt from the checked values only, so CatBoost never reads a field that was not
  checked.
* CatBoost ``.cbm`` files of stacks saved before (a binary format not worth re-implementing)
  are converted to JSON by CatBoost in a child process with a time and memory limit
  (:func:`legacy_cbm_to_json`); its output is then checked like any other JSON model.

Every fault is a :class:`~ensemble_kit.errors.ValidationError` saying which tree and field is
wrong; the stack loader turns it into an :class:`~ensemble_kit.errors.ArtifactError` naming
the folder.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from typing import Any

from ensemble_kit._optional import import_optional
from ensemble_kit.errors import ValidationError

__all__ = ["LEGACY_TIMEOUT_S", "MAX_MODEL_BYTES", "catboost_model_json", "legacy_cbm_to_json", "lightgbm_model_text"]

#: Largest model file read from a stack. The fitted meta-learners this package saves are far
#: smaller (a 1,000-round, 20-class LightGBM stage with 15 leaves is about 30 MB of text); the
#: limit bounds the memory and time a hostile file can cost the checks (about 10x its size).
MAX_MODEL_BYTES = 256 * 2**20
#: LightGBM's own upper bound on ``num_leaves``.
_MAX_LEAVES = 131_072
#: CatBoost's own upper bound on the depth of an oblivious tree.
_MAX_DEPTH = 16
_MAX_CLASSES = 100_000
_MAX_FEATURES = 1_000_000
_INT32 = 2**31 - 1
_UINT32 = 2**32 - 1
_UINT64 = 2**64 - 1
#: Seconds the child process may take to turn a legacy ``.cbm`` into JSON (a legitimate one
#: takes about a second, most of it importing CatBoost).
LEGACY_TIMEOUT_S = 120.0
#: Address space the conversion child may use: enough for CatBoost and any model below
#: :data:`MAX_MODEL_BYTES`, little enough that a hostile file cannot exhaust the machine.
_LEGACY_MEMORY_BYTES = 8 * 2**30


def _fail(where: str, what: str) -> ValidationError:
    return ValidationError(f"{where} is not a valid model: {what}")


def _check_size(data: bytes, where: str) -> None:
    if not isinstance(data, (bytes, bytearray)):
        raise ValidationError(f"{where}: expected the model file's bytes, got {type(data).__name__}.")
    if len(data) > MAX_MODEL_BYTES:
        raise _fail(where, f"{len(data):,} bytes, more than the {MAX_MODEL_BYTES:,} a saved model may have")


# ---------------------------------------------------------------------------------------- LightGBM
# Numbers exactly as LightGBM writes them: no "nan"/"inf", no leading "+", no spaces.
_NUM = r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_INT = r"-?[0-9]{1,12}"
_NUM_RE = re.compile(_NUM)
_INT_RE = re.compile(_INT)
_NUMS_RE = re.compile(rf"{_NUM}(?: {_NUM})*")
_INTS_RE = re.compile(rf"{_INT}(?: {_INT})*")
_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,256}")
_RANGE_INFO_RE = re.compile(rf"\[({_NUM}):({_NUM})\]")
_CATEGORY_INFO_RE = re.compile(rf"{_INT}(?::{_INT})*")
_PARAMETER_RE = re.compile(r"\[([a-z][a-z0-9_]*): ([A-Za-z0-9_.,+\- ]*)\]")
_IMPORTANCE_RE = re.compile(r"([A-Za-z0-9_]{1,256})=([0-9]{1,12})")
_NOT_PRINTABLE_RE = re.compile(r"[^\x20-\x7e\n]")
#: ``decision_type`` bits: 1 categorical split, 2 missing values go left, 4-8 the missing-value
#: type (0 none, 1 zero, 2 NaN; 3 does not exist), so 0-11 are the only values LightGBM writes.
_CATEGORICAL_MASK = 1
_MAX_DECISION_TYPE = 11


class _Lines:
    """A cursor over the model text's lines that says where it is when a line is wrong."""

    def __init__(self, text: str, where: str) -> None:
        self.lines = text.split("\n")
        self.i = 0
        self.where = where
        self.context = "the header"

    def fail(self, what: str, *, ahead: bool = False) -> ValidationError:
        """An error about the line just taken (or, ``ahead``, the next one), naming it by number."""
        return _fail(self.where, f"{self.context}, line {self.i + ahead}: {what}")

    def peek(self) -> str | None:
        return self.lines[self.i] if self.i < len(self.lines) else None

    def take(self) -> str:
        if self.i >= len(self.lines):
            raise _fail(self.where, f"{self.context}: the text ends early (truncated?)")
        line = self.lines[self.i]
        self.i += 1
        return line

    def expect(self, line: str) -> None:
        got = self.take()
        if got != line:
            raise self.fail(f"expected {line!r}, found {_clip(got)!r}")

    def field(self, key: str) -> str:
        """The value of the next line, which must be ``key=value``."""
        got = self.take()
        name, sep, value = got.partition("=")
        if not sep or name != key:
            raise self.fail(f"expected the field {key!r}, found {_clip(got)!r}")
        return value


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _int_value(lines: _Lines, key: str, low: int, high: int) -> int:
    value = lines.field(key)
    if _INT_RE.fullmatch(value) is None or not low <= int(value) <= high:
        raise lines.fail(f"{key} must be an integer in [{low}, {high}]; got {_clip(value)!r}")
    return int(value)


def _floats(lines: _Lines, key: str, n: int) -> list[float]:
    """``n`` finite numbers from the field ``key`` (an empty line when ``n`` is 0)."""
    value = lines.field(key)
    if n == 0 and value == "":
        return []
    if _NUMS_RE.fullmatch(value) is None:
        raise lines.fail(f"{key} must be {n} finite numbers separated by single spaces; got {_clip(value)!r}")
    numbers = list(map(float, value.split(" ")))
    if len(numbers) != n:
        raise lines.fail(f"{key} has {len(numbers)} values where num_leaves requires {n}")
    if not all(map(math.isfinite, numbers)):  # a well-formed literal can still overflow ("1e999")
        k = next(k for k, number in enumerate(numbers) if not math.isfinite(number))
        raise lines.fail(f"{key}[{k}] is not a finite number")
    return numbers


def _ints(lines: _Lines, key: str, n: int | None, low: int, high: int) -> list[int]:
    """Integers in ``[low, high]`` from the field ``key``: ``n`` of them (``None``: any count >= 1)."""
    value = lines.field(key)
    if n == 0 and value == "":
        return []
    if _INTS_RE.fullmatch(value) is None:
        raise lines.fail(f"{key} must be integers separated by single spaces; got {_clip(value)!r}")
    numbers = list(map(int, value.split(" ")))
    if n is not None and len(numbers) != n:
        raise lines.fail(f"{key} has {len(numbers)} values where num_leaves requires {n}")
    if min(numbers) < low or max(numbers) > high:
        k = next(k for k, number in enumerate(numbers) if not low <= number <= high)
        raise lines.fail(f"{key}[{k}] = {numbers[k]} is outside [{low}, {high}]")
    return numbers


def lightgbm_model_text(data: bytes, *, where: str = "the LightGBM model") -> str:
    """The model text in ``data`` if it is a LightGBM model exactly as this package saves them.

    Accepted: the layout LightGBM 4 writes (``model_to_string``) for a ``binary`` or
    ``multiclass`` booster of ordinary (not linear) trees, numerical and categorical splits,
    followed by its parameters and ``pandas_categorical:null``. Every header field, every
    tree's arrays (each of the length ``num_leaves`` fixes, every number finite and in range)
    and the byte offsets in ``tree_sizes`` (which LightGBM follows without checking) are
    verified, and every tree must be a proper binary tree: each internal node but the root and
    each leaf referenced exactly once, all of them reached from the root, so prediction cannot
    loop or index out of bounds.

    Parameters
    ----------
    data : bytes
        The model file.
    where : str
        How to name the model in messages.

    Returns
    -------
    str
        The text, unchanged, for ``lightgbm.Booster(model_str=...)``.

    Raises
    ------
    ValidationError
        Anything else, naming the tree, line and field at fault.
    """
    _check_size(data, where)
    try:
        text = bytes(data).decode("ascii")
    except UnicodeDecodeError as exc:
        raise _fail(where, f"byte {exc.start} is not ASCII (LightGBM model text is plain ASCII)") from None
    # LightGBM's readers stop at NUL and treat "\r" as a line end; neither is in the text it writes
    bad = _NOT_PRINTABLE_RE.search(text)
    if bad is not None:
        raise _fail(where, f"character {bad.group()!r} at offset {bad.start()} (expected printable ASCII lines)")
    if not text.endswith("\nend of parameters\n\npandas_categorical:null\n"):
        raise _fail(where, "the text does not end with LightGBM's parameters and 'pandas_categorical:null' "
                           "(truncated?)")
    lines = _Lines(text, where)
    lines.expect("tree")
    lines.expect("version=v4")
    num_class = _int_value(lines, "num_class", 1, _MAX_CLASSES)
    per_iteration = _int_value(lines, "num_tree_per_iteration", num_class, num_class)
    _int_value(lines, "label_index", 0, 0)
    max_feature = _int_value(lines, "max_feature_idx", 0, _MAX_FEATURES - 1)
    objective = lines.field("objective")
    if num_class == 1:
        match = re.fullmatch(rf"binary sigmoid:({_NUM})", objective)
        good = match is not None and 0 < float(match.group(1)) < math.inf
    else:
        good = objective == f"multiclass num_class:{num_class}"
    if not good:
        raise lines.fail(f"objective must be 'binary sigmoid:<positive number>' (num_class=1) or 'multiclass "
                         f"num_class:{num_class}'; got {_clip(objective)!r}")
    names = lines.field("feature_names").split(" ")
    if len(names) != max_feature + 1 or not all(_NAME_RE.fullmatch(name) for name in names):
        raise lines.fail(f"feature_names must be {max_feature + 1} names of letters, digits and '_'")
    kinds = _feature_kinds(lines, max_feature + 1)
    sizes = _ints(lines, "tree_sizes", None, 1, MAX_MODEL_BYTES)
    lines.expect("")

    for index, size in enumerate(sizes):
        lines.context = f"Tree={index}"
        start = lines.i
        lines.expect(f"Tree={index}")
        _check_tree(lines, max_feature, kinds)
        # LightGBM jumps to each tree by these byte counts before parsing it: they must be exact
        used = sum(len(line) + 1 for line in lines.lines[start:lines.i])
        if used != size:
            raise _fail(where, f"tree_sizes[{index}] = {size}, but Tree={index} takes {used} bytes")
    lines.context = "after the trees"
    if lines.peek() is not None and lines.peek().startswith("Tree="):
        raise lines.fail(f"more trees than the {len(sizes)} tree_sizes lists", ahead=True)
    if not sizes or len(sizes) % per_iteration:
        raise _fail(where, f"{len(sizes)} trees is not a positive multiple of num_tree_per_iteration={per_iteration}")
    lines.expect("end of trees")
    _check_trailer(lines, set(names))
    return text


def _feature_kinds(lines: _Lines, n_features: int) -> list[str]:
    """Each feature's kind from ``feature_infos``: ``"none"`` (unused), ``"range"`` or ``"categorical"``."""
    infos = lines.field("feature_infos").split(" ")
    if len(infos) != n_features:
        raise lines.fail(f"feature_infos has {len(infos)} entries for {n_features} features")
    kinds = []
    for k, info in enumerate(infos):
        match = _RANGE_INFO_RE.fullmatch(info)
        if info == "none":
            kinds.append("none")
        elif match is not None and all(math.isfinite(float(v)) for v in match.groups()) \
                and float(match.group(1)) <= float(match.group(2)):
            kinds.append("range")
        elif _CATEGORY_INFO_RE.fullmatch(info) is not None:
            kinds.append("categorical")
        else:
            raise lines.fail(f"feature_infos[{k}] = {_clip(info)!r} is neither 'none', '[min:max]' nor categories")
    return kinds


def _check_tree(lines: _Lines, max_feature: int, kinds: list[str]) -> None:
    """One ``Tree=`` block (its first line already read), through its two closing blank lines."""
    n_leaves = _int_value(lines, "num_leaves", 1, _MAX_LEAVES)
    n_internal = n_leaves - 1
    n_cat = _int_value(lines, "num_cat", 0, n_internal)
    split_feature = _ints(lines, "split_feature", n_internal, 0, max_feature)
    _floats(lines, "split_gain", n_internal)
    threshold = _floats(lines, "threshold", n_internal)
    decision_type = _ints(lines, "decision_type", n_internal, 0, _MAX_DECISION_TYPE)
    left = _ints(lines, "left_child", n_internal, -n_leaves, n_internal - 1)
    right = _ints(lines, "right_child", n_internal, -n_leaves, n_internal - 1)
    _floats(lines, "leaf_value", n_leaves)
    # a single-leaf tree is written without its leaf weight; LightGBM never reads it then
    _floats(lines, "leaf_weight", n_leaves if n_leaves > 1 or lines.peek() != "leaf_weight=" else 0)
    _ints(lines, "leaf_count", n_leaves, 0, _INT32)
    _floats(lines, "internal_value", n_internal)
    _floats(lines, "internal_weight", n_internal)
    _ints(lines, "internal_count", n_internal, 0, _INT32)
    if n_cat:
        boundaries = _ints(lines, "cat_boundaries", n_cat + 1, 0, _INT32)
        cat_threshold = _ints(lines, "cat_threshold", None, 0, _UINT32)
        if boundaries[0] != 0 or boundaries[-1] != len(cat_threshold) or any(
                b <= a for a, b in zip(boundaries, boundaries[1:])):
            raise lines.fail(f"cat_boundaries must rise from 0 to the {len(cat_threshold)} cat_threshold words")
    _int_value(lines, "is_linear", 0, 0)
    shrinkage = lines.field("shrinkage")
    if _NUM_RE.fullmatch(shrinkage) is None or not math.isfinite(float(shrinkage)):
        raise lines.fail(f"shrinkage must be a finite number; got {_clip(shrinkage)!r}")
    lines.expect("")
    lines.expect("")

    seen_categories: set[int] = set()
    for node in range(n_internal):
        feature, kind = split_feature[node], kinds[split_feature[node]]
        if decision_type[node] & _CATEGORICAL_MASK:
            category = threshold[node]
            if kind != "categorical" or not category.is_integer() or not 0 <= category < n_cat \
                    or int(category) in seen_categories:
                raise _fail(lines.where, f"{lines.context}: node {node} is a categorical split on feature "
                                         f"{feature} ({kind}) with threshold {category!r}; it must be a categorical "
                                         f"feature and a category-set index below num_cat={n_cat} used once")
            seen_categories.add(int(category))
        elif kind != "range":
            raise _fail(lines.where, f"{lines.context}: node {node} is a numerical split on feature {feature}, whose "
                                     f"feature_infos entry is {kind}")
    if len(seen_categories) != n_cat:
        raise _fail(lines.where, f"{lines.context}: num_cat={n_cat} but {len(seen_categories)} categorical splits")
    _check_tree_shape(left, right, n_leaves, lines)


def _check_tree_shape(left: list[int], right: list[int], n_leaves: int, lines: _Lines) -> None:
    """Children must make one binary tree rooted at node 0 (no cycle, nothing shared or unreachable)."""
    if n_leaves == 1:
        return
    n_internal = n_leaves - 1
    node_parents = [0] * n_internal
    leaf_parents = [0] * n_leaves
    for side, children in (("left_child", left), ("right_child", right)):
        for node, child in enumerate(children):
            if child >= 0:
                if child == 0:
                    raise _fail(lines.where, f"{lines.context}: {side}[{node}] points back at the root")
                node_parents[child] += 1
            else:
                leaf_parents[~child] += 1
    for kind, counts in (("internal node", node_parents[1:]), ("leaf", leaf_parents)):
        for k, count in enumerate(counts, start=1 if kind == "internal node" else 0):
            if count != 1:
                raise _fail(lines.where, f"{lines.context}: {kind} {k} is the child of {count} nodes "
                                         "(must be exactly 1)")
    # one parent each, root unreferenced: only a cycle detached from the root remains possible
    reached, stack = 1, [0]
    while stack:
        node = stack.pop()
        for child in (left[node], right[node]):
            if child > 0:
                reached += 1
                stack.append(child)
    if reached != n_internal:
        raise _fail(lines.where, f"{lines.context}: only {reached} of {n_internal} internal nodes are reached from "
                                 "the root (the others form a cycle)")


def _check_trailer(lines: _Lines, names: set[str]) -> None:
    """Feature importances, the training parameters and ``pandas_categorical:null``."""
    lines.expect("")
    lines.expect("feature_importances:")
    while lines.peek() not in ("", None):
        line = lines.take()
        match = _IMPORTANCE_RE.fullmatch(line)
        if match is None or match.group(1) not in names:
            raise lines.fail(f"expected 'feature_name=count', found {_clip(line)!r}")
    lines.expect("")
    lines.context = "the parameters"
    lines.expect("parameters:")
    # LightGBM re-parses these lines (it indexes the part after ':' without checking it exists)
    while lines.peek() not in ("", None):
        line = lines.take()
        match = _PARAMETER_RE.fullmatch(line)
        if match is None:
            raise lines.fail(f"expected '[name: value]', found {_clip(line)!r}")
        if match.group(1) == "linear_tree" and match.group(2) != "0":
            raise lines.fail("linear trees are not supported")
    lines.expect("")
    lines.expect("end of parameters")
    lines.expect("")
    lines.expect("pandas_categorical:null")
    lines.expect("")
    if lines.peek() is not None:
        raise lines.fail("text after the end of the model", ahead=True)


# ---------------------------------------------------------------------------------------- CatBoost
_LOSSES = ("Logloss", "MultiClass")
_NAN_TREATMENTS = ("AsIs", "AsFalse", "AsTrue")
#: CTR types whose tables hold integer counts: hash, then (stride - 1) counts per category
#: (target-class counts for Borders/Buckets, one total for Counter/FeatureFreq).
_CTR_TYPES = ("Borders", "Buckets", "Counter", "FeatureFreq")
_FLAT_PARAM_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_MAX_STRING = 4096
_MAX_FLAT_PARAMS = 256
_MAX_BORDERS = 65_535
_MAX_CTR_ENTRIES = 50_000_000


def catboost_model_json(data: bytes, *, where: str = "the CatBoost model") -> bytes:
    """The canonical JSON CatBoost is handed for the CatBoost JSON model in ``data``.

    Accepted: what CatBoost writes with ``save_model(format="json")`` for this package's
    meta-learners: oblivious trees of depth <= 16 over float features and categorical ones
    (one-hot splits, CTRs over single categorical features with their count tables), a
    ``Logloss`` or ``MultiClass`` loss with integer class labels. Every split's
    ``split_index`` must point into the split table that CatBoost builds from
    ``features_info`` (floats' borders, one-hot values, CTR borders, in that order) and agree
    with the split's own description; every tree must have ``2**depth * dimension`` leaf
    values; every CTR table must have a consistent stride and match the CTRs the trees use;
    every number must be finite.

    The returned document is rebuilt from the checked values only (``model_info`` keeps the
    class labels and the loss and flat parameters; the training log and other metadata are
    dropped), so CatBoost reads nothing that was not checked. It is its own fixed point.

    Parameters
    ----------
    data : bytes
        The JSON model file.
    where : str
        How to name the model in messages.

    Returns
    -------
    bytes
        The canonical JSON, for ``load_model(path, format="json")``.

    Raises
    ------
    ValidationError
        Anything else, naming the tree and field at fault.
    """
    _check_size(data, where)
    try:
        document = json.loads(bytes(data).decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _fail(where, f"not JSON ({_clip(str(exc), 200)})") from None
    canonical = _CatBoostChecker(where).document(document)
    return json.dumps(canonical, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


class _CatBoostChecker:
    """Walks one CatBoost JSON model, building the canonical copy of what it checked."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.ctr_target_borders: list[int] = []  # each CTR feature's target_border_idx, for its splits

    def fail(self, path: str, what: str) -> ValidationError:
        return _fail(self.where, f"{path}: {what}")

    # -- primitive checks ------------------------------------------------------------------
    def object(self, value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...] = (), *,
               others: bool = False) -> dict:
        """``value`` as an object with the ``required`` keys and no keys but ``optional`` ones (any: ``others``)."""
        if not isinstance(value, dict):
            raise self.fail(path, f"expected an object, got {_json_type(value)}")
        missing = [key for key in required if key not in value]
        unknown = [] if others else sorted(set(value) - set(required) - set(optional))
        if missing or unknown:
            raise self.fail(path, f"missing keys {missing}" if missing else f"unknown keys {unknown[:5]}")
        return value

    def array(self, value: Any, path: str, *, null_is_empty: bool = False, max_len: int = _MAX_CTR_ENTRIES) -> list:
        if value is None and null_is_empty:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"expected an array, got {_json_type(value)}")
        if len(value) > max_len:
            raise self.fail(path, f"{len(value)} entries, more than {max_len}")
        return value

    def integer(self, value: Any, path: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(path, f"expected an integer in [{low}, {high}], got {_clip(repr(value))}")
        return value

    def number(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(path, f"expected a finite number, got {_clip(repr(value))}")
        return float(value)

    def numbers(self, value: Any, path: str, n: int | None = None, *, increasing: bool = False,
                null_is_empty: bool = False, max_len: int = _MAX_CTR_ENTRIES) -> list[float]:
        values = [self.number(v, f"{path}[{k}]")
                  for k, v in enumerate(self.array(value, path, null_is_empty=null_is_empty, max_len=max_len))]
        if n is not None and len(values) != n:
            raise self.fail(path, f"{len(values)} values where {n} are required")
        if increasing and any(b <= a for a, b in zip(values, values[1:])):
            raise self.fail(path, "values must be strictly increasing")
        return values

    def string(self, value: Any, path: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or len(value) > _MAX_STRING or (choices is not None and value not in choices):
            expected = f"one of {list(choices)}" if choices else f"a string of at most {_MAX_STRING} characters"
            raise self.fail(path, f"expected {expected}, got {_clip(repr(value))}")
        return value

    # -- the document ------------------------------------------------------------------------
    def document(self, doc: Any) -> dict[str, Any]:
        if isinstance(doc, dict) and "trees" in doc:
            raise self.fail("trees", "non-symmetric trees (grow_policy other than 'SymmetricTree') are not supported")
        self.object(doc, "the document", ("features_info", "model_info", "oblivious_trees", "scale_and_bias"),
                    ("ctr_data",))
        model_info, dimension = self.model_info(doc["model_info"])
        features, bins = self.features_info(doc["features_info"])
        ctr_data = self.ctr_data(doc.get("ctr_data"), features.get("ctrs", []))
        trees = self.trees(doc["oblivious_trees"], bins, dimension)
        scale_and_bias = self.array(doc["scale_and_bias"], "scale_and_bias", max_len=2)
        if len(scale_and_bias) != 2:
            raise self.fail("scale_and_bias", "expected [scale, [bias per dimension]]")
        canonical = {"model_info": model_info, "features_info": features, "oblivious_trees": trees,
                     "scale_and_bias": [self.number(scale_and_bias[0], "scale_and_bias[0]"),
                                        self.numbers(scale_and_bias[1], "scale_and_bias[1]", dimension)]}
        if ctr_data:
            canonical["ctr_data"] = ctr_data
        return canonical

    def model_info(self, info: Any) -> tuple[dict[str, Any], int]:
        """Class labels and loss (all prediction needs); the dimension of the leaf values."""
        # CatBoost keeps its training log and metadata here; they are dropped, not checked
        info = self.object(info, "model_info", ("class_params", "params"), others=True)
        classes = self.object(info["class_params"], "model_info.class_params", ("class_label_type", "class_names"),
                              ("class_to_label", "classes_count"))
        self.string(classes["class_label_type"], "model_info.class_params.class_label_type", ("Integer",))
        names = [self.integer(v, f"model_info.class_params.class_names[{k}]", 0, _INT32)
                 for k, v in enumerate(self.array(classes["class_names"], "model_info.class_params.class_names",
                                                  max_len=_MAX_CLASSES))]
        if len(names) < 2 or any(b <= a for a, b in zip(names, names[1:])):
            raise self.fail("model_info.class_params.class_names", "expected at least two increasing class labels")
        class_params: dict[str, Any] = {"class_label_type": "Integer", "class_names": names}
        if "class_to_label" in classes:
            class_params["class_to_label"] = [
                self.integer(v, f"model_info.class_params.class_to_label[{k}]", 0, len(names) - 1)
                for k, v in enumerate(self.array(classes["class_to_label"], "model_info.class_params.class_to_label",
                                                 max_len=len(names)))]
        if "classes_count" in classes:
            class_params["classes_count"] = self.integer(
                classes["classes_count"], "model_info.class_params.classes_count", 0, _MAX_CLASSES)
        # the training options other than the loss are dropped, not checked: prediction does not read them
        params = self.object(info["params"], "model_info.params", ("loss_function",), others=True)
        loss = self.object(params["loss_function"], "model_info.params.loss_function", ("type",), ("params",))
        loss_type = self.string(loss["type"], "model_info.params.loss_function.type", _LOSSES)
        loss_params = self.object(loss.get("params", {}), "model_info.params.loss_function.params", (), others=True)
        if len(loss_params) > _MAX_FLAT_PARAMS:
            raise self.fail("model_info.params.loss_function.params", "too many entries")
        canonical_params: dict[str, Any] = {"loss_function": {
            "type": loss_type, "params": {self.string(k, "model_info.params.loss_function.params"):
                                          self.string(v, f"model_info.params.loss_function.params.{k}")
                                          for k, v in loss_params.items()}}}
        if "flat_params" in params:
            flat = canonical_params["flat_params"] = self.flat_params(params["flat_params"])
            # CatBoost may read the loss from either place: they must agree
            if "loss_function" in flat and str(flat["loss_function"]).partition(":")[0] != loss_type:
                raise self.fail("model_info.params.flat_params.loss_function",
                                f"{_clip(repr(flat['loss_function']))} is not the model's loss {loss_type!r}")
        dimension = 1 if loss_type == "Logloss" else len(names)
        if loss_type == "Logloss" and len(names) != 2:
            raise self.fail("model_info.class_params.class_names",
                            f"a Logloss model has two classes, not {len(names)}")
        return {"class_params": class_params, "params": canonical_params}, dimension

    def flat_params(self, value: Any) -> dict[str, Any]:
        """The user-facing training parameters (``get_params()`` of the loaded model): plain values only."""
        path = "model_info.params.flat_params"
        if not isinstance(value, dict) or len(value) > _MAX_FLAT_PARAMS:
            raise self.fail(path, f"expected an object of at most {_MAX_FLAT_PARAMS} parameters")
        out = {}
        for key, item in value.items():
            if _FLAT_PARAM_RE.fullmatch(key) is None:
                raise self.fail(path, f"parameter name {_clip(repr(key))} is not a plain name")
            if isinstance(item, list):
                items = self.array(item, f"{path}.{key}", max_len=_MAX_STRING)
                out[key] = [self.plain(v, f"{path}.{key}[{k}]") for k, v in enumerate(items)]
            elif isinstance(item, dict) and len(item) <= _MAX_STRING:
                out[key] = {self.string(k, f"{path}.{key}"): self.plain(v, f"{path}.{key}.{k}")
                            for k, v in item.items()}
            else:
                out[key] = self.plain(item, f"{path}.{key}")
        return out

    def plain(self, value: Any, path: str) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return self.string(value, path)
        if isinstance(value, int):
            return self.integer(value, path, -_UINT64, _UINT64)
        return self.number(value, path)

    def features_info(self, info: Any) -> tuple[dict[str, Any], list[tuple]]:
        """The features and CatBoost's split table (float borders, one-hot values, CTR borders, in that order)."""
        info = self.object(info, "features_info", (), ("float_features", "categorical_features", "ctrs"))
        bins: list[tuple] = []
        floats = []
        for k, feature in enumerate(self.array(info.get("float_features", []), "features_info.float_features",
                                               max_len=_MAX_FEATURES)):
            path = f"features_info.float_features[{k}]"
            self.object(feature, path, ("borders", "feature_id", "feature_index", "flat_feature_index", "has_nans",
                                        "nan_value_treatment"))
            borders = self.numbers(feature["borders"], f"{path}.borders", increasing=True, null_is_empty=True,
                                   max_len=_MAX_BORDERS)
            if not isinstance(feature["has_nans"], bool):
                raise self.fail(f"{path}.has_nans", "expected true or false")
            floats.append({"borders": borders, "feature_id": self.string(feature["feature_id"], f"{path}.feature_id"),
                           "feature_index": self.integer(feature["feature_index"], f"{path}.feature_index", k, k),
                           "flat_feature_index": self.integer(feature["flat_feature_index"],
                                                              f"{path}.flat_feature_index", 0, _MAX_FEATURES),
                           "has_nans": feature["has_nans"],
                           "nan_value_treatment": self.string(feature["nan_value_treatment"],
                                                              f"{path}.nan_value_treatment", _NAN_TREATMENTS)})
            bins.extend(("FloatFeature", k, border) for border in borders)
        categoricals = []
        one_hot = []
        for k, feature in enumerate(self.array(info.get("categorical_features", []),
                                               "features_info.categorical_features", max_len=_MAX_FEATURES)):
            path = f"features_info.categorical_features[{k}]"
            self.object(feature, path, ("feature_id", "feature_index", "flat_feature_index"),
                        ("values", "string_values"))
            entry = {"feature_id": self.string(feature["feature_id"], f"{path}.feature_id"),
                     "feature_index": self.integer(feature["feature_index"], f"{path}.feature_index", k, k),
                     "flat_feature_index": self.integer(feature["flat_feature_index"], f"{path}.flat_feature_index",
                                                        0, _MAX_FEATURES)}
            if "values" in feature:
                items = self.array(feature["values"], f"{path}.values", max_len=_MAX_BORDERS)
                values = [self.integer(v, f"{path}.values[{j}]", -_INT32 - 1, _INT32) for j, v in enumerate(items)]
                if len(set(values)) != len(values):
                    raise self.fail(f"{path}.values", "values repeat")
                entry["values"] = values
                if "string_values" in feature:
                    strings = [self.string(v, f"{path}.string_values[{j}]")
                               for j, v in enumerate(self.array(feature["string_values"], f"{path}.string_values",
                                                                max_len=len(values)))]
                    if len(strings) != len(values):
                        raise self.fail(f"{path}.string_values", "one string per value is required")
                    entry["string_values"] = strings
                one_hot.append((k, values))
            elif "string_values" in feature:
                raise self.fail(f"{path}.string_values", "string values without values")
            categoricals.append(entry)
        for k, values in one_hot:
            bins.extend(("OneHotFeature", k, value) for value in values)
        flat = sorted([f["flat_feature_index"] for f in floats] + [f["flat_feature_index"] for f in categoricals])
        if flat != list(range(len(flat))):
            raise self.fail("features_info", "flat_feature_index values must number the features 0, 1, ... once each")
        for kind, features in (("float_features", floats), ("categorical_features", categoricals)):
            order = [f["flat_feature_index"] for f in features]
            if order != sorted(order):
                raise self.fail(f"features_info.{kind}", "features must be in the order of their flat_feature_index")
        ctrs = []
        for k, ctr in enumerate(self.array(info.get("ctrs", []), "features_info.ctrs", max_len=_MAX_FEATURES)):
            path = f"features_info.ctrs[{k}]"
            self.object(ctr, path, ("borders", "ctr_type", "elements", "identifier", "prior_denomerator",
                                    "prior_numerator", "scale", "shift", "target_border_idx"))
            ctr_type = self.string(ctr["ctr_type"], f"{path}.ctr_type", _CTR_TYPES)
            elements = []
            for j, element in enumerate(self.array(ctr["elements"], f"{path}.elements", max_len=len(categoricals))):
                self.object(element, f"{path}.elements[{j}]", ("cat_feature_index", "combination_element"))
                self.string(element["combination_element"], f"{path}.elements[{j}].combination_element",
                            ("cat_feature_value",))
                elements.append(self.integer(element["cat_feature_index"], f"{path}.elements[{j}].cat_feature_index",
                                             0, len(categoricals) - 1))
            if not elements or any(b <= a for a, b in zip(elements, elements[1:])):
                raise self.fail(f"{path}.elements", "expected categorical features in increasing order")
            identifier = _ctr_identifier(ctr_type, elements)
            if ctr["identifier"] != identifier:
                raise self.fail(f"{path}.identifier", f"does not describe the CTR (expected {identifier!r})")
            borders = self.numbers(ctr["borders"], f"{path}.borders", increasing=True, null_is_empty=True,
                                   max_len=_MAX_BORDERS)
            ctrs.append({"borders": borders, "ctr_type": ctr_type, "identifier": identifier,
                         "elements": [{"cat_feature_index": e, "combination_element": "cat_feature_value"}
                                      for e in elements],
                         **{key: self.number(ctr[key], f"{path}.{key}")
                            for key in ("prior_denomerator", "prior_numerator", "scale", "shift")},
                         "target_border_idx": self.integer(ctr["target_border_idx"], f"{path}.target_border_idx",
                                                           0, 255)})
            bins.extend(("OnlineCtr", k, border) for border in borders)
            self.ctr_target_borders.append(ctrs[-1]["target_border_idx"])
        out: dict[str, Any] = {}
        for key, value in (("float_features", floats), ("categorical_features", categoricals), ("ctrs", ctrs)):
            if value:
                out[key] = value
        return out, bins

    def ctr_data(self, data: Any, ctrs: list[dict[str, Any]]) -> dict[str, Any]:
        """The CTR count tables: one per CTR type and projection the model's CTRs use, each consistent."""
        needed = {ctr["identifier"]: ctr["ctr_type"] for ctr in ctrs}
        if data is None or data == {}:
            if needed:
                raise self.fail("ctr_data", f"missing, but the model uses {len(needed)} CTR tables")
            return {}
        if not isinstance(data, dict) or set(data) != set(needed):
            raise self.fail("ctr_data", "must hold exactly the tables of the CTRs in features_info.ctrs")
        out = {}
        strides = {}
        for identifier, ctr_type in needed.items():
            path = f"ctr_data[{identifier}]"
            table = self.object(data[identifier], path, ("counter_denominator", "hash_map", "hash_stride"))
            # a hash, then one count (Counter, FeatureFreq) or one per target class (2 to 256)
            low, high = (2, 2) if ctr_type in ("Counter", "FeatureFreq") else (3, 257)
            stride = self.integer(table["hash_stride"], f"{path}.hash_stride", low, high)
            entries = self.array(table["hash_map"], f"{path}.hash_map")
            if len(entries) % stride:
                raise self.fail(f"{path}.hash_map",
                                f"{len(entries)} entries is not a multiple of hash_stride={stride}")
            hashes = set()
            for start in range(0, len(entries), stride):
                key = entries[start]
                if not isinstance(key, str) or not key.isdigit() or len(key) > 20 or int(key) > _UINT64:
                    raise self.fail(f"{path}.hash_map[{start}]", "expected a 64-bit hash as a decimal string")
                if key in hashes:
                    raise self.fail(f"{path}.hash_map[{start}]", "hash repeats")
                hashes.add(key)
                for j in range(start + 1, start + stride):
                    self.integer(entries[j], f"{path}.hash_map[{j}]", 0, _INT32)
            strides[identifier] = stride
            out[identifier] = {"counter_denominator": self.integer(table["counter_denominator"],
                                                                   f"{path}.counter_denominator", 0, _INT32),
                               "hash_map": entries, "hash_stride": stride}
        for k, ctr in enumerate(ctrs):
            classes = strides[ctr["identifier"]] - 1
            # Borders CTRs count the classes above target_border_idx, Buckets the class at it
            top = {"Borders": classes - 2, "Buckets": classes - 1}.get(ctr["ctr_type"], 0)
            if ctr["target_border_idx"] > top:
                raise self.fail(f"features_info.ctrs[{k}].target_border_idx",
                                f"{ctr['target_border_idx']} is past the table's {classes} target classes")
        return out

    def trees(self, trees: Any, bins: list[tuple], dimension: int) -> list[dict[str, Any]]:
        trees = self.array(trees, "oblivious_trees")
        if not trees:
            raise self.fail("oblivious_trees", "the model has no trees")
        weighted = isinstance(trees[0], dict) and "leaf_weights" in trees[0]
        out = []
        for t, tree in enumerate(trees):
            path = f"oblivious_trees[{t}]"
            self.object(tree, path, ("leaf_values", "splits"), ("leaf_weights",))
            splits = self.array(tree["splits"], f"{path}.splits", null_is_empty=True, max_len=_MAX_DEPTH)
            depth = len(splits)
            checked_splits = [self.split(split, f"{path}.splits[{s}]", bins) for s, split in enumerate(splits)]
            leaves = 2 ** depth
            canonical = {"splits": checked_splits,
                         "leaf_values": self.numbers(tree["leaf_values"], f"{path}.leaf_values", leaves * dimension)}
            if ("leaf_weights" in tree) != weighted:
                raise self.fail(path, "leaf_weights must be given for every tree or for none")
            if weighted:
                weights = self.numbers(tree["leaf_weights"], f"{path}.leaf_weights", leaves)
                if any(w < 0 for w in weights):
                    raise self.fail(f"{path}.leaf_weights", "weights must not be negative")
                canonical["leaf_weights"] = weights
            out.append(canonical)
        return out

    def split(self, split: Any, path: str, bins: list[tuple]) -> dict[str, Any]:
        if not isinstance(split, dict):
            raise self.fail(path, f"expected an object, got {_json_type(split)}")
        fields = {"FloatFeature": ("border", "float_feature_index"), "OneHotFeature": ("cat_feature_index", "value"),
                  "OnlineCtr": ("border", "ctr_target_border_idx")}
        kind = self.string(split.get("split_type"), f"{path}.split_type", tuple(fields))
        self.object(split, path, ("split_index", "split_type", *fields[kind]))
        if not bins:
            raise self.fail(f"{path}.split_index", "the model has no borders or values for a split to point at")
        # CatBoost reads only split_index (an unchecked index into its split table); the
        # split's own description must agree with the table entry it names
        index = self.integer(split["split_index"], f"{path}.split_index", 0, len(bins) - 1)
        bin_kind, feature, value = bins[index]
        if kind == "FloatFeature":
            described = (self.integer(split["float_feature_index"], f"{path}.float_feature_index", 0, _MAX_FEATURES),
                         self.number(split["border"], f"{path}.border"))
        elif kind == "OneHotFeature":
            described = (self.integer(split["cat_feature_index"], f"{path}.cat_feature_index", 0, _MAX_FEATURES),
                         self.integer(split["value"], f"{path}.value", -_INT32 - 1, _INT32))
        else:
            described = (feature, self.number(split["border"], f"{path}.border"))
            if split["ctr_target_border_idx"] != self.ctr_target_borders[feature] \
                    or isinstance(split["ctr_target_border_idx"], bool):
                raise self.fail(f"{path}.ctr_target_border_idx", f"differs from CTR {feature}'s target_border_idx")
        if kind != bin_kind or described != (feature, value):
            raise self.fail(f"{path}.split_index", f"{index} names the {bin_kind} split of feature {feature} at "
                                                   f"{value!r}, not the {kind} split the entry describes")
        out: dict[str, Any] = {"split_index": index, "split_type": kind}
        if kind == "FloatFeature":
            out.update(border=value, float_feature_index=feature)
        elif kind == "OneHotFeature":
            out.update(cat_feature_index=feature, value=value)
        else:
            out.update(border=value, ctr_target_border_idx=self.ctr_target_borders[feature])
        return out


def _ctr_identifier(ctr_type: str, cat_features: list[int]) -> str:
    """The key CatBoost writes for a CTR table (compact JSON, keys sorted)."""
    projection = [{"cat_feature_index": i, "combination_element": "cat_feature_value"} for i in cat_features]
    return json.dumps({"identifier": projection, "type": ctr_type}, sort_keys=True, separators=(",", ":"))


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


# ------------------------------------------------------------------------------ legacy CatBoost .cbm
# Run as ``python -I -c``: no user site, no PYTHON* variables, no current folder on the path.
# The parent passes the folder it imports CatBoost from (appended, so it cannot shadow the
# standard library), so a CatBoost installed outside the standard locations is still found.
_CONVERT_CBM = """
import os, sys, tempfile
sys.path.append(sys.argv[1])
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
except (ImportError, ValueError, OSError):
    pass
import catboost
data = sys.stdin.buffer.read()
model = catboost.CatBoost().load_model(blob=data)
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "model.json")
    model.save_model(path, format="json")
    with open(path, "rb") as fh:
        sys.stdout.buffer.write(fh.read())
"""


def legacy_cbm_to_json(data: bytes, *, where: str = "the legacy CatBoost model",
                       timeout: float | None = None) -> bytes:
    """CatBoost's JSON for a ``.cbm`` model, converted by CatBoost in a child process.

    The ``.cbm`` format is CatBoost's binary serialisation, read by native code that trusts it;
    a hostile file must not be able to crash or hang the caller, so the child reads it (from
    stdin) under a time limit (:data:`LEGACY_TIMEOUT_S`), an address-space limit and a file-size
    limit, and writes the JSON to stdout. This contains crashes and hangs, not a parser bug
    that could be exploited to run code in the child. The result is as untrusted as the input:
    check it with :func:`catboost_model_json`.

    Parameters
    ----------
    data : bytes
        The ``.cbm`` file.
    where : str
        How to name the model in messages.
    timeout : float, optional
        Seconds the child may take (default :data:`LEGACY_TIMEOUT_S`).

    Returns
    -------
    bytes
        The JSON CatBoost wrote.

    Raises
    ------
    ValidationError
        The child failed, was killed by a signal (also when it outgrew its limits) or ran out of
        time.
    """
    catboost = import_optional("catboost", feature="The CatBoost meta-learner")
    _check_size(data, where)
    limit = LEGACY_TIMEOUT_S if timeout is None else timeout
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(catboost.__file__)))
    # the child's files (its JSON, its stdout) may not outgrow what catboost_model_json reads
    command = [sys.executable, "-I", "-c", _CONVERT_CBM, package_root, str(_LEGACY_MEMORY_BYTES),
               str(MAX_MODEL_BYTES + 1)]
    # output goes to files, not pipes, so the parent never holds more than it reads back
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            done = subprocess.run(command, input=bytes(data), stdout=out, stderr=err, timeout=limit, check=False)
        except subprocess.TimeoutExpired:
            raise ValidationError(f"{where}: CatBoost did not finish reading the .cbm file within {limit:g} s "
                                  "(the child process was stopped).") from None
        if done.returncode < 0:
            raise ValidationError(f"{where}: CatBoost crashed reading the .cbm file (its child process was killed "
                                  f"by {_signal_name(-done.returncode)}).")
        if done.returncode != 0:
            err.seek(max(0, err.seek(0, os.SEEK_END) - 4096))
            raise ValidationError(f"{where}: CatBoost cannot read the .cbm file ({_last_line(err.read())}).")
        out.seek(0)
        return out.read(MAX_MODEL_BYTES + 1)  # longer than allowed: refused by catboost_model_json


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return _clip(lines[-1], 300) if lines else "no message"
