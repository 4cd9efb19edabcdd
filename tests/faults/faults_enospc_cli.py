"""``python faults_enospc_cli.py ARGS...``: ``taskpoint ARGS...`` in a process that knows the
``enospc://`` filesystem (for ``show`` and ``checkpoints`` of tests/faults/test_disk_full.py).
Run as a script, its folder (with ``faults_fs.py``) is on ``sys.path``."""

import sys

import faults_fs

from taskpoint.cli import main

if __name__ == "__main__":
    faults_fs.register()
    main(sys.argv[1:])
