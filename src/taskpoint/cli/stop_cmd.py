"""``taskpoint stop EXEC_ID [--now]``: ask a running execution's driver to stop, from any
terminal on its machine.

Gracefully (the default) it is a preemption: the driver gets SIGTERM, each running attempt
commits its next checkpoint and stops, and the execution ends ``preempted``, resumable with
``taskpoint resume``. ``--now`` is Ctrl-C (SIGINT): attempts stop at once and the execution
ends ``aborted``, still resumable from the checkpoints committed before. The driver is found
from the records (pid, host and the process's start time, so a reused pid is never signalled).
"""

from __future__ import annotations

import os
import signal
import time

import click

from taskpoint.cli import EXIT_FAILED
from taskpoint.cli.app import CliError, cli, current_engine, home_option, records_for_reading
from taskpoint.records.liveness import hostname
from taskpoint.records.status import ExecutionStatus


@cli.command("stop")
@home_option
@click.argument("execution_id")
@click.option(
    "--now",
    is_flag=True,
    help="Abort at once, as Ctrl-C would, instead of letting attempts commit first.",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until the execution has stopped and say how it ended.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for it to stop.",
)
def stop_command(execution_id: str, now: bool, wait: bool, timeout: float) -> None:
    """Stop a running execution: gracefully (a preemption: attempts commit, then stop) or,
    with --now, at once. Either way `taskpoint resume` continues it later."""
    records = records_for_reading(current_engine())
    rec = records.get_execution(execution_id)
    if rec.status != ExecutionStatus.RUNNING:
        raise CliError(f"execution {rec.id} is not running (it is {rec.status})", EXIT_FAILED)
    if rec.driver_host != hostname():
        raise CliError(
            f"execution {rec.id} runs on {rec.driver_host}, not on this machine: run "
            f"`taskpoint stop {rec.id}` there (its driver is a process on that host)",
            EXIT_FAILED,
        )
    if not rec.driver_alive or rec.driver_pid is None:
        raise CliError(
            f"execution {rec.id} is interrupted: its driver is gone already; resume it "
            f"(taskpoint resume {rec.id}) or delete it",
            EXIT_FAILED,
        )
    how = signal.SIGINT if now else signal.SIGTERM
    try:
        os.kill(rec.driver_pid, how)
    except ProcessLookupError:
        raise CliError(f"execution {rec.id}: its driver exited meanwhile", EXIT_FAILED) from None
    except PermissionError:
        raise CliError(
            f"execution {rec.id}: not allowed to signal its driver (pid {rec.driver_pid}); "
            "run this as the user who started it",
            EXIT_FAILED,
        ) from None
    what = "abort at once" if now else "commit their checkpoints and stop"
    click.echo(f"asked execution {rec.id} to stop (its running attempts {what})", err=True)
    if not wait:
        return
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        rec = records.get_execution(rec.id)
        if rec.status != ExecutionStatus.RUNNING or not rec.driver_alive:
            break
        if time.monotonic() >= deadline:
            raise CliError(
                f"execution {rec.id} still runs after {timeout:g} s; `taskpoint stop --now "
                f"{rec.id}` aborts it",
                EXIT_FAILED,
            )
        time.sleep(delay)  # polling another process's records: there is nothing to wait on
        delay = min(delay * 2, 0.5)
    status = rec.effective_status
    if status == ExecutionStatus.SUCCEEDED:
        click.echo(f"execution {rec.id} succeeded before it stopped")
    else:
        click.echo(f"execution {rec.id} {status}; resume it with: taskpoint resume {rec.id}")
