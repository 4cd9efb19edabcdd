"""The ``taskpoint`` command line: run | resume | list | show | checkpoints.

Exit codes: 0 succeeded, 1 failed, 2 usage error (bad input), 130 aborted (Ctrl-C),
143 preempted (SIGTERM).
"""

from __future__ import annotations

import sys

from taskpoint.records.status import ExecutionStatus

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 130
EXIT_PREEMPTED = 143

EXIT_OF_STATUS: dict[str, int] = {
    ExecutionStatus.SUCCEEDED: EXIT_OK,
    ExecutionStatus.FAILED: EXIT_FAILED,
    ExecutionStatus.PREEMPTED: EXIT_PREEMPTED,
    ExecutionStatus.ABORTED: EXIT_ABORTED,
}


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the CLI and exits with its status."""
    from taskpoint.cli.app import run_cli

    sys.exit(run_cli(sys.argv[1:] if argv is None else argv))


__all__ = ["main"]
