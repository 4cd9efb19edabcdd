"""``taskpoint goodput [EXEC_ID...]``, and the goodput part of ``taskpoint show``: what failures
cost (work lost, restores, save stalls, restarts) and the effective training time ratio (ETTR).
The figures are defined once, in ``engine/goodput.py``."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from taskpoint.cli.app import cli, home_option, records_for_reading
from taskpoint.cli.render import seconds_text, styled
from taskpoint.engine.execution import Execution, load_execution
from taskpoint.engine.goodput import FAILURE_KINDS, Totals, node_ledger
from taskpoint.errors import ExecutionNotFound


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _table(*columns: str) -> Any:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, no_wrap=True)
    return table


def ettr_text(totals: Totals) -> str:
    ettr = totals.ettr
    return "-" if ettr is None else f"{ettr:.3f}"


def failures_text(failures: dict[str, int]) -> str:
    """``lost 2, preempted 1`` (``-`` when none)."""
    parts = [f"{kind} {failures[kind]}" for kind in FAILURE_KINDS if failures.get(kind)]
    return ", ".join(parts) or "-"


def totals_line(totals: Totals) -> str:
    return (
        f"ETTR {ettr_text(totals)} (productive {seconds_text(totals.productive_s)} of "
        f"{seconds_text(totals.time_s)}); work lost {seconds_text(totals.work_lost_s)}, "
        f"restore {seconds_text(totals.restore_s)}, save stalls {seconds_text(totals.stall_s)}, "
        f"set-up {seconds_text(totals.setup_s)}, between attempts {seconds_text(totals.wait_s)}"
    )


def _figure(value: float | None) -> str:
    return "?" if value is None else seconds_text(value)


def print_ledger(console: Any, execution: Execution, now: float) -> None:
    """The goodput section of ``taskpoint show``: per attempt what it loaded and cost, per node
    its ETTR, and a warning line per attempt that restarted from scratch."""
    from rich.markup import escape

    table = _table(
        "NODE", "ATTEMPT", "LOADED", "START", "RESTORE", "FIRST STEP", "SAVE STALL",
        "WORK LOST", "PRODUCTIVE", "ETTR",
    )  # fmt: skip
    warnings = []
    for node in execution.nodes:
        if not node.attempts:
            continue
        ledgers, totals = node_ledger(node, now)
        table.add_row(
            f"[bold]{escape(node.key)}[/bold]", "", "", "", "", "", "", "", "",
            ettr_text(totals),
        )  # fmt: skip
        for led in ledgers:
            loaded = led.loaded_version or ("-" if led.measured else "?")
            if led.loaded_step is not None:
                loaded += f" (step {led.loaded_step})"
            table.add_row(
                "",
                str(led.n),
                loaded,
                _figure(led.start_s),
                _figure(led.restore_s),
                "-" if led.measured and led.first_step_s is None else _figure(led.first_step_s),
                _figure(led.stall_s),
                "-" if led.work_lost_s is None else seconds_text(led.work_lost_s),
                seconds_text(led.productive_s),
                "",
            )
            if led.resume_warning:
                why = led.resume_warning
                warnings.append(f"{node.key} attempt {led.n} restarted from scratch: {why}")
    console.print("\n[bold]goodput[/bold] (? = not measured: the attempt could not report)")
    console.print(table)
    for line in warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(line)}", soft_wrap=True)


def _selected(execution_ids: tuple[str, ...], limit: int) -> list[Execution]:
    try:
        records = records_for_reading()
    except ExecutionNotFound:
        if execution_ids:
            raise
        return []
    if execution_ids:
        return [load_execution(records, eid) for eid in execution_ids]
    return [load_execution(records, rec) for rec in records.list_executions(limit)]


@cli.command("goodput")
@home_option
@click.argument("execution_ids", nargs=-1, metavar="[EXEC_ID]...")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Without EXEC_ID: how many of the most recent executions to sum up.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def goodput_command(execution_ids: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Sum up what failures cost across executions (the given ones, else the most recent).

    Per execution and per task: attempts, how the ones that did not succeed ended (failed,
    recoverable, preempted, lost, aborted, interrupted), the work they lost (time since their
    last committed checkpoint), time spent restoring and stalled in saves, attempts that
    restarted from scratch although a checkpoint was available, and the effective training
    time ratio ETTR: productive time over the nodes' time (attempts and the waits between
    them; gaps between driver runs left out). `taskpoint show EXEC_ID` gives the same figures
    per attempt; docs/reference/goodput.md defines each one.

    \b
    Examples:
      taskpoint goodput                  # the 20 most recent executions
      taskpoint goodput 3f2a9c 81bd04    # these two
      taskpoint goodput --limit 100 --json
    """
    now = time.time()
    executions = _selected(execution_ids, limit)
    rows: list[tuple[Execution, Totals]] = []
    tasks: dict[str, dict[str, Any]] = {}  # task name -> its executions, nodes and totals
    for e in executions:
        per_execution = Totals()
        for node in e.nodes:
            totals = node_ledger(node, now)[1]
            per_execution.add(totals)
            entry = tasks.setdefault(node.task, {"executions": set(), "nodes": 0, "t": Totals()})
            entry["executions"].add(e.id)
            entry["nodes"] += 1
            entry["t"].add(totals)
        rows.append((e, per_execution))
    overall = Totals()
    for _, totals in rows:
        overall.add(totals)
    if as_json:
        doc = {
            "executions": [
                {"id": e.id, "name": e.name, "status": e.status, **t.as_dict()} for e, t in rows
            ],
            "tasks": [
                {
                    "task": name,
                    "executions": len(entry["executions"]),
                    "nodes": entry["nodes"],
                    **entry["t"].as_dict(),
                }
                for name, entry in sorted(tasks.items())
            ],
            "total": overall.as_dict(),
        }
        click.echo(json.dumps(doc, indent=2))
        return
    if not rows:
        click.echo("no executions yet (start one with: taskpoint run FILE.py NAME)")
        return
    console = _console()
    table = _table("EXECUTION", "NAME", "STATUS", "ATTEMPTS", "FAILURES", "WORK LOST", "ETTR")
    for e, t in rows:
        table.add_row(
            e.id, e.name, styled(e.status), str(t.attempts), failures_text(t.failures),
            seconds_text(t.work_lost_s), ettr_text(t),
        )  # fmt: skip
    console.print(table)
    console.print()
    table = _table(
        "TASK", "EXECUTIONS", "NODES", "ATTEMPTS", "FAILURES", "RESTARTED", "WORK LOST",
        "RESTORE", "SAVE STALL", "PRODUCTIVE", "TIME", "ETTR",
    )  # fmt: skip
    for name, entry in sorted(tasks.items()):
        t = entry["t"]
        table.add_row(
            name, str(len(entry["executions"])), str(entry["nodes"]), str(t.attempts),
            failures_text(t.failures), str(t.restarted), seconds_text(t.work_lost_s),
            seconds_text(t.restore_s), seconds_text(t.stall_s), seconds_text(t.productive_s),
            seconds_text(t.time_s), ettr_text(t),
        )  # fmt: skip
    console.print(table)
    console.print(f"all: {totals_line(overall)}", markup=False, soft_wrap=True)
