"""``--backend inline|process|dask [--scheduler ADDRESS] [--workers N] [--storage URL]
[--storage-option key=value ...] [--storage-timeout SECONDS]`` for ``taskpoint run`` and
``taskpoint resume``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import click

from taskpoint.cli import EXIT_USAGE
from taskpoint.cli.app import CliError
from taskpoint.engine.config import Engine

if TYPE_CHECKING:
    from taskpoint.backends.dask import DaskBackend

BACKENDS = ("inline", "process", "dask")
# Option values that stay strings even when they look like JSON numbers.
_SECRETS = {"key", "secret", "token", "password", "aws_access_key_id", "aws_secret_access_key"}


def backend_options(storage: bool = True) -> list[click.Option]:
    options = [
        click.Option(
            ["--backend"],
            type=click.Choice(BACKENDS),
            help="Where attempts run (default: each task's isolation=). dask: on a Dask cluster.",
        ),
        click.Option(
            ["--scheduler"],
            metavar="ADDRESS",
            help="Dask scheduler to use, e.g. tcp://HOST:8786 (default: start a local cluster).",
        ),
        click.Option(
            ["--workers"],
            type=click.IntRange(min=1),
            help="Worker processes of the local Dask cluster [default: one per CPU].",
        ),
        click.Option(
            ["--storage-option", "storage_option"],
            multiple=True,
            metavar="KEY=VALUE",
            help="fsspec option for the storage (repeatable; client_kwargs.region_name=... "
            "nests). S3 also reads the AWS environment and TASKPOINT_S3_ENDPOINT_URL.",
        ),
        click.Option(
            ["--storage-timeout", "storage_timeout"],
            type=click.FloatRange(min=0, min_open=True, max=1e9),
            metavar="SECONDS",
            help="Longest one request to a remote checkpoint store may take; a stalled one "
            "fails the attempt, which is retried from its latest checkpoint.",
        ),
    ]
    if storage:
        options.insert(
            3,
            click.Option(
                ["--storage"],
                metavar="URL",
                help="Blob store for checkpoints and outputs, e.g. s3://bucket/prefix; "
                "with --backend dask every worker must reach it.",
            ),
        )
    return options


def with_backend_options(storage: bool = True) -> Callable[[Any], Any]:
    """Decorate a click command with the backend options."""

    def decorate(fn: Any) -> Any:
        # As click's own decorators do (it reverses the list when it builds the command).
        if not hasattr(fn, "__click_params__"):
            fn.__click_params__ = []
        fn.__click_params__.extend(reversed(backend_options(storage)))
        return fn

    return decorate


@contextmanager
def configured(
    engine: Engine,
    backend: str | None,
    scheduler: str | None,
    workers: int | None,
    storage_option: tuple[str, ...] = (),
    storage: str | None = None,
    storage_timeout: float | None = None,
) -> Iterator[Engine]:
    """``engine`` with this command's options applied and its backend started (and closed
    afterwards); nothing process-wide changes."""
    if (scheduler or workers) and backend != "dask":
        raise CliError("--scheduler and --workers need --backend dask", EXIT_USAGE)
    if scheduler and workers:
        raise CliError(
            "--workers sizes the local Dask cluster; it cannot be used with --scheduler",
            EXIT_USAGE,
        )
    options = parse_storage_options(storage_option) if storage_option else None
    engine = engine.updated(
        storage=storage or None, storage_options=options, storage_timeout=storage_timeout
    )
    chosen = None
    try:
        if backend is not None:
            chosen = _start(backend, scheduler, workers)
            engine = engine.updated(backend=chosen)
        yield engine
    finally:
        if chosen is not None:
            chosen.close()


def _start(name: str, scheduler: str | None, workers: int | None) -> Any:
    from taskpoint.backends.registry import create

    if name != "dask":
        return create(name)
    backend = cast("DaskBackend", create("dask", scheduler=scheduler, workers=workers))
    try:
        return backend.start()
    except OSError as exc:
        where = scheduler or "a local cluster"
        raise CliError(f"cannot connect to the Dask scheduler at {where}: {exc}") from exc


def parse_storage_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("key=x", "client_kwargs.region_name=eu-west-1", "anon=false")`` -> nested dict;
    values are JSON when they parse as JSON (numbers, true/false), else strings."""
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--storage-option wants KEY=VALUE, got {pair!r}", EXIT_USAGE)
        *parents, leaf = name.split(".")
        target = options
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise CliError(f"--storage-option {name}: {part} is not a group", EXIT_USAGE)
        target[leaf] = raw if leaf in _SECRETS else _value(raw)
    return options


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw
