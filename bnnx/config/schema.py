"""The config schema: every key's type is its dataclass annotation, its default the field's
default, its valid range the field's metadata (`setting(default, ge=1)`).

`validate(instance, prefix)` checks every field of a dataclass instance from its
`__post_init__`, so the CLI and Python callers get the same one-line `ConfigError`;
`check_values(cls, values, prefix)` checks a plain dict against a class's fields (model
options against a flax module's attributes, quantizer arguments against the quantizer).
A field that a subclass redeclares with a plain default keeps its base class's range.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import math
import numbers
import types
import typing
from typing import Any, Iterable, TypeVar

from bnnx.errors import ConfigError

T = TypeVar("T")

LIMIT_KEYS = ("gt", "ge", "lt", "le", "choices", "length")


def setting(default: T, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
            le: float | None = None, choices: Iterable | None = None, length: int | None = None) -> T:
    """A dataclass field with its valid range: bounds (`gt`/`ge`/`lt`/`le`) and `choices` apply to
    the value, or to each element of a sequence; `length` is a sequence's exact length. Typed as
    its default, as `dataclasses.field` is, so a field's annotation is checked against it."""
    given = dict(gt=gt, ge=ge, lt=lt, le=le, choices=choices, length=length)
    limits = {k: v for k, v in given.items() if v is not None}
    return dataclasses.field(default=default, metadata={"limits": limits})


def validate(instance, prefix: str = "") -> None:
    """Check every field of a dataclass instance; sequences are stored as tuples."""
    cls = type(instance)
    hints = type_hints(cls)
    for field in dataclasses.fields(instance):
        if field.name in hints:
            value = getattr(instance, field.name)
            checked = check_value(_join(prefix, field.name), value, hints[field.name], limits(cls, field.name))
            if checked is not value:
                object.__setattr__(instance, field.name, checked)


def check_values(cls, values: dict, prefix: str, skip=()) -> dict:
    """`values` checked against the fields of `cls` (unknown keys listed with the valid ones)."""
    hints = type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in skip and f.name in hints]
    unknown = sorted(set(values) - set(names))
    if unknown:
        valid = ", ".join(sorted(names)) or "none"
        raise ConfigError(f"unknown key '{_join(prefix, unknown[0])}'; valid keys: {valid}")
    return {k: check_value(_join(prefix, k), v, hints[k], limits(cls, k)) for k, v in values.items()}


@functools.lru_cache(maxsize=None)
def type_hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def limits(cls, name: str) -> dict:
    """The range declared for field `name` by `cls` or the nearest base class declaring one."""
    for klass in cls.__mro__:
        field = getattr(klass, "__dataclass_fields__", {}).get(name)
        if field is not None and "limits" in field.metadata:
            return field.metadata["limits"]
    return {}


def check_value(key: str, value, annotation, limits: dict):
    """`value` if it has the annotated type and lies in `limits` (a list becomes a tuple), else a
    ConfigError naming the key, the value and what is expected."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        words = _literal_values(args)  # `int | Literal["all"]`: a number, or one of these words
        if any(value == word and type(value) is type(word) for word in words):
            return value
        options = [a for a in args if a is not type(None) and typing.get_origin(a) is not typing.Literal]
        if len(options) != 1:
            return value  # no single shape to hold it to (e.g. `Any`-like unions)
        nullable = "".join(f" or {word!r}" for word in words) + (" or null" if type(None) in args else "")
        return _check_one(key, value, options[0], limits, nullable)
    return _check_one(key, value, annotation, limits, "")


def _check_one(key, value, annotation, limits, nullable):
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (tuple, list, collections.abc.Sequence):
        return _check_sequence(key, value, args[0] if args else Any, limits, nullable)
    if annotation is dict or origin is dict:
        if not isinstance(value, collections.abc.Mapping):
            _fail(key, value, f"a mapping{nullable}", limits)
        return dict(value)
    scalar = _SCALARS.get(annotation)
    if scalar is not None:
        if not scalar[0](value):
            _fail(key, value, scalar[1] + nullable, limits)
        _check_limits(key, value, limits)
        return value
    if isinstance(annotation, type) and annotation is not object and not isinstance(value, annotation):
        _fail(key, value, f"a {annotation.__name__}{nullable}", limits)
    return value


def _check_sequence(key, value, element, limits, nullable):
    noun = _SCALARS[element][2] if element in _SCALARS else "values"
    if isinstance(value, (str, bytes)) or not isinstance(value, collections.abc.Sequence):
        _fail(key, value, f"a list of {noun}{nullable}", {})
    length = limits.get("length")
    if length is not None and len(value) != length:
        _fail(key, value, f"a list of {length} {noun}", {})
    each = {k: v for k, v in limits.items() if k != "length"}
    return tuple(check_value(f"{key}[{i}]", item, element, each) for i, item in enumerate(value))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


# annotation -> (test, what is expected, plural noun for a list of them)
_SCALARS = {
    int: (_is_int, "an integer", "integers"),
    float: (_is_number, "a finite number", "finite numbers"),
    bool: (lambda v: isinstance(v, bool), "true or false", "booleans"),
    str: (lambda v: isinstance(v, str), "a string", "strings"),
}


def _check_limits(key, value, limits):
    choices = limits.get("choices")
    if choices is not None and value not in choices:
        _fail(key, value, "", limits)
    bounds = [(op, limits[op]) for op in ("gt", "ge", "lt", "le") if op in limits]
    if not all(_COMPARE[op](value, bound) for op, bound in bounds):
        raise ConfigError(f"{key} must be {describe(limits)} (got {_shown(value)})")


_COMPARE = {"gt": lambda v, b: v > b, "ge": lambda v, b: v >= b, "lt": lambda v, b: v < b, "le": lambda v, b: v <= b}


def describe(limits: dict) -> str:
    """'> 0', '>= 1', 'in (0, 1]', 'one of a, b' for a declared range."""
    if "choices" in limits:
        names = sorted(str(c) for c in limits["choices"])
        return names[0] if len(names) == 1 else f"one of {', '.join(names)}"
    low = ("(", limits["gt"]) if "gt" in limits else ("[", limits["ge"]) if "ge" in limits else None
    high = (")", limits["lt"]) if "lt" in limits else ("]", limits["le"]) if "le" in limits else None
    if low and high:
        return f"in {low[0]}{_number(low[1])}, {_number(high[1])}{high[0]}"
    if low:
        return f"{'>' if low[0] == '(' else '>='} {_number(low[1])}"
    return f"{'<' if high[0] == ')' else '<='} {_number(high[1])}" if high else "valid"


def _number(bound) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _fail(key, value, expected, limits):
    if "choices" in limits:
        expected = describe(limits)
    raise ConfigError(f"{key} must be {expected} (got {_shown(value)})")


def _shown(value) -> str:
    text = repr(value) if not isinstance(value, (list, tuple, dict)) else str(value)
    text = {"None": "null", "True": "true", "False": "false"}.get(text, text)
    return text if len(text) <= 60 else text[:57] + "..."


def _literal_values(args) -> list:
    return [word for a in args if typing.get_origin(a) is typing.Literal for word in typing.get_args(a)]


def is_checked(annotation) -> bool:
    """Whether `check_value` holds a field of this annotation to a type (for the schema's tests)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None) and typing.get_origin(a) is not typing.Literal]
        return len(options) == 1 and is_checked(options[0])
    if origin in (tuple, list, collections.abc.Sequence):
        return bool(args) and is_checked(args[0])
    return annotation in _SCALARS or annotation is dict or origin is dict or (
        isinstance(annotation, type) and annotation is not object)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
