"""``taskpoint list``, ``show EXEC_ID`` and ``checkpoints EXEC_ID [NODE] [--restore DIR]``."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from taskpoint.cli.app import CliError, cli, current_engine, home_option, records_for_reading
from taskpoint.cli.render import (
    BUDGET_LABELS,
    budgets_text,
    execution_dict,
    exhausted_text,
    failure_frame,
    list_row,
    local_time,
    seconds_text,
    size,
    styled,
    times_text,
    version_dict,
)
from taskpoint.engine.execution import Execution, load_execution, record_times
from taskpoint.errors import ExecutionNotFound
from taskpoint.records.preview import preview_text
from taskpoint.records.status import ExecutionStatus, NodeStatus

STATUSES = tuple(s.value for s in ExecutionStatus)


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


def _statuses(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> set[str]:
    """``--status failed --status preempted`` or ``--status failed,preempted``."""
    chosen = {v.strip().lower() for value in values for v in value.split(",") if v.strip()}
    unknown = sorted(chosen - set(STATUSES))
    if unknown:
        raise click.BadParameter(
            f"unknown status {', '.join(map(repr, unknown))}; one of {', '.join(STATUSES)}",
            ctx,
            param,
        )
    return chosen


@cli.command("list")
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    callback=_statuses,
    metavar="STATUS[,STATUS]",
    help=f"Only executions with this status (repeatable): {', '.join(STATUSES)}.",
)
def list_command(as_json: bool, limit: int, statuses: set[str]) -> None:
    """List executions, newest first.

    STARTED is when an execution's first driver run started; DURATION is its wall time up to
    its end (now while it runs, its driver's last sign of life when the driver died) and, when
    it was resumed, how long its driver runs ran in all."""
    try:
        records = records_for_reading()
    except ExecutionNotFound:
        records = None
    execs = records.list_executions(limit, statuses) if records else []
    kept = [(e, e.effective_status) for e in execs]
    interrupted = [e.id for e, s in kept if s == ExecutionStatus.INTERRUPTED]
    activity = records.latest_activity(interrupted) if records and interrupted else {}
    now = time.time()
    if as_json:
        rows = [list_row(e, s, now, activity.get(e.id)) for e, s in kept]
        click.echo(json.dumps(rows, indent=2))
        return
    if not kept:
        if statuses and records and records.list_executions(1):  # others exist
            click.echo(f"no {' or '.join(sorted(statuses))} executions")
        else:
            click.echo("no executions yet (start one with: taskpoint run FILE.py NAME)")
        return
    table = _table("ID", "NAME", "STATUS", "STARTED", "DURATION", "INPUTS")
    for e, status in kept:
        wall, running, runs, _ = record_times(e, status, now, activity.get(e.id))
        table.add_row(
            e.id,
            e.name,
            styled(status),
            local_time(e.created),
            times_text(wall, running, runs),
            _escape(e.inputs or ""),  # a bounded preview (records/preview.py), shown as text
        )
    _console().print(table)


@cli.command("show")
@home_option
@click.argument("execution_id")
@click.option("--json", "as_json", is_flag=True, help="Print the execution as one JSON object.")
@click.option(
    "--traceback",
    "tracebacks",
    is_flag=True,
    help="Also print the stored traceback of each attempt that failed.",
)
def show_command(execution_id: str, as_json: bool, tracebacks: bool) -> None:
    """Show an execution: its nodes, every attempt, the checkpoints they started from and ended
    with, the retry budgets each node spent, and its goodput ledger (per attempt: the version
    it loaded, start, restore, time to first step, save stalls, work lost; per node its ETTR;
    a warning for each attempt that restarted from scratch; see `taskpoint goodput --help`).

    The result and outputs shown are the previews stored when they were produced: nothing is
    unpickled (a planted pickle in the storage cannot run code here). With --json every
    attempt carries its traceback."""
    engine = current_engine()
    execution = load_execution(records_for_reading(engine), execution_id)
    if as_json:
        from taskpoint.engine.browse import all_checkpoints

        checkpoints = all_checkpoints(engine, execution)
        click.echo(json.dumps(execution_dict(execution, checkpoints), indent=2))
        return
    _print_execution(execution)
    if tracebacks:
        _print_tracebacks(execution)


def _print_execution(e: Execution) -> None:
    console = _console()
    now = time.time()
    console.print(f"[bold]execution {e.id}[/bold]  {e.name}  {styled(e.status)}")
    console.print(f"inputs: {e.inputs}", markup=False)
    wall, running, runs = e.times(now)
    line = f"started {local_time(e.first_started)}, took {times_text(wall, running, runs)}"
    if e.status == ExecutionStatus.INTERRUPTED:
        line += f" until its driver was last seen, {local_time(e.until(now))}"
    elif e.status == ExecutionStatus.RUNNING:
        line += " so far"
    console.print(line, markup=False)
    if e.status == ExecutionStatus.SUCCEEDED:
        console.print(f"result: {preview_text(e.result_preview)}", markup=False)
    elif e.error:
        where = f" in node {e.failed_node}" if e.failed_node else ""
        failed = next((n for n in e.nodes if n.key == e.failed_node), None)
        ran_out = exhausted_text(failed.exhausted, failed.budgets) if failed else ""
        ran_out = f" ({ran_out})" if ran_out else ""
        console.print(f"error{where}: {e.error}{ran_out}", markup=False)
        frame = failure_frame(e)
        if frame:
            console.print(f"raised at {frame}", markup=False)
    columns = ("NODE", "ATTEMPT", "STATUS", "FROM CHECKPOINT", "TO CHECKPOINT", "TOOK")
    table = _table(*columns, "RETRIES SPENT", "ERROR", "OUTPUT")
    fresh = []
    for node in e.nodes:
        output = preview_text(node.output_preview) if node.status == NodeStatus.SUCCEEDED else ""
        _, node_wall, node_running, node_runs = node.times(now)
        first = node.attempts[0].n if node.attempts else 1
        if node.budget_from and node.budget_from > first:
            fresh.append(f"{node.key} from attempt {node.budget_from}")
        table.add_row(
            f"[bold]{_escape(node.key)}[/bold]",
            "",
            styled(node.status),
            "",
            "",
            times_text(node_wall, node_running, node_runs),
            budgets_text(node.budgets),
            "",
            _escape(output),
        )
        for a in node.attempts:
            table.add_row(
                "",
                str(a.n),
                styled(a.status),
                a.checkpoint_at_start or "-",
                a.checkpoint_at_end or "-",
                seconds_text(a.duration(now)),
                _attempt_budget(node, a),
                _escape(a.error or ""),
                "",
            )
    console.print(table)
    if fresh:
        console.print(
            "fresh retry budgets (the node had failed, then was resumed): " + "; ".join(fresh),
            markup=False,
        )
    from taskpoint.cli.goodput_cmd import print_ledger, totals_line
    from taskpoint.engine.goodput import execution_totals

    print_ledger(console, e, now)
    console.print(f"goodput: {totals_line(execution_totals(e, now))}", markup=False, soft_wrap=True)


def _attempt_budget(node: Any, a: Any) -> str:
    """What the attempt's retry spent, or, for a failed node's last one, what ran out."""
    if a.budget:
        return f"retried: {BUDGET_LABELS.get(a.budget, a.budget)}"
    if node.exhausted and node.attempts and a is node.attempts[-1]:
        return f"{BUDGET_LABELS.get(node.exhausted, node.exhausted)} ran out"
    return ""


def _print_tracebacks(e: Execution) -> None:
    printed = False
    for node in e.nodes:
        for a in node.attempts:
            if a.traceback and a.status != "succeeded":
                click.echo(f"\n--- traceback of {node.key} attempt {a.n} ({a.status}) ---")
                click.echo(a.traceback.rstrip())
                printed = True
    if not printed and e.traceback:
        click.echo(f"\n--- traceback of execution {e.id} ({e.status}) ---")
        click.echo(e.traceback.rstrip())
        printed = True
    if not printed:
        click.echo("\nno traceback is stored: no attempt of this execution failed with one")


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
