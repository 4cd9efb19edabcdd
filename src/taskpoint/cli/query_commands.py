"""``taskpoint list``, ``show EXEC_ID`` and ``checkpoints EXEC_ID [NODE] [--restore DIR]``."""

from __future__ import annotations

import json

import click

from taskpoint.cli.app import CliError, cli, current_engine, home_option, records_for_reading
from taskpoint.cli.render import (
    duration,
    execution_dict,
    local_time,
    size,
    styled,
    version_dict,
)
from taskpoint.engine.execution import Execution, load_execution
from taskpoint.errors import ExecutionNotFound
from taskpoint.records.preview import preview_text
from taskpoint.records.status import ExecutionStatus, NodeStatus


def _console():
    import sys

    from rich.console import Console

    # Piped output is not wrapped at 80 columns: ids and node keys stay on one line.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _table(*columns: str):
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        if column in ("ERROR", "INPUTS", "OUTPUT"):
            table.add_column(column, overflow="ellipsis", no_wrap=True, max_width=70)
        else:
            table.add_column(column, no_wrap=True)
    return table


@cli.command("list")
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
def list_command(as_json: bool, limit: int) -> None:
    """List executions, newest first."""
    try:
        records = records_for_reading()
    except ExecutionNotFound:
        records = None
    execs = records.list_executions(limit) if records else []
    if as_json:
        rows = [
            {
                "id": e.id,
                "name": e.name,
                "status": e.effective_status,
                "created": local_time(e.created),
                "ended": local_time(e.ended) if e.ended else None,
                "failed_node": e.failed_node,
            }
            for e in execs
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not execs:
        click.echo("no executions yet (start one with: taskpoint run FILE.py NAME)")
        return
    table = _table("ID", "NAME", "STATUS", "CREATED", "DURATION", "INPUTS")
    for e in execs:
        table.add_row(
            e.id,
            e.name,
            styled(e.effective_status),
            local_time(e.created),
            duration(e.started, e.ended),
            _escape(e.inputs or ""),  # a bounded preview (records/preview.py), shown as text
        )
    _console().print(table)


@cli.command("show")
@home_option
@click.argument("execution_id")
@click.option("--json", "as_json", is_flag=True, help="Print the execution as one JSON object.")
def show_command(execution_id: str, as_json: bool) -> None:
    """Show an execution: its nodes, every attempt and the checkpoints they started from.

    The result and outputs shown are the previews stored when they were produced: nothing is
    unpickled (a planted pickle in the storage cannot run code here)."""
    engine = current_engine()
    execution = load_execution(records_for_reading(engine), execution_id)
    if as_json:
        from taskpoint.engine.browse import all_checkpoints

        checkpoints = all_checkpoints(engine, execution)
        click.echo(json.dumps(execution_dict(execution, checkpoints), indent=2))
        return
    _print_execution(execution)


def _print_execution(e: Execution) -> None:
    console = _console()
    console.print(f"[bold]execution {e.id}[/bold]  {e.name}  {styled(e.status)}")
    console.print(f"inputs: {e.inputs}", markup=False)
    console.print(f"created {local_time(e.created)}, ran {duration(e.started, e.ended)}")
    if e.status == ExecutionStatus.SUCCEEDED:
        console.print(f"result: {preview_text(e.result_preview)}", markup=False)
    elif e.error:
        where = f" in node {e.failed_node}" if e.failed_node else ""
        console.print(f"error{where}: {e.error}", markup=False)
    columns = ("NODE", "ATTEMPT", "STATUS", "FROM CHECKPOINT", "TO CHECKPOINT", "TOOK", "ERROR")
    table = _table(*columns, "OUTPUT")
    for node in e.nodes:
        output = preview_text(node.output_preview) if node.status == NodeStatus.SUCCEEDED else ""
        table.add_row(
            f"[bold]{_escape(node.key)}[/bold]",
            "",
            styled(node.status),
            "",
            "",
            duration(node.started, node.ended),
            "",
            _escape(output),
        )
        for a in node.attempts:
            table.add_row(
                "",
                f"{a.n}/{node.max_attempts or '?'}",
                styled(a.status),
                a.checkpoint_at_start or "-",
                a.checkpoint_at_end or "-",
                duration(a.started, a.ended),
                _escape(a.error or ""),
                "",
            )
    console.print(table)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@cli.command("checkpoints")
@home_option
@click.argument("execution_id")
@click.argument("node", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--restore",
    "restore_dir",
    type=click.Path(file_okay=False),
    help="Materialise the node's latest (or --version) checkpoint into this directory.",
)
@click.option("--version", "version_id", metavar="ID", help="With --restore: which version.")
def checkpoints_command(
    execution_id: str,
    node: str | None,
    as_json: bool,
    restore_dir: str | None,
    version_id: str | None,
) -> None:
    """List the committed checkpoint versions of an execution's nodes, or restore one."""
    from taskpoint.engine.browse import find_node, node_checkpoints, open_node_checkpoint

    engine = current_engine()
    execution = load_execution(records_for_reading(engine), execution_id)
    keys = [find_node(execution, node)] if node else [n.key for n in execution.nodes]
    if version_id and not restore_dir:
        raise click.UsageError("--version needs --restore DIR")
    if restore_dir:
        if not node:
            raise click.UsageError("--restore needs a NODE (see `taskpoint show EXEC_ID`)")
        cp = open_node_checkpoint(engine, execution, keys[0])
        try:
            if version_id and version_id not in [v.id for v in cp.versions()]:
                raise CliError(f"node {keys[0]} has no committed checkpoint version {version_id!r}")
            restored = cp.restore(restore_dir, version=version_id)
        finally:
            cp.close()
        if restored is None:
            raise CliError(f"node {keys[0]} has no committed checkpoint to restore", 1)
        click.echo(f"restored {keys[0]} checkpoint {version_id or 'latest'} into {restored}")
        return
    versions = {key: node_checkpoints(engine, execution, key) for key in keys}
    if as_json:
        nodes = [
            {"key": k, "checkpoints": [version_dict(v) for v in vs]} for k, vs in versions.items()
        ]
        click.echo(json.dumps({"id": execution.id, "nodes": nodes}, indent=2))
        return
    table = _table("NODE", "VERSION", "ATTEMPT", "STEP", "KIND", "SIZE", "CREATED")
    for key, vs in versions.items():
        for v in vs:
            table.add_row(
                key,
                v.id,
                str(v.attempt),
                "-" if v.step is None else str(v.step),
                v.kind,
                size(v.size),
                local_time(v.created.timestamp()),
            )
        if not vs:
            table.add_row(key, "-", "", "", "", "", "")
    _console().print(table)
