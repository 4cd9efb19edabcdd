"""``taskpoint ui``: serve the read-only web view of executions (server imported on use)."""

from __future__ import annotations

import os

import click

from taskpoint.cli.app import cli
from taskpoint.engine.settings import settings


@cli.command("ui")
@click.option(
    "--home", metavar="DIR", help="Records directory to show. [default: the global --home]"
)
@click.option(
    "--storage",
    metavar="URL",
    help="Read blobs from here instead of the store each execution recorded (a moved or "
    "re-mounted store).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8265, show_default=True, help="0: any free."
)
@click.option(
    "--token",
    metavar="T",
    help="Require this token on every request. Binding off loopback always requires one "
    "(generated and printed when not given).",
)
def ui_command(
    home: str | None, storage: str | None, host: str, port: int, token: str | None
) -> None:
    """Serve a web view of executions, attempts and checkpoints (read-only)."""
    from taskpoint.ui.server import serve

    storage = storage or settings.storage
    if storage and "://" not in storage:
        storage = os.path.abspath(os.path.expanduser(storage))
    try:
        serve(
            home or settings.resolved_home(),
            storage,
            host=host,
            port=port,
            token=token,
            echo=click.echo,
        )
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--token") from exc
