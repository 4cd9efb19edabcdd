"""Child process for test_zombie.py: an attempt that writes checkpoints in a loop.

Usage: ``python faults_zombie_writer.py URL ATTEMPT KEEP LOG SIZE COUNT STOPFILE``. Writes
``content(attempt, n, SIZE)`` as step ``n`` (every third write async), appending
``<version id> <attempt> <n>`` to LOG with fsync once committed, for COUNT writes, or until
STOPFILE exists when COUNT is 0. Prints ``ready`` when its scope is open.
"""

from __future__ import annotations

import os
import sys


def content(attempt: int, n: int, size: int) -> bytes:
    head = f"<attempt {attempt} write {n}>".encode()
    return (head * (size // len(head) + 1))[:size]


def main(argv: list[str]) -> None:
    url, attempt, keep, log, size, count, stopfile = argv[:7]
    from taskpoint import Checkpoint

    cp = Checkpoint.open(url, attempt=int(attempt), keep=int(keep))
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    print("ready", flush=True)
    n = 0
    while (int(count) and n < int(count)) or (not int(count) and not os.path.exists(stopfile)):
        n += 1
        data = content(int(attempt), n, int(size))
        if n % 3:
            version = cp.write(data, step=n)
        else:
            version = cp.write(data, step=n, blocking=False).result()
        os.write(fd, f"{version.id} {attempt} {n}\n".encode())
        os.fsync(fd)
    cp.close()


if __name__ == "__main__":
    main(sys.argv[1:])
