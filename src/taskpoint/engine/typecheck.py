"""Check a call's arguments against the function's type hints before any attempt runs.

Supported: int, float, str, bool, bytes, None, Optional/Union (``X | Y``), list/dict/tuple (bare
or parameterised with the above), dataclasses, pathlib paths and any other plain class (by
``isinstance``). Unknown typing constructs (TypeVar, Literal, Protocol, ...) are not checked.
``bool`` is not accepted for ``int``/``float`` (a classic slip); ``int`` is accepted for ``float``.
"""

from __future__ import annotations

import types
import typing
from typing import Any

_NONE_TYPES = (None, type(None))


def type_name(hint: Any) -> str:
    if hint in _NONE_TYPES:
        return "None"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__qualname__
    return str(hint).replace("typing.", "")


def find_mismatch(value: Any, hint: Any) -> str | None:
    """``None`` if ``value`` fits ``hint``, else a description of what does not fit."""
    if hint is Any or hint is typing.Any:
        return None
    if hint in _NONE_TYPES:
        return None if value is None else _given(value)
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        if any(find_mismatch(value, arg) is None for arg in typing.get_args(hint)):
            return None
        return _given(value)
    if origin is None:
        return _check_plain(value, hint)
    if origin in (list, dict, tuple, set, frozenset):
        return _check_collection(value, origin, typing.get_args(hint))
    return None  # Literal, Annotated, generics of user classes...: not checked


def _given(value: Any) -> str:
    return type(value).__qualname__


def _check_plain(value: Any, hint: Any) -> str | None:
    if not isinstance(hint, type):
        return None
    if hint in (int, float) and isinstance(value, bool):
        return _given(value)
    if hint is float and isinstance(value, int):
        return None
    return None if isinstance(value, hint) else _given(value)


def _check_collection(value: Any, origin: type[Any], args: tuple) -> str | None:
    if not isinstance(value, origin):
        return _given(value)
    if not args:
        return None
    if origin is dict:
        key_hint, value_hint = args
        for k, v in value.items():
            bad = find_mismatch(k, key_hint) or find_mismatch(v, value_hint)
            if bad:
                return f"dict with {bad} at key {k!r}"
        return None
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            return f"tuple of length {len(value)}"
        hints = args
    else:
        hints = (args[0],) * len(value)
    for index, (item, item_hint) in enumerate(zip(value, hints, strict=False)):
        bad = find_mismatch(item, item_hint)
        if bad:
            return f"{origin.__name__} with {bad} at index {index}"
    return None


def check_arguments(kind: str, name: str, hints: dict[str, Any], arguments: dict[str, Any]) -> None:
    """Raise ``TypeError`` naming the task, the parameter, the expected and the given type."""
    for param, value in arguments.items():
        hint = hints.get(param)
        if hint is None:
            continue
        bad = find_mismatch(value, hint)
        if bad is not None:
            raise TypeError(
                f"{kind} {name!r}: parameter {param!r} expects {type_name(hint)}, "
                f"got {bad} ({_short_repr(value)})"
            )


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
