"""A loop that survives being killed: run it, press Ctrl-C (or kill it) mid-way, run it again.

It counts to 20, committing its position as a checkpoint after every step, and resumes from the
latest committed one. Uses only the checkpoint layer: ``Checkpoint.open`` on a local directory.
"""

import sys
import time

from taskpoint import Checkpoint

STEPS = 20


def main(url: str = ".taskpoint/demo-checkpoint") -> int:
    with Checkpoint.open(url) as cp:
        latest = cp.latest()
        start = int(cp.read().decode()) if latest else 0
        print(f"resuming at step {start} (checkpoint {latest.id})" if latest else "starting fresh")
        for i in range(start, STEPS):
            time.sleep(0.05)  # the "work" of one step
            version = cp.write(f"{i + 1}".encode(), step=i + 1)
            print(f"step {i + 1}/{STEPS} committed as version {version.id}")
        total = int(cp.read().decode())
    print(f"done: counted to {total}; run again and it resumes at {total} instantly")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
