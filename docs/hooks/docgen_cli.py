"""The CLI reference, made from the click app itself: each command's ``--help`` as click prints it.

Every module of ``taskpoint.cli`` is imported first, since commands register themselves on the
group when their module is imported (the CLI does the same before it parses arguments). The help
is rendered at a fixed width so the page does not depend on the terminal of whoever builds it.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

WIDTH = 100


def _app() -> object:
    import taskpoint.cli as package
    from taskpoint.cli.app import cli

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    return cli


def command_help(args: list[str]) -> str:
    """What ``taskpoint ARGS --help`` prints, at `WIDTH` columns."""
    from click.testing import CliRunner

    cli = _app()
    result = CliRunner().invoke(
        cli,  # type: ignore[arg-type]
        [*args, "--help"],
        prog_name="taskpoint",
        terminal_width=WIDTH,
        max_content_width=WIDTH,
    )
    if result.exit_code != 0:
        raise RuntimeError(f"taskpoint {' '.join(args)} --help exited {result.exit_code}")
    return result.output.rstrip() + "\n"


def _fence(text: str) -> str:
    # Help text may quote markdown backticks; a longer fence than any run inside keeps it intact.
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}{fence}\n"


def cli_reference() -> str:
    """Markdown: a table of commands, then each command's help under its own heading."""
    import click

    cli = _app()
    assert isinstance(cli, click.Group)
    ctx = click.Context(cli, info_name="taskpoint")
    names = cli.list_commands(ctx)
    parts = ["| Command | What it does |", "|---|---|"]
    for name in names:
        command = cli.get_command(ctx, name)
        assert command is not None
        summary = command.get_short_help_str(limit=200).replace("|", "\\|")
        parts.append(f"| [`taskpoint {name}`](#taskpoint-{name}) | {summary} |")
    parts += ["", "### `taskpoint`", "", "Global options go before the command.", ""]
    parts.append(_fence(command_help([])))
    for name in names:
        parts += [f"### `taskpoint {name}`", "", _fence(command_help([name]))]
    return "\n".join(parts)
