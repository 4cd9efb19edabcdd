"""The ``taskpoint`` command line: run | resume | list | show | checkpoints.

Exit codes: 0 succeeded, 1 failed, 2 usage error (bad input), 130 aborted (Ctrl-C),
143 preempted (SIGTERM).
"""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 130
EXIT_PREEMPTED = 143

EXIT_OF_STATUS = {
    "succeeded": EXIT_OK,
    "failed": EXIT_FAILED,
    "preempted": EXIT_PREEMPTED,
    "aborted": EXIT_ABORTED,
}


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the CLI and exits with its status."""
    from taskpoint.cli.app import run_cli

    sys.exit(run_cli(sys.argv[1:] if argv is None else argv))


__all__ = ["main"]
