"""A task whose second checkpoint does not fit on the disk (tests/faults/test_disk_full.py). It
knows the ``enospc://`` filesystem of ``faults_fs.py`` (in the folder above) itself."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import faults_fs

from taskpoint import current_context, task

faults_fs.register()


@task(retries=2)
def fill(step_size: int, big_size: int) -> int:
    cp = current_context().checkpoint
    cp.write(b"s" * step_size, step=1)
    cp.write(b"b" * big_size, step=2)  # does not fit
    return 2
