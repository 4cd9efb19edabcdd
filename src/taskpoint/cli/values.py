"""Command-line text and JSON turned into the values a parameter's type hint asks for.

``from_text`` converts one command-line word (``--when 2026-01-02``, ``--color red``); values of
container or structured types (lists, dicts, tuples, dataclasses, pydantic models) are JSON and go
through ``from_json``, which checks every field recursively. A value that does not fit raises
``ValueProblem`` naming where in the value it went wrong (``field 'opt.lr'``), which the CLI
reports as a usage error: nothing is ever accepted silently with the wrong shape.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import pathlib
import sys
import types
import typing
from typing import Any

_NONE = type(None)
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


class ValueProblem(ValueError):
    """A value that does not fit its type; ``where`` is the path inside it ('' for the whole)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"field {where!r}: {message}" if where else message)
        self.where = where


def plain_name(hint: Any) -> str:
    """A type as a user writes it: ``list[str]``, ``int | None``, ``Color``."""
    if hint is None or hint is _NONE:
        return "None"
    if hint is Any:
        return "Any"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(plain_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else plain_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def is_structured(hint: Any) -> bool:
    """Types whose command-line value is JSON (or, for collections, repeated options)."""
    hint = unwrap_optional(hint)
    origin = typing.get_origin(hint) or hint
    return (
        origin in (list, tuple, set, frozenset, dict) or _is_dataclass(hint) or _is_pydantic(hint)
    )


def unwrap_optional(hint: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not _NONE]
        if len(args) == 1:
            return args[0]
    return hint


def choices(hint: Any) -> list[str] | None:
    """The words a parameter accepts, for ``--help``: enum names or literal values."""
    hint = unwrap_optional(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return [member.name for member in hint]
    if typing.get_origin(hint) is typing.Literal:
        return [str(a) for a in typing.get_args(hint)]
    return None


# ------------------------------------------------------------------------------- from text
def from_text(text: str, hint: Any, where: str = "") -> Any:
    """One command-line word as a value of ``hint``."""
    if hint is None or hint is Any or hint is str:
        return text
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _union_from_text(text, hint, where)
    if origin is typing.Literal:
        for choice in typing.get_args(hint):
            if str(choice) == text:
                return choice
        raise ValueProblem(where, f"{text!r} is not one of {_listed(typing.get_args(hint))}")
    if is_structured(hint):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueProblem(
                where, f"expects {plain_name(hint)} as JSON, got {text!r} ({exc.msg})"
            ) from None
        return from_json(data, hint, where)
    if hint is bool:
        lowered = text.strip().lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise ValueProblem(where, f"expects a boolean (true/false), got {text!r}")
    if hint is int or hint is float:
        try:
            return hint(text)
        except ValueError:
            raise ValueProblem(where, f"expects {hint.__name__}, got {text!r}") from None
    if hint is bytes:
        return text.encode()
    return _scalar(text, hint, where)


def _union_from_text(text: str, hint: Any, where: str) -> Any:
    arms = typing.get_args(hint)
    if _NONE in arms and text == "null":
        return None
    if len([a for a in arms if a is not _NONE]) == 1:  # Optional[X]: X's own message
        return from_text(text, unwrap_optional(hint), where)
    # A plain string fits every word: try the other arms first.
    ordered = [a for a in arms if a not in (_NONE, str)] + [a for a in arms if a is str]
    for arm in ordered:
        try:
            return from_text(text, arm, where)
        except ValueProblem:
            continue
    raise ValueProblem(where, f"expects {plain_name(hint)}, got {text!r}")


def _scalar(value: Any, hint: Any, where: str) -> Any:
    """A text (or JSON scalar) as an enum member, a date, a path, or as itself if it fits."""
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_member(value, hint, where)
    if isinstance(hint, type) and issubclass(hint, pathlib.PurePath):
        if isinstance(value, str):
            return hint(value)
        raise ValueProblem(where, f"expects a path (a string), got {_json_type(value)}")
    if hint in (dt.datetime, dt.date, dt.time):
        if not isinstance(value, str):
            raise ValueProblem(where, f"expects an ISO 8601 {hint.__name__}, got {value!r}")
        try:
            parsed = hint.fromisoformat(value)
        except ValueError:
            example = {dt.datetime: "2026-12-02T10:30:00+00:00", dt.date: "2026-12-02"}
            raise ValueProblem(
                where,
                f"expects an ISO 8601 {hint.__name__} (e.g. {example.get(hint, '10:30:00')}), "
                f"got {value!r}",
            ) from None
        return parsed
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise ValueProblem(
            where,
            f"expects {plain_name(hint)}, which the command line cannot build from {value!r}; "
            "give the parameter a default, or make it a dataclass or a plain type",
        )
    return value  # an unchecked typing construct (TypeVar, Annotated, ...)


def _enum_member(value: Any, hint: type[enum.Enum], where: str) -> enum.Enum:
    if isinstance(value, str):
        if value in hint.__members__:
            return hint[value]
        folded = {name.lower(): member for name, member in hint.__members__.items()}
        if value.lower() in folded:
            return folded[value.lower()]
    for member in hint:
        if member.value == value or (isinstance(value, str) and str(member.value) == value):
            return member
    names = ", ".join(member.name for member in hint)
    raise ValueProblem(where, f"{value!r} is not a {hint.__name__} (one of: {names})")


# ------------------------------------------------------------------------------- from JSON
def from_json(data: Any, hint: Any, where: str = "") -> Any:
    """Decoded JSON as a value of ``hint``, checked (and built) field by field."""
    if hint is None or hint is Any:
        return data
    if hint is _NONE:
        if data is None:
            return None
        raise ValueProblem(where, f"expects null, got {_json_type(data)}")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if data is None and _NONE in args:
            return None
        for arm in args:
            if arm is _NONE:
                continue
            try:
                return from_json(data, arm, where)
            except ValueProblem:
                continue
        raise ValueProblem(where, f"expects {plain_name(hint)}, got {_json_type(data)}")
    if origin is typing.Literal:
        for choice in args:
            if data == choice and type(data) is type(choice):
                return choice
        raise ValueProblem(where, f"{data!r} is not one of {_listed(args)}")
    if origin in (list, set, frozenset) or hint in (list, set, frozenset):
        items = _expect(data, list, hint, where)
        item = args[0] if args else Any
        built = [from_json(x, item, f"{where}[{i}]") for i, x in enumerate(items)]
        return built if (origin or hint) is list else (origin or hint)(built)
    if origin is tuple or hint is tuple:
        return _tuple_from_json(_expect(data, list, hint, where), args, where)
    if origin is dict or hint is dict:
        mapping = _expect(data, dict, hint, where)
        key_hint, value_hint = args if args else (Any, Any)
        return {
            from_text(k, key_hint, _join(where, k)): from_json(v, value_hint, _join(where, k))
            for k, v in mapping.items()
        }
    if _is_dataclass(hint):
        return _dataclass_from_json(data, hint, where)
    if _is_pydantic(hint):
        return _pydantic_from_json(data, hint, where)
    return _plain_from_json(data, hint, where)


def _plain_from_json(data: Any, hint: Any, where: str) -> Any:
    if hint is bool:
        if isinstance(data, bool):
            return data
    elif hint is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
    elif hint is float:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return float(data)
    elif hint is str:
        if isinstance(data, str):
            return data
    elif hint is bytes:
        if isinstance(data, str):
            return data.encode()
    else:
        return _scalar(data, hint, where)
    raise ValueProblem(where, f"expects {plain_name(hint)}, got {_json_type(data)} ({data!r})")


def _tuple_from_json(items: list, args: tuple, where: str) -> tuple:
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        item = args[0] if args else Any
        return tuple(from_json(x, item, f"{where}[{i}]") for i, x in enumerate(items))
    if len(items) != len(args):
        raise ValueProblem(where, f"expects {len(args)} items, got {len(items)}")
    pairs = enumerate(zip(items, args, strict=True))
    return tuple(from_json(x, h, f"{where}[{i}]") for i, (x, h) in pairs)


def _dataclass_from_json(data: Any, cls: Any, where: str) -> Any:
    mapping = _expect(data, dict, cls, where)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ValueProblem(
            _join(where, unknown[0]),
            f"unknown field of {cls.__name__} (its fields: {', '.join(fields) or 'none'})",
        )
    hints = _hints_of(cls)
    values = {}
    for name, field in fields.items():
        if name in mapping:
            values[name] = from_json(mapping[name], hints.get(name, Any), _join(where, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ValueProblem(_join(where, name), f"missing (required by {cls.__name__})")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # the class's own __post_init__ checks
        raise ValueProblem(where, f"{cls.__name__}: {exc}") from None


def _pydantic_from_json(data: Any, cls: Any, where: str) -> Any:
    import pydantic

    try:
        return cls.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        inner = ".".join(str(part) for part in first.get("loc", ()))
        raise ValueProblem(_join(where, inner) if inner else where, first["msg"]) from None


def _hints_of(cls: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an unresolvable forward reference: check those fields loosely
        return {}


def _is_dataclass(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _is_pydantic(hint: Any) -> bool:
    pydantic = sys.modules.get("pydantic")  # only if the user's code uses it already
    return pydantic is not None and isinstance(hint, type) and issubclass(hint, pydantic.BaseModel)


def _expect(data: Any, kind: type, hint: Any, where: str) -> Any:
    if not isinstance(data, kind):
        shape = "a JSON array" if kind is list else "a JSON object"
        raise ValueProblem(
            where, f"expects {plain_name(hint)} ({shape}), got {_json_type(data)} ({data!r})"
        )
    return data


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _json_type(data: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string"}
    names.update({list: "array", dict: "object", _NONE: "null"})
    return names.get(type(data), type(data).__name__)


def _listed(values: tuple) -> str:
    return ", ".join(repr(v) for v in values)
