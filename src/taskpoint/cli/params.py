"""Command-line options derived from a workflow's (or task's) signature: ``--n-iterations 12``.

Scalars map to click types, ``bool`` to a ``--x/--no-x`` flag, ``list[X]`` to a repeatable
option, and anything richer (dict, tuple, dataclass, unions) to a JSON value.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import pathlib
import types
import typing
from typing import Any

import click

from taskpoint.engine.task import Target
from taskpoint.engine.typecheck import type_name

_SCALARS: dict[Any, click.ParamType] = {
    int: click.INT,
    float: click.FLOAT,
    str: click.STRING,
    pathlib.Path: click.Path(path_type=pathlib.Path),
    pathlib.PurePath: click.Path(path_type=pathlib.Path),
}


class JsonValue(click.ParamType):
    """A JSON literal, turned into the hinted type (a dataclass is built from an object)."""

    name = "json"

    def __init__(self, hint: Any) -> None:
        self.hint = hint

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "JSON"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            self.fail(f"{value!r} is not valid JSON ({exc.msg})", param, ctx)
        return _from_json(data, self.hint)


class BytesValue(click.ParamType):
    name = "bytes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value.encode() if isinstance(value, str) else value


def _from_json(data: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(data, dict):
        return hint(**data)
    if origin is tuple or hint is tuple:
        return tuple(data) if isinstance(data, list) else data
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if (
                isinstance(arg, type)
                and arg is not type(None)
                and dataclasses.is_dataclass(arg)
                and isinstance(data, dict)
            ):
                return arg(**data)
    return data


def _unwrap_optional(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def option_for(name: str, param: inspect.Parameter, hint: Any) -> click.Option:
    flag = "--" + name.replace("_", "-")
    required = param.default is inspect.Parameter.empty
    default = None if required else param.default
    help_text = f"{name}: {type_name(hint)}" if hint is not None else None
    inner = _unwrap_optional(hint)
    common: dict[str, Any] = {"required": required, "help": help_text}
    if not required:  # passing default=None would satisfy `required` in recent click
        common.update(default=default, show_default=True)
    if inner is bool:
        return click.Option([f"{flag}/--no-{flag[2:]}", name], **common)
    if typing.get_origin(inner) is list and typing.get_args(inner):
        item = typing.get_args(inner)[0]
        item_type = _SCALARS.get(item) or JsonValue(item)
        if default is not None:
            common["default"] = tuple(default)
        elif not required:
            common["default"] = ()
        return click.Option([flag, name], type=item_type, multiple=True, **common)
    if inner is bytes:
        return click.Option([flag, name], type=BytesValue(), **common)
    param_type = _SCALARS.get(inner)
    if param_type is None:
        param_type = click.STRING if hint is None else JsonValue(hint)
    return click.Option([flag, name], type=param_type, **common)


def options_for(target: Target) -> list[click.Option]:
    options = []
    for name, param in target.signature.parameters.items():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue  # *args / **kwargs cannot be given on the command line
        options.append(option_for(name, param, target.hints.get(name)))
    return options


def to_arguments(target: Target, values: dict[str, Any]) -> dict[str, Any]:
    """Click's values -> call arguments (repeatable options come back as lists)."""
    arguments = {}
    for name, value in values.items():
        hint = _unwrap_optional(target.hints.get(name))
        if isinstance(value, tuple) and typing.get_origin(hint) is list:
            default = target.signature.parameters[name].default
            value = None if not value and default is None else list(value)
        arguments[name] = value
    return arguments
