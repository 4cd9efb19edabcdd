"""The click group, global options, error handling and exit codes."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

import click

from taskpoint.cli import EXIT_ABORTED, EXIT_FAILED, EXIT_USAGE
from taskpoint.engine.config import Engine
from taskpoint.errors import ExecutionNotFound, TaskpointError


class CliError(Exception):
    """An error the CLI reports as one line on stderr, exiting with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    metavar="DIR",
    help="Records directory (taskpoint.db). Default: $TASKPOINT_HOME, else ./.taskpoint",
)
@click.option(
    "--storage",
    metavar="URL",
    help="Blob store for checkpoints and outputs (any fsspec URL). "
    "Default: $TASKPOINT_STORAGE, else <home>/blobs",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Time a preempted (SIGTERM) attempt gets to commit its checkpoint. [default: 30]",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="taskpoint", message="taskpoint %(version)s")
@click.pass_context
def cli(
    ctx: click.Context, home: str | None, storage: str | None, grace: float | None, debug: bool
) -> None:
    """taskpoint: long-running Python tasks that survive failure, with intra-task checkpoints."""
    # This command's engine: its subcommands refine a copy of it (never a global).
    ctx.obj = Engine().updated(home=home, storage=storage, grace=grace)
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")


def _set_home(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        root = ctx.find_root()
        engine = root.obj if isinstance(root.obj, Engine) else Engine()
        root.obj = engine.updated(home=value)


def home_option(fn: Any) -> Any:
    """``--home`` accepted after the subcommand too (``taskpoint list --home DIR``)."""
    return click.option(
        "--home",
        metavar="DIR",
        expose_value=False,
        is_eager=True,
        callback=_set_home,
        help="Records directory (as the global --home).",
    )(fn)


def current_engine() -> Engine:
    """The engine the ``taskpoint`` group built from its options for this command."""
    engine = click.get_current_context().find_root().obj
    return engine if isinstance(engine, Engine) else Engine()


def records_for_reading(engine: Engine | None = None):  # -> Records
    """The records of the engine's home, without creating a home that does not exist."""
    from taskpoint.records import Records

    home = (engine or current_engine()).resolved_home()
    if not (Path(home) / "taskpoint.db").exists():
        raise ExecutionNotFound(
            f"no executions are recorded under {home} (no taskpoint.db there); "
            "check --home / TASKPOINT_HOME"
        )
    return Records(home)


# click >= 8.2 raises this for a group called without a command (its message is the help).
_NO_ARGS: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


def run_cli(argv: list[str]) -> int:
    """Run the CLI on ``argv`` and return the exit status; errors become one line on stderr."""
    from taskpoint.cli import (  # noqa: F401  (registers them)
        cleanup_commands,
        goodput_cmd,
        logs_cmd,
        query_commands,
        run_commands,
        stop_cmd,
        ui_cmd,
    )

    debug = "--debug" in argv
    try:
        result = cli.main(args=argv, prog_name="taskpoint", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        _error("aborted", debug)
        return EXIT_ABORTED
    except _NO_ARGS as exc:  # bare `taskpoint`: the help, and one line saying what is missing
        click.echo(exc.ctx.get_help() if exc.ctx is not None else "")
        _error("missing command (see 'taskpoint --help')", debug)
        return EXIT_USAGE
    except click.UsageError as exc:
        hint = ""
        if exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        _error(exc.format_message() + hint, debug)
        return EXIT_USAGE
    except click.ClickException as exc:
        _error(exc.format_message(), debug)
        return exc.exit_code
    except CliError as exc:
        _error(str(exc), debug)
        return exc.code
    except TaskpointError as exc:
        _error(str(exc), debug)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("aborted (Ctrl-C)", debug)
        return EXIT_ABORTED
    except Exception as exc:
        _error(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", debug
        )
        return EXIT_FAILED
    return result if isinstance(result, int) else 0


def _error(message: str, debug: bool) -> None:
    if debug and sys.exc_info()[0] is not None:
        traceback.print_exc()
    click.echo(f"taskpoint: error: {message}", err=True)
