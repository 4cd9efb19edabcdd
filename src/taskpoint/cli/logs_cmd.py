"""``taskpoint logs EXEC_ID [NODE] [--attempt N] [--follow]``: what each attempt printed."""

from __future__ import annotations

import sys
import time

import click

from taskpoint.cli.app import cli, current_engine, home_option, records_for_reading
from taskpoint.engine import blobs
from taskpoint.engine.browse import find_node
from taskpoint.engine.execution import Execution, load_execution
from taskpoint.engine.logs import log_url, read_log
from taskpoint.errors import TaskpointError
from taskpoint.records.status import ExecutionStatus


@cli.command("logs")
@home_option
@click.argument("execution_id")
@click.argument("node", required=False)
@click.option("--attempt", type=click.IntRange(min=1), metavar="N", help="Only this attempt.")
@click.option(
    "--follow", "-f", is_flag=True, help="Keep printing while the execution runs (Ctrl-C stops)."
)
def logs_command(execution_id: str, node: str | None, attempt: int | None, follow: bool) -> None:
    """Print what each attempt of an execution printed (stdout and stderr, interleaved as
    written), node by node, attempt by attempt."""
    engine = current_engine()
    records = records_for_reading(engine)
    execution = load_execution(records, execution_id)
    key = find_node(execution, node) if node else None
    options = engine.storage_options_for(execution.storage)
    offsets: dict[str, int] = {}
    shown: set[str] = set()

    def pass_over(execution: Execution) -> None:
        for n in execution.nodes:
            if key is not None and n.key != key:
                continue
            for a in n.attempts:
                if attempt is not None and a.n != attempt:
                    continue
                url = log_url(blobs.node_url(execution.storage, execution.id, n.key), a.n)
                while True:  # in bounded pieces: a log may be large
                    try:
                        data = read_log(url, options, offsets.get(url, 0))
                    except OSError as exc:  # a link or a FIFO where the log should be
                        if url not in shown:
                            shown.add(url)
                            click.echo(f"taskpoint: cannot read the log of {n.key} attempt "
                                       f"{a.n}: {exc}", err=True)  # fmt: skip
                        break
                    if url not in shown and (data or not follow):
                        shown.add(url)
                        click.secho(f"==> {n.key} attempt {a.n} ({a.status}) <==", bold=True)
                    if not data:
                        break
                    offsets[url] = offsets.get(url, 0) + len(data)
                    sys.stdout.buffer.write(data)
                    sys.stdout.flush()

    pass_over(execution)
    if attempt is not None and not any(
        a.n == attempt for n in execution.nodes for a in n.attempts if key in (None, n.key)
    ):
        raise TaskpointError(f"execution {execution.id} has no attempt {attempt} there")
    delay = 0.1
    while follow:
        rec = records.get_execution(execution.id)
        running = rec.status == ExecutionStatus.RUNNING and rec.driver_alive
        time.sleep(delay)  # another process writes the log: nothing here to wait on
        delay = min(delay * 1.5, 1.0)
        pass_over(load_execution(records, rec.id))
        if not running:
            break
