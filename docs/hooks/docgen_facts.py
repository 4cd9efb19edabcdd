"""Reference tables read from the code: configuration keys, environment variables, exit codes,
the manifest's constants and limits, the records schema and statuses.

The values come from the modules that use them. The descriptions are written here, keyed by
name, and each table checks that the two sets match: a key, variable or exit code added to the
code without a description here (or one described here that the code dropped) stops the build,
so the reference cannot silently fall behind.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path


class DocsOutOfDate(Exception):
    """The code has a name this reference does not describe, or the reverse."""


def _check_same(what: str, in_code: Iterable[str], described: Iterable[str]) -> None:
    missing = sorted(set(in_code) - set(described))
    stale = sorted(set(described) - set(in_code))
    if missing or stale:
        raise DocsOutOfDate(
            f"{what}: not described in docs/hooks/docgen_facts.py: {missing or 'none'}; "
            f"described but no longer in the code: {stale or 'none'}"
        )


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: Iterable[tuple[object, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ configuration
_PROJECT_KEYS: Mapping[str, tuple[str, str, str]] = {
    # key: (TOML type, equivalent elsewhere, meaning)
    "home": (
        "string (path)",
        "`--home`, `Engine(home=)`, `TASKPOINT_HOME`",
        "Records directory (holds `taskpoint.db` and attempt logs). Default `./.taskpoint`.",
    ),
    "storage": (
        "string (path or fsspec URL)",
        "`--storage`, `Engine(storage=)`, `TASKPOINT_STORAGE`",
        "Blob store for checkpoints, inputs and outputs, e.g. `s3://bucket/runs`. "
        "Default `<home>/blobs`.",
    ),
    "storage-options": (
        "table",
        "`--storage-option KEY=VALUE`, `Engine(storage_options=)`",
        "fsspec options for a remote `storage` URL (ignored for a local path), e.g. "
        '`client_kwargs = { endpoint_url = "http://127.0.0.1:9000" }`.',
    ),
    "storage-timeout": (
        "number (seconds > 0)",
        "`--storage-timeout`, `Engine(storage_timeout=)`, `TASKPOINT_STORAGE_TIMEOUT`, "
        "`@task(storage_timeout=)`",
        "Longest one request to a remote checkpoint store may take; past it the attempt "
        "fails with `CheckpointTimeoutError` and is retried as `lost`.",
    ),
    "local-copy": (
        "string (directory) or boolean",
        "`Engine(local_copy=)`, `TASKPOINT_LOCAL_COPY`",
        "Where attempts keep a local copy of the latest version they committed to a remote "
        "store, so a retry on the same machine restores at local disk speed (the store stays "
        "the truth; the copy is verified against its manifest). `false`: no copy. Unset: each "
        "machine's cache directory.",
    ),
}


def config_keys() -> str:
    from taskpoint.engine.project import KEYS

    _check_same("project settings (engine/project.py KEYS)", KEYS, _PROJECT_KEYS)
    rows = [(f"`{key}`", *_PROJECT_KEYS[key]) for key in KEYS]
    return _table(("Key", "Type", "Also set by", "Meaning"), rows)


_ENVIRONMENT: Mapping[str, str] = {
    "TASKPOINT_HOME": "Records directory, when neither `--home` nor `Engine(home=)` is given.",
    "TASKPOINT_STORAGE": "Blob store URL or path, when neither `--storage` nor "
    "`Engine(storage=)` is given.",
    "TASKPOINT_STORAGE_TIMEOUT": "Seconds one request to a remote checkpoint store may take, "
    "when neither `--storage-timeout` nor `Engine(storage_timeout=)` is given. An empty value "
    "is unset; a value that is not a number > 0 is an error.",
    "TASKPOINT_S3_ENDPOINT_URL": "Endpoint of an S3-compatible store (MinIO, Ceph, moto) for "
    "`s3://` storage, unless the storage options set `endpoint_url` themselves. Credentials "
    "come from the standard AWS variables, which s3fs reads.",
    "TASKPOINT_LOCAL_COPY": "Where attempts keep the local copy of remote checkpoint versions "
    "(a directory, or `off`), when neither `Engine(local_copy=)` nor the project's `local-copy` "
    "is set. Default: `$XDG_CACHE_HOME/taskpoint/versions`, else `~/.cache/taskpoint/versions`.",
    "TASKPOINT_LOCAL_COPY_LIMIT": "Byte limit of the local copy directory (`K`, `M`, `G`, `T` "
    "suffixes are powers of 1024; default 2 GiB); least recently used versions go first.",
    "TASKPOINT_WRITE_MODE": "How large local checkpoint writes go: `auto` (default: measured "
    "once per process and filesystem), `buffered` or `direct` (O_DIRECT). Another value is "
    "reported once and read as `auto`.",
}


def _environment_in_code() -> set[str]:
    """Every ``TASKPOINT_*`` name used as a whole string constant in the package's source."""
    import taskpoint

    names: set[str] = set()
    for path in Path(taskpoint.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"TASKPOINT_[A-Z0-9_]+", node.value)
            ):
                names.add(node.value)
    return names


def environment_variables() -> str:
    _check_same("environment variables read by src/taskpoint", _environment_in_code(), _ENVIRONMENT)
    rows = [(f"`{name}`", text) for name, text in sorted(_ENVIRONMENT.items())]
    return _table(("Variable", "Meaning"), rows)


# ------------------------------------------------------------------------------ exit codes
_EXIT_CODES: Mapping[str, str] = {
    "EXIT_OK": "The command succeeded; for `run` and `resume`, the execution succeeded.",
    "EXIT_FAILED": "The execution failed (a node ran out of retries or raised an error that "
    "is not retried), or an internal error (rerun with `--debug` for the traceback).",
    "EXIT_USAGE": "Usage error: a bad option or argument, an unknown execution id, a file "
    "that defines no such workflow, a configuration error. One line on stderr says what.",
    "EXIT_ABORTED": "Aborted: Ctrl-C (SIGINT) in the driver; the execution is recorded "
    "`aborted` and can be resumed.",
    "EXIT_PREEMPTED": "The execution was preempted (SIGTERM to the driver): attempts "
    "committed their checkpoints within the grace period; `taskpoint resume` continues it.",
}


def exit_codes() -> str:
    import taskpoint.cli as cli

    codes = {name: getattr(cli, name) for name in dir(cli) if name.startswith("EXIT_")}
    codes.pop("EXIT_OF_STATUS", None)
    _check_same("exit codes (taskpoint/cli/__init__.py EXIT_*)", codes, _EXIT_CODES)
    by_value = {code: status for status, code in cli.EXIT_OF_STATUS.items()}
    rows = []
    for name, code in sorted(codes.items(), key=lambda item: item[1]):
        status = by_value.get(code)
        rows.append((f"`{code}`", f"`{status}`" if status else "", _EXIT_CODES[name]))
    return _table(("Code", "Execution status", "Meaning"), rows)


# ------------------------------------------------------------------------------ storage format
_MANIFEST_CONSTANTS: Mapping[str, tuple[str, str]] = {
    # name: (module, meaning)
    "FORMAT": ("manifest", "`taskpoint_manifest` of a version with a payload prefix"),
    "INLINE_FORMAT": (
        "manifest",
        "`taskpoint_manifest` of an inline version (bytes in the manifest)",
    ),
    "MAX_MANIFEST_BYTES": ("manifest", "largest manifest a reader accepts, in bytes"),
    "MAX_METADATA_DEPTH": (
        "manifest",
        "deepest nesting of `metadata` (the object itself is level 1)",
    ),
    "MAX_ENTRIES": ("manifest", "most `files` + `dirs` + `links` entries"),
    "MAX_CONTAINERS": ("manifest", "most JSON objects and arrays in the whole manifest"),
    "MAX_PATH_BYTES": ("manifest", "longest relative path, UTF-8 bytes"),
    "MAX_NAME_BYTES": ("manifest", "longest path component, UTF-8 bytes"),
    "MAX_FILE_SIZE": ("manifest", "largest `size` of a file entry"),
    "INLINE_MAX": ("payload", "largest `write()` stored inline, in bytes"),
    "BYTES_NAME": ("payload", "file name of a bytes or stream version's single file"),
    "MANIFEST_SUFFIX": ("storage", "suffix of a manifest's name after the version id"),
    "WRITER_SUFFIX": ("storage", "object stores: suffix of an id's reservation marker"),
    "RETIRED_MARK": (
        "storage",
        "object stores: infix of a retirement marker, followed by Unix milliseconds",
    ),
    "DEFAULT_RETIRE_GRACE": (
        "core",
        "object stores: seconds a retired version's payload is kept for readers that listed it",
    ),
}


def manifest_constants() -> str:
    import importlib

    rows = []
    for name, (module, meaning) in _MANIFEST_CONSTANTS.items():
        value = getattr(importlib.import_module(f"taskpoint.checkpoint.{module}"), name)
        shown = f"`{value!r}`" if isinstance(value, str) else f"`{value:,}`".replace(",", " ")
        if isinstance(value, int) and value >= 1024 and value & (value - 1) == 0:
            shown += f" (2^{value.bit_length() - 1})"
        rows.append((f"`{name}`", shown, meaning))
    return _table(("Constant", "Value", "Meaning"), rows)


# ------------------------------------------------------------------------------ records
_COLUMN = re.compile(
    r"^\s*(?P<name>\w+)\s+(?P<type>TEXT|REAL|INTEGER|BLOB)(?P<rest>[^,-]*),?\s*(?:--\s*(?P<note>.*))?$"
)
_PRIMARY = re.compile(r"PRIMARY KEY\s*\(([^)]*)\)")


def _columns(create: str) -> tuple[str, list[tuple[str, str, str, str]], str | None]:
    table = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", create)
    if table is None:
        raise DocsOutOfDate(f"not a CREATE TABLE statement: {create[:60]!r}")
    columns = []
    for line in create.splitlines()[1:]:
        match = _COLUMN.match(line)
        if match:
            rest = " ".join(match.group("rest").split())
            columns.append(
                (
                    match.group("name"),
                    match.group("type"),
                    rest,
                    (match.group("note") or "").strip(),
                )
            )
    primary = _PRIMARY.search(create)
    return table.group(1), columns, primary.group(1) if primary else None


def records_schema() -> str:
    from taskpoint.records import schema

    parts = [f"Schema version **{schema.SCHEMA_VERSION}** (`PRAGMA user_version`).", ""]
    for create in (schema.CREATE_EXECUTIONS, schema.CREATE_NODES, schema.CREATE_ATTEMPTS):
        name, columns, primary = _columns(create)
        parts += [f"### `{name}`", ""]
        if primary:
            parts += [f"Primary key: `({primary})`.", ""]
        rows = [
            (f"`{col}`", kind, rest, schema.ADDED_IN.get(col, 1), note)
            for col, kind, rest, note in columns
        ]
        parts.append(_table(("Column", "Type", "Constraint", "Since schema", "Notes"), rows))
    return "\n".join(parts)


def records_statuses() -> str:
    from taskpoint.records import status

    enums: list[type[StrEnum]] = [status.ExecutionStatus, status.NodeStatus, status.AttemptStatus]
    rows = []
    for enum in enums:
        doc = " ".join((enum.__doc__ or "").split())
        rows.append((f"`{enum.__name__}`", ", ".join(f"`{m.value}`" for m in enum), doc))
    return _table(("Status of", "Values", "Notes"), rows)
