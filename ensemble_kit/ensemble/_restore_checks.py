"""Checks of the fitted state an ensembler reads back from a saved stack.

A saved stack is untrusted input: its JSON and arrays may have been edited together with their
checksums, so a checksum only proves the files agree with the manifest, not that the values make
sense. Every ``_restore_fitted`` therefore passes each field it reads through one of these
checks, which refuse a wrong type, shape, dtype, non-finite value or out-of-range value with a
:class:`~ensemble_kit.errors.ValidationError` naming the field, what was expected and what was
found (``load_stacker`` turns it into an :class:`~ensemble_kit.errors.ArtifactError` naming the
folder). Nothing is guessed at (a ``"3"`` is not read as 3, an integer array not as weights): a
value that is not what a fit writes is refused, so a tampered stack never reaches prediction as
labels of -1, NaN probabilities or a raw IndexError.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ensemble_kit.errors import ValidationError

__all__ = ["TEMPERATURE_RANGE", "check_bool", "check_choice", "check_int", "check_number", "check_number_map",
           "check_vector", "describe", "fault", "field", "restoring"]

# A fitted temperature lies in [0.05, 20] (decision.calibration.fit_temperature's bounds). The
# accepted range is far wider, so no stack a fit wrote (by this or a later version) is refused,
# yet far inside what float32 survives: a log-probability of a few hundred classes divided by a
# temperature of 1e-38 overflows to -inf in every column, and the softmax of that row is NaN.
TEMPERATURE_RANGE = (1e-3, 1e3)

_FIX = "The saved stack was edited or corrupted; save the fitted Stacker again."


def describe(value: Any) -> str:
    """``value`` with its JSON type, shortened: ``'3' (str)`` tells a string from a number."""
    return f"{_short(repr(value))} ({type(value).__name__})"


def _short(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters: a tampered field may be arbitrarily long."""
    return text if len(text) <= limit else text[:limit] + "..."


def fault(name: str, expected: str, found: str) -> ValidationError:
    """The error for saved field ``name``: what was ``expected``, what was ``found`` (a description)."""
    return ValidationError(f"saved field {name!r} must be {expected}; found {found}. {_FIX}")


def field(state: Any, key: str, name: str) -> Any:
    """``state[key]`` of a saved JSON object (field ``name``), refused by name when absent."""
    if not isinstance(state, dict):
        raise fault(name.rpartition(".")[0] or name, "a JSON object", describe(state))
    if key not in state:
        raise ValidationError(f"saved field {name!r} is missing. {_FIX}")
    return state[key]


def check_int(value: Any, name: str, *, minimum: int | None = None, allow_none: bool = False) -> int | None:
    """A JSON integer (not a bool, a float such as ``3.0`` or a string), at least ``minimum``."""
    if value is None and allow_none:
        return None
    # bool is a subclass of int in Python: ``true`` must not pass for 1
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise fault(name, f"an integer{bound}{' or null' if allow_none else ''}", describe(value))
    return value


def check_bool(value: Any, name: str) -> bool:
    """A JSON ``true``/``false``: any other value would be read by its truthiness (``"no"`` is true)."""
    if not isinstance(value, bool):
        raise fault(name, "true or false", describe(value))
    return value


def check_choice(value: Any, name: str, choices: Collection[str]) -> str:
    """One of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        raise fault(name, f"one of {list(choices)}", describe(value))
    return value


def check_number(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
                 positive: bool = False) -> float:
    """A finite JSON number (an integer or a float, not a bool or a string) within the bounds given."""
    number = _as_float(value)
    if number is None or not math.isfinite(number) or (positive and number <= 0) \
            or (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise fault(name, _number_rule(positive, minimum, maximum, plural=False), describe(value))
    return number


def _as_float(value: Any) -> float | None:
    """A JSON number as a float; ``None`` for anything else (a bool, a string, an int beyond float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # a JSON integer of 400 digits is valid JSON but no float
        return None


def check_number_map(value: Any, name: str, keys: Iterable[str], *, minimum: float | None = None,
                     maximum: float | None = None, positive: bool = False,
                     positive_sum: bool = False) -> dict[str, float]:
    """A JSON object with exactly the names ``keys``, each a number as :func:`check_number` wants.

    ``positive_sum``: the values must add up to a finite number > 0 (they are divided by it).
    """
    keys = list(keys)
    if not isinstance(value, Mapping):
        raise fault(name, f"a JSON object keyed by {keys}", describe(value))
    if set(value) != set(keys):
        missing, extra = sorted(set(keys) - set(value)), sorted(map(str, set(value) - set(keys)))
        gaps = ", ".join(f"{what} {names}" for what, names in (("missing", missing), ("unknown", extra)) if names)
        raise fault(name, f"keyed by exactly {keys} ({gaps})", describe(dict(value)))
    numbers = {key: check_number(value[key], f"{name}.{key}", minimum=minimum, maximum=maximum, positive=positive)
               for key in keys}
    if positive_sum:
        _check_sum(sum(numbers.values()), name, _short(repr(numbers)))
    return numbers


def check_vector(value: Any, name: str, length: int, *, positive: bool = False, nonnegative: bool = False,
                 positive_sum: bool = False, minimum: float | None = None,
                 maximum: float | None = None) -> NDArray[np.float64]:
    """A saved ``(length,)`` floating-point array of finite values, as float64.

    ``positive``/``nonnegative``/``minimum``/``maximum`` bound every value; ``positive_sum``
    requires a finite sum > 0 (the values are divided by their sum: a zero sum is 0/0 = NaN and
    an overflowing one turns every weight into 0).
    """
    if not isinstance(value, np.ndarray):
        raise fault(name, f"an array of {length} numbers", describe(value))
    if not np.issubdtype(value.dtype, np.floating):
        # an integer or bool array is not what a fit writes: refused rather than guessed at
        raise fault(name, f"a floating-point array of shape ({length},)", f"dtype {value.dtype}")
    if value.shape != (length,):
        raise fault(name, f"an array of shape ({length},) (one value per model)", f"shape {value.shape}")
    values = value.astype(np.float64, copy=False)
    bad = ~np.isfinite(values)
    if positive:
        bad |= values <= 0
    if nonnegative:
        bad |= values < 0
    if minimum is not None:
        bad |= values < minimum
    if maximum is not None:
        bad |= values > maximum
    if bad.any():
        lowest = max(minimum, 0.0) if minimum is not None and nonnegative else (0.0 if nonnegative else minimum)
        rule = _number_rule(positive, lowest, maximum, plural=True)
        raise fault(name, rule, f"{_short(repr(values.tolist()))} (first fault at position "
                                f"{int(np.flatnonzero(bad)[0])})")
    if positive_sum:
        with np.errstate(over="ignore"):  # an overflowing sum is the fault reported, not a warning
            total = float(values.sum())
        _check_sum(total, name, _short(repr(values.tolist())))
    return values


def _check_sum(total: float, name: str, found: str) -> None:
    if not math.isfinite(total) or total <= 0:
        raise fault(name, "values with a finite sum > 0 (they are divided by their sum)", f"{found} (sum {total})")


def _number_rule(positive: bool, minimum: float | None, maximum: float | None, *, plural: bool) -> str:
    parts = []
    if positive:
        parts.append("> 0")
    if minimum is not None:
        parts.append(f">= {minimum:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    what = "finite numbers" if plural else "a finite number"
    return f"{what} {' and '.join(parts)}" if parts else what


@contextmanager
def restoring(what: str) -> Iterator[None]:
    """Prefix ``what`` (an ensembler, a blend's stage) to every :class:`ValidationError` raised inside.

    A field name such as ``fitted.weights`` recurs in every ensembler and in every stage of a
    blend: the prefix says whose it is.
    """
    try:
        yield
    except ValidationError as exc:
        raise ValidationError(f"{what}: {exc}") from exc
