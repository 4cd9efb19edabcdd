"""A workflow the browser test kills and resumes (tests/ui/test_ui_browser.py): one inline task
that commits steps 1..steps, one every ``pause`` seconds, resuming from its latest step."""

import time

from taskpoint import current_context, task, workflow


@task
def count(steps: int, pause: float) -> int:
    cp = current_context().checkpoint
    prev = cp.read()
    start = int(prev) if prev else 0
    for step in range(start + 1, steps + 1):
        time.sleep(pause)
        cp.write(str(step).encode(), step=step)
    return steps


@workflow
def counting(steps: int, pause: float = 0.05) -> int:
    return count(steps=steps, pause=pause)
