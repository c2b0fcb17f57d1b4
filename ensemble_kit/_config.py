"""Typed dataclass configs from plain YAML mappings: key-named validation and ``key=value`` overrides.

Shared by :class:`~ensemble_kit.train.TrainConfig` and the project config of the CLI, so both
refuse unknown keys and wrong types the same way, naming the full dotted key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import fields
from typing import Any, Literal

import yaml

from ensemble_kit.errors import ValidationError


def build_dataclass(cls: type, data: Any, *, prefix: str) -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types name ``prefix + key``."""
    if not isinstance(data, dict):
        raise ValidationError(f"Config section {prefix.rstrip('.') or '<root>'!r} must be a mapping; got {data!r}.")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValidationError(f"Unknown config key(s) {[prefix + k for k in unknown]}; valid keys here: {sorted(known)}.")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        optional = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(optional) == 1 \
                and dataclasses.is_dataclass(optional[0]) and value is not None:
            hint = optional[0]  # an optional section that is given
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build_dataclass(hint, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = coerce_value(value, hint, key=prefix + name)
    try:
        return cls(**kwargs)
    except ValidationError:
        raise
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"Config section {prefix.rstrip('.') or '<root>'!r}: {exc}") from exc


def coerce_value(value: Any, hint: Any, *, key: str) -> Any:
    """Check (and lightly convert: int -> float, list -> tuple) one value against its type hint."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce_value(value, inner[0], key=key)
    if origin is Literal:
        if value not in args:
            raise ValidationError(f"Config key {key!r} must be one of {list(args)}; got {value!r}.")
        return value
    if origin is tuple:
        item = args[0] if args else str
        if not isinstance(value, (list, tuple)):
            raise ValidationError(f"Config key {key!r} must be a list; got {value!r}.")
        return tuple(coerce_value(v, item, key=f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        key_type, value_type = args
        if not isinstance(value, dict):
            raise ValidationError(f"Config key {key!r} must be a mapping; got {value!r}.")
        return {coerce_value(k, key_type, key=f"{key} (key)"): coerce_value(v, value_type, key=f"{key}.{k}")
                for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ValidationError(f"Config key {key!r} must be true or false; got {value!r}.")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"Config key {key!r} must be an integer; got {value!r}.")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValidationError(f"Config key {key!r} must be a finite number; got {value!r}.")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValidationError(f"Config key {key!r} must be a string; got {value!r}.")
        return value
    return value


def set_dotted(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` override to a nested mapping in place (value parsed as YAML).

    ``*`` as a path part applies the assignment under every key of that mapping
    (``models.*.epochs=1``). The final key must already exist, so a typo is an error that
    names it rather than a silently ignored setting.
    """
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ValidationError(f"Override {assignment!r} must look like key=value (e.g. optimizer.lr=0.01).")
    value = yaml.safe_load(raw)
    _assign(data, key.strip().split("."), value, assignment=assignment, walked="")


def _assign(target: Any, parts: list[str], value: Any, *, assignment: str, walked: str) -> None:
    head, rest = parts[0], parts[1:]
    if not isinstance(target, dict):
        raise ValidationError(f"Override {assignment!r}: {walked.rstrip('.')!r} is not a config section.")
    keys = list(target) if head == "*" else [head]
    if head == "*" and not keys:
        raise ValidationError(f"Override {assignment!r}: {walked.rstrip('.') or '<root>'!r} is empty; '*' matches nothing.")
    for key in keys:
        if key not in target:
            where = walked.rstrip(".") or "<root>"
            close = difflib.get_close_matches(key, [str(k) for k in target], n=3)
            hint = f" Did you mean {' or '.join(repr(walked + c) for c in close)}?" if close else ""
            raise ValidationError(f"Override {assignment!r}: unknown key {walked + key!r}.{hint} Keys under {where!r} "
                                  f"are {sorted(target)}.")
        if rest:
            if target[key] is None:
                target[key] = {}
            _assign(target[key], rest, value, assignment=assignment, walked=f"{walked}{key}.")
        else:
            target[key] = value
