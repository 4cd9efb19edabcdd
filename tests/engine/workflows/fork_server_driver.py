"""``python fork_server_driver.py PIDFILE`` (tests/engine/test_engine_process.py): a driver with
torch loaded before the run, so the ``sleeper`` attempt comes from the fork server."""

import os
import sys

import torch  # noqa: F401  (loaded before the run: attempts come from the fork server)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sleeper import sleeper

import taskpoint

if __name__ == "__main__":
    taskpoint.run(sleeper, pidfile=sys.argv[1])
