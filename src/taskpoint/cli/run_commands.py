"""``taskpoint run FILE NAME [--param value ...]`` and ``taskpoint resume EXEC_ID``."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from taskpoint.cli import EXIT_FAILED, EXIT_OF_STATUS, EXIT_USAGE
from taskpoint.cli.app import CliError, cli, current_engine, home_option
from taskpoint.cli.backend_options import backend_options, configured, with_backend_options
from taskpoint.cli.params import command_help, options_for, to_arguments
from taskpoint.cli.render import execution_dict, exhausted_text, failure_frame, times_text
from taskpoint.engine.config import Engine
from taskpoint.engine.events import Listener, QuietListener
from taskpoint.engine.execution import Execution
from taskpoint.records.status import ExecutionStatus

RUN_HELP = """Usage: taskpoint run FILE.py NAME [--PARAM VALUE ...] [--json]

  Run the workflow (or task) NAME defined in FILE.py as a new execution. Its parameters
  become options: `taskpoint run FILE.py NAME --help` lists them with types and defaults.

Options:
  --json                     Print one JSON object describing the execution instead of progress.
  --home DIR                 Records directory (as the global --home).
  --backend inline|process|dask
                             Where attempts run (default: each task's isolation=).
  --scheduler ADDRESS        Dask scheduler, e.g. tcp://HOST:8786 (default: a local cluster).
  --workers N                Worker processes of the local Dask cluster.
  --storage URL              Blob store for checkpoints and outputs, e.g. s3://bucket/prefix.
  --storage-option KEY=VALUE fsspec option for the storage (repeatable).
  --storage-timeout SECONDS  Longest one request to a remote checkpoint store may take.
"""

JSON_OPTION = click.Option(["--json"], is_flag=True, help="Print the execution as one JSON object.")


@cli.command(
    "run",
    add_help_option=False,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@home_option
@click.option("--json", "as_json", is_flag=True)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@with_backend_options(storage=True)
@click.pass_context
def run_command(ctx: click.Context, as_json: bool, argv: tuple[str, ...], **backend: Any) -> int:
    """Run a workflow or task from a Python file: FILE.py NAME [--param value ...]."""
    from taskpoint.engine.loader import find_target, load_file, targets_in

    args = list(argv)
    if not args or args[0] in ("-h", "--help"):
        click.echo(RUN_HELP)
        return 0
    file = args.pop(0)
    if file.startswith("-"):
        raise click.UsageError(f"expected FILE.py before options, got {file!r}", ctx)
    module = load_file(file)
    if not args or args[0] in ("-h", "--help"):
        names = ", ".join(f"{n} ({t.kind})" for n, t in sorted(targets_in(module).items()))
        click.echo(f"{file} defines: {names or 'no @workflow or @task'}")
        click.echo(f"usage: taskpoint run {file} NAME [--PARAM VALUE ...]")
        return 0 if args else EXIT_USAGE
    target = find_target(module, args.pop(0), file)
    command = click.Command(
        target.name,
        params=[*options_for(target), JSON_OPTION, *backend_options(storage=True)],
        help=command_help(target),
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    prog = f"{ctx.find_root().info_name or 'taskpoint'} run {file} {target.name}"
    with command.make_context(prog, args) as sub:
        values = dict(sub.params)
    for name in ("json", *(o.name for o in backend_options(storage=True))):
        values.pop(name, None)  # listed for --help; the run command itself parsed them
    arguments = to_arguments(target, values)
    try:
        target.bind((), arguments)
    except TypeError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    with configured(current_engine(), **backend) as engine:
        return execute(engine, lambda e: e.run(target, **arguments), as_json)


@cli.command("resume")
@home_option
@click.argument("execution_id", required=False)
@click.option(
    "--last",
    is_flag=True,
    help="Resume the newest execution that did not succeed (and is not running).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the execution as one JSON object.")
@click.option(
    "--from-scratch",
    is_flag=True,
    help="Start a node whose recorded checkpoints are missing from the storage from zero, on "
    "purpose (by default it fails with CheckpointMissingError). Checkpoints still there are "
    "used.",
)
@with_backend_options(storage=False)
def resume_command(
    execution_id: str | None, last: bool, as_json: bool, from_scratch: bool, **backend: Any
) -> int:
    """Continue an execution (EXECUTION_ID, or --last): succeeded nodes are not run again, the
    unfinished node resumes from its latest checkpoint. A succeeded execution just prints its
    result.

    Budgets: a node that was stopped (its driver was killed, preempted or interrupted) keeps
    the retries it spent; attempts cut short by the driver's death spend none. A node that
    failed gets fresh budgets (`taskpoint show` says from which attempt)."""
    from taskpoint.cli.app import records_for_reading

    if last == bool(execution_id):
        raise click.UsageError("give an EXECUTION_ID or --last, not both")
    with configured(current_engine(), **backend) as engine:
        records = records_for_reading(engine)
        rec = _last_unfinished(records) if last else records.get_execution(execution_id or "")
        if rec.status == ExecutionStatus.SUCCEEDED:
            if not as_json:
                click.echo(f"execution {rec.id} already succeeded; nothing to run", err=True)
            return report(engine, engine.resume(rec.id), as_json)
        return execute(engine, lambda e: e.resume(rec.id, from_scratch=from_scratch), as_json)


def _last_unfinished(records: Any) -> Any:
    """The newest execution that did not succeed and whose driver is not running."""
    for rec in records.list_executions():
        if rec.effective_status not in (ExecutionStatus.SUCCEEDED, ExecutionStatus.RUNNING):
            return rec
    raise CliError(
        f"no execution to resume in {records.path}: every recorded one succeeded or is still "
        "running (`taskpoint list` shows them)"
    )


def execute(engine: Engine, start: Callable[[Engine], Execution], as_json: bool) -> int:
    """Run ``start`` on ``engine`` with this command's progress display as its listener."""
    listener = progress_listener(as_json)
    try:
        with _stdout_to_stderr() if as_json else contextlib.nullcontext():
            execution = start(engine.updated(listener=listener))
    finally:
        close = getattr(listener, "close", None)
        if close is not None:
            close()
    return report(engine, execution, as_json)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """With ``--json`` stdout carries the one JSON document: what tasks print (inline, or in
    child processes that inherit descriptor 1) goes to stderr meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def progress_listener(as_json: bool) -> Listener:
    if as_json:
        return QuietListener()
    from taskpoint.cli.progress import LiveProgress, PlainProgress

    return LiveProgress() if sys.stderr.isatty() else PlainProgress()


def report(engine: Engine, execution: Execution, as_json: bool) -> int:
    code = EXIT_OF_STATUS.get(execution.status, EXIT_FAILED)
    if as_json:
        from taskpoint.engine.browse import all_checkpoints

        data = execution_dict(execution, all_checkpoints(engine, execution))
        click.echo(json.dumps(data, indent=2))
        return code
    attempts = sum(len(n.attempts) for n in execution.nodes)
    where = f" in node {execution.failed_node}" if execution.failed_node else ""
    summary = (
        f"execution {execution.id} {execution.status}{where} after "
        f"{times_text(*execution.times())} "
        f"({_plural(len(execution.nodes), 'node')}, {_plural(attempts, 'attempt')})"
    )
    if execution.status == ExecutionStatus.SUCCEEDED:
        click.echo(summary)
        click.echo(f"result: {_show(execution.result)}")
        return code
    failed = next((n for n in execution.nodes if n.key == execution.failed_node), None)
    ran_out = exhausted_text(failed.exhausted, failed.budgets) if failed else ""
    frame = failure_frame(execution) if execution.status == ExecutionStatus.FAILED else None
    details = "; ".join(x for x in (ran_out, f"raised at {frame}" if frame else "") if x)
    click.echo(f"{summary}: {execution.error}" + (f" ({details})" if details else ""))
    _debug_traceback(execution)
    click.echo(f"resume it with: taskpoint resume {execution.id}")
    return code


def _debug_traceback(execution: Execution) -> None:
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.find_root().params.get("debug") and execution.traceback:
        click.echo(execution.traceback.rstrip(), err=True)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 2000 else text[:1997] + "..."
