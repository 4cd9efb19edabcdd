"""``python large_write_child.py URL SIZE`` (tests/checkpoint/test_write_mode.py): commit
``SIZE``-byte versions to the scope at ``URL`` in a loop, each filled with its step, until
killed; prints ``ready`` once the scope is open."""

import sys

from taskpoint import Checkpoint

if __name__ == "__main__":
    url, size = sys.argv[1], int(sys.argv[2])
    cp = Checkpoint.open(url, keep=2)
    latest = cp.latest()
    step = latest.step + 1 if latest is not None and latest.step is not None else 0
    print("ready", flush=True)
    while True:
        cp.write(bytes([step % 251]) * size, step=step)
        step += 1
