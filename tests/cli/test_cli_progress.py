"""Progress rendering: plain lines off a terminal, a live rich region on one (also while
process-isolated attempts fork under the display thread)."""

from __future__ import annotations

import io
import time

from cli_paths import SEED
from rich.console import Console

import taskpoint
from taskpoint import current_context, task, workflow
from taskpoint.cli.progress import LiveProgress, PlainProgress
from taskpoint.engine import configure
from taskpoint.engine.loader import load_file


def test_plain_progress_lines():
    stream = io.StringIO()
    configure(listener=PlainProgress(stream))
    seed = load_file(SEED)
    assert taskpoint.run(seed.example, n_iterations=12).result == 11
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("running example as execution ")
    assert "attempt 1 (retries 0/3, system 0/3)  started, from the start" in lines[1]
    assert "attempt 1  recoverable after" in lines[2]
    assert (
        "latest checkpoint 0001-000004 (1 B): RecoverableError: Failed at iteration 4" in lines[2]
    )
    assert lines[2].endswith("; retrying (retries 1/3)")
    assert (
        "attempt 2 (retries 1/3, system 0/3)  started, resuming from checkpoint 0001-000004"
        in (lines[3])
    )
    assert "attempt 3  succeeded" in lines[6]


def test_live_progress_with_process_isolation():
    out = io.StringIO()
    live = LiveProgress(Console(file=out, force_terminal=True, width=120))
    live.POLL_EVERY = 0.05
    configure(listener=live)

    @task(isolation="process", retries=1)
    def slow(n: int) -> int:
        cp = current_context().checkpoint
        for i in range(n):
            cp.write(str(i).encode(), step=i)
            time.sleep(0.02)
        return n

    @workflow
    def flow() -> int:
        return sum(slow(n=n) for n in (5, 10, 15))

    try:
        assert taskpoint.run(flow).result == 30
    finally:
        live.close()
    text = out.getvalue()
    assert "slow#3  attempt 1 (retries 0/1, system 0/3)" in text
    assert "succeeded" in text
    assert "step" in text  # the live line showed a polled checkpoint
