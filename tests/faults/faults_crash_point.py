"""Child process for test_commit_protocol.py: write checkpoints, and SIGKILL itself at one exact
point of the commit protocol during write number ``--kill-at``.

Usage: ``python faults_crash_point.py URL ATTEMPT KEEP LOG POINT KILL_AT COUNT [--async]
[--small [--named]]``. Every version's content is ``content(step, small)``: over the inline limit
(a payload prefix and a file), or with ``--small`` under it (an inline version: its manifest
alone); ``metadata["small"]`` says which. After a write returned (or its future resolved) the
child appends ``<version id> <step>`` to LOG with fsync. POINT is one of `POINTS` (payload
writes) or `INLINE_POINTS` (``--small``). An inline manifest is made as a file without a name
where the filesystem can (``O_TMPFILE``); ``--named`` takes the path of filesystems that
cannot (a named temp file ``v/<id>``), which has `NAMED_POINTS` too.
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
    "inline-created",  # the manifest's file created (no name, or v/<id>), still empty
    "manifest-temp",  # the manifest written into it, not linked to its name, not fsynced
    "inline-linked",  # linked: committed, but neither the file nor v/ fsynced
    "inline-synced",  # the file fsynced, v/ not yet
    "committed",
    "retiring",
    "none",
)
NAMED_POINTS = ("inline-unlinked",)  # --named: the temp name gone, v/ not yet fsynced
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

        def retain(self: object, *args: object, **kwargs: object) -> None:
            if state["armed"]:
                _die()
            original_retain(self, *args, **kwargs)

        core.Checkpoint._retain = retain  # type: ignore[method-assign]
    elif point == "retiring":
        after(store, "retire")  # uncommitted: its manifest renamed, not yet deleted
    else:
        _arm_inline(point, state)


def _arm_inline(point: str, state: dict) -> None:
    """The steps of an inline commit (`LocalStore.commit_inline`), by the calls it makes."""
    from taskpoint.checkpoint.version import parse_version_id

    def is_temp(path: object) -> bool:
        return parse_version_id(os.path.basename(str(path))) is not None

    if point == "inline-created":
        original_open = os.open
        anonymous = getattr(os, "O_TMPFILE", -1)

        def open_(path: str, flags: int, *args: object, **kwargs: object) -> int:
            fd = original_open(path, flags, *args, **kwargs)
            created = flags & anonymous == anonymous or (flags & os.O_EXCL and is_temp(path))
            if state["armed"] and created:
                _die()
            return fd

        os.open = open_  # type: ignore[assignment]
    elif point == "inline-synced":
        original_fsync = os.fsync

        def fsync(fd: int) -> None:
            original_fsync(fd)
            if state["armed"]:
                _die()  # the first fsync of an inline commit is its manifest file's

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
    if "--named" in argv:
        cp._store._small.anonymous = False  # type: ignore[attr-defined]
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
