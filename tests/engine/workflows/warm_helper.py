"""Imported inside a task by ``warm_counted`` copies: appends the importer's pid to
``<its own name>.imports`` (tests/engine/test_warm_restart.py)."""

import os
from pathlib import Path

with open(Path(__file__).with_suffix(".imports"), "a") as handle:
    handle.write(f"{os.getpid()}\n")
