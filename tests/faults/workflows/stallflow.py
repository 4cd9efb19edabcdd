"""A task whose second checkpoint is a 1 MiB upload (tests/faults/test_s3_storage_timeout.py):
behind the stalling proxy, step 1 (inline, small) commits and step 2 stalls."""

from taskpoint import current_context, task, workflow


@task(system_retries=0, keep=3)  # a stalled upload ends the run: the test resumes it
def upload(steps: int) -> int:
    cp = current_context().checkpoint
    prev = cp.read()
    start = int(prev[1:7]) if prev else 0
    for step in range(start + 1, steps + 1):
        head = f"<{step:06d}>".encode()
        size = 1024 if step == 1 else 1 << 20
        cp.write((head * (size // len(head) + 1))[:size], step=step)
    return start


@workflow
def stalling(steps: int) -> int:
    return upload(steps=steps)
