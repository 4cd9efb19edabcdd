"""Child process for test_commit_protocol.py: write checkpoints, and SIGKILL itself at one exact
point of the commit protocol during write number ``--kill-at``.

Usage: ``python faults_crash_point.py URL ATTEMPT KEEP LOG POINT KILL_AT COUNT [--async]
[--small]``. Every version's content is ``content(step, small)``: over the inline limit (a
payload prefix and a file), or with ``--small`` under it (an inline version: its manifest alone);
``metadata["small"]`` says which. After a write returned (or its future resolved) the child
appends ``<version id> <step>`` to LOG with fsync. POINT is one of `POINTS` (payload writes) or
`INLINE_POINTS` (``--small``).
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
INLINE_POINTS = (
    "inline-reserved",  # the id's temp file v/<id> created (the reservation), still empty
    "inline-written",  # the manifest written into it, not yet fsynced
    "manifest-temp",  # fsynced, not linked to its manifest name
    "inline-linked",  # linked: committed; the temp name not yet unlinked, v/ not fsynced
    "inline-unlinked",  # the temp name gone, v/ not yet fsynced
    "committed",
    "retiring",
    "none",
)
BIG = 70_000  # over the inline limit (64 KiB)


def content(step: int, small: bool = False) -> bytes:
    return (f"<step {step}>".encode() * 8192)[: (0 if small else BIG) + 1000 + step]


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
    else:
        _arm_inline(point, state)


def _arm_inline(point: str, state: dict) -> None:
    """The steps of an inline commit (`LocalStore.commit_inline`), by the calls it makes."""
    from taskpoint.checkpoint.version import parse_version_id

    def is_temp(path: object) -> bool:
        return parse_version_id(os.path.basename(str(path))) is not None

    if point == "inline-reserved":
        original_open = os.open

        def open_(path: str, flags: int, *args: object, **kwargs: object) -> int:
            fd = original_open(path, flags, *args, **kwargs)
            if state["armed"] and flags & os.O_EXCL and is_temp(path):
                _die()
            return fd

        os.open = open_  # type: ignore[assignment]
    elif point == "inline-written":
        original_fsync = os.fsync

        def fsync(fd: int) -> None:
            if state["armed"]:
                _die()  # the first fsync of an inline commit is its temp file's
            original_fsync(fd)

        os.fsync = fsync
    elif point == "inline-linked":
        original_link = os.link

        def link(src: str, dst: str, *args: object, **kwargs: object) -> None:
            original_link(src, dst, *args, **kwargs)
            if state["armed"] and dst.endswith(".manifest.json"):
                _die()

        os.link = link
    elif point == "inline-unlinked":
        original_unlink = os.unlink

        def unlink(path: str, *args: object, **kwargs: object) -> None:
            original_unlink(path, *args, **kwargs)
            if state["armed"] and is_temp(path):
                _die()

        os.unlink = unlink  # type: ignore[assignment]
    elif point != "none":
        raise SystemExit(f"unknown crash point {point!r}")


def main(argv: list[str]) -> None:
    url, attempt, keep, log, point, kill_at, count = argv[:7]
    blocking = "--async" not in argv
    small = "--small" in argv
    from taskpoint import Checkpoint

    cp = Checkpoint.open(url, attempt=int(attempt), keep=int(keep))
    state = {"armed": False}
    _arm(point, cp, state)
    base = int(attempt) * 1000
    for n in range(1, int(count) + 1):
        step = base + n
        state["armed"] = n == int(kill_at)
        result = cp.write(
            content(step, small), step=step, metadata={"small": small}, blocking=blocking
        )
        version = result if blocking else result.result()
        if version is not None:
            _log(log, version.id, step)
    cp.close()


if __name__ == "__main__":
    main(sys.argv[1:])
