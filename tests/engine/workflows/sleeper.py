"""The task of ``fork_server_driver.py``: writes its pid to ``pidfile`` (atomically), then waits
up to 120 s for a preemption, marked by ``<pidfile>.sigterm``."""

import os
import time

from taskpoint import current_context, task


@task(isolation="process")
def sleeper(pidfile: str) -> None:
    with open(pidfile + ".tmp", "w") as handle:
        handle.write(str(os.getpid()))
    os.rename(pidfile + ".tmp", pidfile)
    deadline = time.monotonic() + 120
    while not current_context().preempted and time.monotonic() < deadline:
        time.sleep(0.05)
    if current_context().preempted:
        open(pidfile + ".sigterm", "w").close()
