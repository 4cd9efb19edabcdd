"""Command-line options derived from a workflow's (or task's) signature: ``--n-iterations 12``.

Each parameter becomes one option named after it, typed by its hint (``cli/values.py`` does the
converting): ``bool`` is a ``--x/--no-x`` flag; enums and ``Literal`` take one of their names;
dates, times and paths take their usual text; lists, tuples, sets and dicts take JSON or the
option repeated (``--tag a --tag b``, ``--weight a=1 --weight b=2``); dataclasses and pydantic
models take a JSON object whose fields are checked one by one. ``--help`` shows each type by
its plain name, the default, and the parameter's description from the docstring.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import inspect
import json
import pathlib
import typing
from typing import Any

import click

from taskpoint.cli.docstrings import split_docstring
from taskpoint.cli.values import (
    ValueProblem,
    choices,
    from_json,
    from_text,
    is_structured,
    plain_name,
    unwrap_optional,
)
from taskpoint.engine.task import Target


class _Unset:
    """An option that was not given: the function's own default applies."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


class TypedValue(click.ParamType):
    """One command-line word converted to the parameter's hint."""

    def __init__(self, hint: Any) -> None:
        self.hint = hint
        self.name = plain_name(hint)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return _metavar(self.hint)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value  # a default, already a value
        try:
            return from_text(value, self.hint)
        except ValueProblem as exc:
            self.fail(str(exc), param, ctx)


class RawWord(click.ParamType):
    """A repeated option's words, kept as text: the option's callback builds the container."""

    def __init__(self, hint: Any) -> None:
        self.hint = hint
        self.name = plain_name(hint)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return _metavar(self.hint)


def _metavar(hint: Any) -> str:
    words = choices(hint)
    if words is not None:
        return "[" + "|".join(words) + "]"
    return plain_name(unwrap_optional(hint))


def _how_to_give(hint: Any) -> str | None:
    """How a value of a structured type is typed, for ``--help``."""
    inner = unwrap_optional(hint)
    origin = typing.get_origin(inner) or inner
    if origin is dict:
        return "repeat as KEY=VALUE, or give one JSON object"
    if origin in (list, tuple, set, frozenset):
        return "repeat the option, or give one JSON array"
    if is_structured(inner):
        return f"a JSON object with the fields of {plain_name(inner)}"
    if inner in (dt.datetime, dt.date, dt.time):
        return "ISO 8601"
    return None


def _collection(name: str, hint: Any):
    """The callback that builds a repeatable option's value: one JSON word for the whole
    container, or one item (``KEY=VALUE`` for a dict) per repetition."""
    inner = unwrap_optional(hint)
    origin = typing.get_origin(inner) or inner
    args = typing.get_args(inner)

    def build(ctx: click.Context, param: click.Parameter, words: tuple[str, ...]) -> Any:
        if not words:
            return UNSET
        try:
            return _build(words, inner, origin, args)
        except ValueProblem as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None

    return build


def _build(words: tuple[str, ...], hint: Any, origin: Any, args: tuple) -> Any:
    opener = "{" if origin is dict else "["
    if len(words) == 1 and words[0].lstrip().startswith(opener):
        try:
            data = json.loads(words[0])
        except json.JSONDecodeError:
            data = None
        if data is not None:
            return from_json(data, hint)
    if origin is dict:
        key_hint, value_hint = args if args else (Any, Any)
        built = {}
        for word in words:
            key, sep, value = word.partition("=")
            if not sep:
                raise ValueProblem("", f"expects KEY=VALUE (or one JSON object), got {word!r}")
            built[from_text(key, key_hint, key)] = from_text(value, value_hint, key)
        return built
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(words) != len(args):
            raise ValueProblem("", f"expects {len(args)} items, got {len(words)}")
        pairs = enumerate(zip(words, args, strict=True))
        return tuple(from_text(w, h, f"[{i}]") for i, (w, h) in pairs)
    item = args[0] if args else Any
    items = [from_text(w, item, f"[{i}]") for i, w in enumerate(words)]
    return items if origin is list else origin(items)


def option_for(
    name: str, param: inspect.Parameter, hint: Any, description: str | None = None
) -> click.Option:
    flag = "--" + name.replace("_", "-")
    required = param.default is inspect.Parameter.empty
    default = None if required else param.default
    how = _how_to_give(hint)
    shown = None if required or default is None else f"[default: {_shown_default(default)}]"
    parts = (description, f"({how})" if how else None, shown)
    help_text = "  ".join(part for part in parts if part)
    common: dict[str, Any] = {"required": required, "help": help_text or None}
    inner = unwrap_optional(hint)
    if inner is bool:
        if not required:
            common.update(default=default)
        return click.Option([f"{flag}/--no-{flag[2:]}", name], **common)
    origin = typing.get_origin(inner) or inner
    if hint is not None and origin in (list, tuple, set, frozenset, dict):
        if not required:
            common.update(default=())
        return click.Option(
            [flag, name],
            type=RawWord(hint),
            multiple=True,
            callback=_collection(name, hint),
            **common,
        )
    if not required:  # the function's default is used as is, never converted from text
        common.update(default=UNSET)
    return click.Option([flag, name], type=TypedValue(hint), **common)


def _shown_default(default: Any) -> str:
    """A default as it would be typed on the command line."""
    if isinstance(default, enum.Enum):
        return default.name
    if isinstance(default, str | int | float | pathlib.PurePath | dt.date | dt.time):
        return default.isoformat() if isinstance(default, dt.date | dt.time) else str(default)
    try:
        return json.dumps(default, default=_jsonable)
    except (TypeError, ValueError):
        return repr(default)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(type(value).__name__)


def options_for(target: Target) -> list[click.Option]:
    _, described = split_docstring(target.fn.__doc__)
    options = []
    for name, param in target.signature.parameters.items():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue  # *args / **kwargs cannot be given on the command line
        options.append(option_for(name, param, target.hints.get(name), described.get(name)))
    return options


def command_help(target: Target) -> str:
    summary, _ = split_docstring(target.fn.__doc__)
    return summary or f"Run the {target.kind} {target.name}."


def to_arguments(target: Target, values: dict[str, Any]) -> dict[str, Any]:
    """Click's values -> call arguments; options not given are left to the defaults."""
    return {name: value for name, value in values.items() if value is not UNSET}
