"""Child process for test_commit_protocol.py: write checkpoints, and SIGKILL itself at one exact
point of the commit protocol during write number ``--kill-at``.

Usage: ``python faults_crash_point.py URL ATTEMPT KEEP LOG POINT KILL_AT COUNT [--async]``.
Every version's content is ``content(step)``; after a write returned (or its future resolved)
the child appends ``<version id> <step>`` to LOG with fsync. POINT is one of `POINTS`.
"""

from __future__ import annotations

import os
import signal
import sys

POINTS = (
    "reserved",  # the version's prefix exists, nothing in it
    "payload",  # payload written, not yet fsynced/sealed
    "sealed",  # payload and directories fsynced, no manifest
    "manifest-temp",  # the manifest's temp file written and fsynced, not linked
    "committed",  # manifest linked: committed, retention not run
    "retiring",  # retention uncommitted an old version, its payload not yet deleted
    "none",  # never
)


def content(step: int) -> bytes:
    return (f"<step {step}>".encode() * 512)[: 1000 + step]


def _log(path: str, vid: str, step: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{vid} {step}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(point: str, cp: object, state: dict) -> None:
    """Wrap the protocol step named ``point`` so it kills the process once ``state['armed']``."""
    from taskpoint.checkpoint import core, storage

    store = cp._store  # type: ignore[attr-defined]

    def after(obj: object, name: str) -> None:
        original = getattr(obj, name)

        def wrapped(*args: object, **kwargs: object) -> object:
            result = original(*args, **kwargs)
            if state["armed"]:
                _die()
            return result

        setattr(obj, name, wrapped)

    if point == "reserved":
        after(store, "reserve")
    elif point == "payload":
        after(store, "write_source")
    elif point == "sealed":
        after(store, "seal")
    elif point == "manifest-temp":
        original_link = storage.os.link

        def link(src: str, dst: str, *args: object, **kwargs: object) -> None:
            if state["armed"] and dst.endswith(".manifest.json"):
                _die()
            original_link(src, dst, *args, **kwargs)

        storage.os.link = link  # this child only
    elif point == "committed":
        original_retain = core.Checkpoint._retain

        def retain(self: object) -> None:
            if state["armed"]:
                _die()
            original_retain(self)

        core.Checkpoint._retain = retain  # type: ignore[method-assign]
    elif point == "retiring":
        after(store, "delete_manifest")


def main(argv: list[str]) -> None:
    url, attempt, keep, log, point, kill_at, count = argv[:7]
    blocking = "--async" not in argv
    from taskpoint import Checkpoint

    cp = Checkpoint.open(url, attempt=int(attempt), keep=int(keep))
    state = {"armed": False}
    _arm(point, cp, state)
    base = int(attempt) * 1000
    for n in range(1, int(count) + 1):
        step = base + n
        state["armed"] = n == int(kill_at)
        result = cp.write(content(step), step=step, blocking=blocking)
        version = result if blocking else result.result()
        if version is not None:
            _log(log, version.id, step)
    cp.close()


if __name__ == "__main__":
    main(sys.argv[1:])
