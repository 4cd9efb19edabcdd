"""``taskpoint delete EXEC...`` and ``taskpoint gc``: remove executions with everything they
stored (records, inputs, outputs, logs, checkpoints), and say what was freed."""

from __future__ import annotations

import click

from taskpoint.cli.app import CliError, cli, current_engine, home_option, records_for_reading
from taskpoint.cli.render import size
from taskpoint.engine.cleanup import (
    Freed,
    StillRunning,
    delete_execution,
    measure,
    parse_age,
    select_for_gc,
)
from taskpoint.errors import ExecutionNotFound
from taskpoint.records.status import ExecutionStatus

FINISHED = sorted(
    str(s)
    for s in (
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.FAILED,
        ExecutionStatus.PREEMPTED,
        ExecutionStatus.ABORTED,
        ExecutionStatus.INTERRUPTED,
    )
)


@cli.command("delete")
@home_option
@click.argument("execution_ids", nargs=-1, required=True, metavar="EXEC_ID...")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
def delete_command(execution_ids: tuple[str, ...], dry_run: bool) -> None:
    """Delete executions: their records, inputs, outputs, logs and checkpoints.

    A running execution (its driver alive) is refused: stop it first."""
    engine = current_engine()
    records = records_for_reading(engine)
    recs = []
    for wanted in execution_ids:
        rec = records.get_execution(wanted)  # an unknown id fails before anything is deleted
        if rec.status == ExecutionStatus.RUNNING and rec.driver_alive:
            raise CliError(
                f"execution {rec.id} is running; stop it first (taskpoint stop {rec.id})"
            )
        recs.append(rec)
    _remove(engine, records, recs, dry_run)


@cli.command("gc")
@home_option
@click.option(
    "--older-than",
    metavar="AGE",
    help="Only executions that ended (or, if they never did, started) longer ago than AGE: "
    "30d, 12h, 90m, 2w.",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(FINISHED),
    help="Only executions with this status (repeatable).",
)
@click.option(
    "--keep-last",
    type=click.IntRange(min=1),
    metavar="N",
    help="Keep the N newest of the executions the other options select.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
def gc_command(
    older_than: str | None, statuses: tuple[str, ...], keep_last: int | None, dry_run: bool
) -> None:
    """Delete old executions with everything they stored; never a running one.

    Give at least one of --older-than, --status, --keep-last (a bare `gc` deletes nothing)."""
    if older_than is None and not statuses and keep_last is None:
        raise click.UsageError(
            "say which executions to collect: --older-than AGE, --status STATUS and/or "
            "--keep-last N (add --dry-run to see what they select)"
        )
    try:
        age = parse_age(older_than) if older_than is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    engine = current_engine()
    try:
        records = records_for_reading(engine)
    except ExecutionNotFound:
        click.echo("no executions recorded here; nothing to collect")
        return
    chosen = select_for_gc(
        records.list_executions(),
        older_than=age,
        statuses=set(statuses) or None,
        keep_last=keep_last,
    )
    if not chosen:
        click.echo("no executions match; nothing to collect")
        return
    _remove(engine, records, chosen, dry_run)


def _remove(engine, records, recs, dry_run: bool) -> None:
    freed: list[Freed] = []
    verb = "would delete" if dry_run else "deleted"
    with click.progressbar(
        recs, label="deleting", file=None, hidden=dry_run or len(recs) < 3
    ) as bar:
        for rec in bar:
            try:
                if dry_run:
                    files, nbytes = measure(engine, rec)
                    done = Freed(rec, files, nbytes)
                else:
                    done = delete_execution(engine, records, rec)
            except StillRunning as exc:
                click.echo(f"skipped {rec.id}: {exc}", err=True)
                continue
            except OSError as exc:
                raise CliError(
                    f"deleting execution {rec.id} failed: {exc}; what was deleted before stays "
                    "deleted, and running the command again finishes the job",
                    1,
                ) from exc
            freed.append(done)
    for f in freed:
        click.echo(
            f"{verb} {f.execution.id}  {f.execution.name}  {f.execution.effective_status}  "
            f"{f.files} files, {size(f.size)}"
        )
    total = sum(f.size for f in freed)
    files = sum(f.files for f in freed)
    noun = "execution" if len(freed) == 1 else "executions"
    click.echo(
        f"{'would free' if dry_run else 'freed'} {size(total)} ({files} files) in {len(freed)} "
        f"{noun}: records, inputs, outputs, logs and checkpoints"
    )
