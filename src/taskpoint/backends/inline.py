"""The inline backend: an attempt runs in the driver's own thread, one node after another.

Fastest (no process, no pickling), and the only one where SIGTERM to the driver reaches the task
directly. The attempt itself is the engine's ``execute_attempt``, as in a child process or on a
Dask worker.
"""

from __future__ import annotations

from taskpoint.engine.attempt import AttemptJob, DoneHandle
from taskpoint.engine.execute import execute_attempt


class InlineBackend:
    name = "inline"
    in_driver = True
    concurrency = 1  # sequential: signals and the task context belong to the main thread

    def submit(self, job: AttemptJob) -> DoneHandle:
        if job.task.nproc > 1:  # an engine whose backend is inline, whatever the task asks
            from taskpoint.backends.ranks import refused

            return refused(job, "the inline backend runs attempts in the driver's own thread")
        return DoneHandle(execute_attempt(job))

    def close(self) -> None:
        pass
