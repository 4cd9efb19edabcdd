"""``taskpoint ui``: serve the read-only web view of executions (server imported on use)."""

from __future__ import annotations

from typing import Any

import click

from taskpoint.cli.app import cli, current_engine


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
@click.option(
    "--storage-option",
    "storage_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec option for the storage read (repeatable; client_kwargs.region_name=... nests). "
    "S3 also reads the AWS environment and TASKPOINT_S3_ENDPOINT_URL.",
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
    home: str | None,
    storage: str | None,
    storage_option: tuple[str, ...],
    host: str,
    port: int,
    token: str | None,
) -> None:
    """Serve a web view of executions, attempts and checkpoints (read-only)."""
    from taskpoint.cli.backend_options import parse_storage_options
    from taskpoint.ui.server import serve

    options: Any = parse_storage_options(storage_option) if storage_option else None
    engine = current_engine().updated(home=home, storage=storage, storage_options=options)
    try:
        serve(
            engine,
            host=host,
            port=port,
            token=token,
            echo=click.echo,
        )
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--token") from exc
