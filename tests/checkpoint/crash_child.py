"""Child process for test_crash.py: writes checkpoints in a loop until it is SIGKILLed.

Every version carries ``step = counter`` and ``metadata = {"size", "layout"}``; its content is a
pure function of those (`expected_tree`), so the parent can verify whatever it finds. After a
blocking write returns, or an async future resolves to a version, the child appends
``"<version id> <counter>\\n"`` to its log with fsync: the parent's proof of what was committed.

Run as a script (``python crash_child.py URL ATTEMPT KEEP LOG WORKDIR SEED [--big-first]
[--count N] [--max-size BYTES] [--endpoint S3_URL] [--layouts a,b]``); the parent imports it by
path only for `expected_tree`.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import struct
import sys
from pathlib import Path

MiB = 1 << 20
INLINE_MAX = 64 << 10  # taskpoint.checkpoint.payload.INLINE_MAX
LAYOUTS = (
    "write",
    "write-async",
    "write-inline",  # at most INLINE_MAX bytes: an inline version, its manifest alone
    "write-inline-async",
    "file",
    "file-async",
    "stream",
    "stream-async",
    "dir",
    "dir-async",
)


def content(counter: int, size: int, salt: bytes = b"") -> bytes:
    """``size`` bytes determined by ``counter``: a header with counter and size, then a pattern."""
    header = struct.pack("<QQ", counter, size)
    block = hashlib.sha256(salt + header).digest() * 2048  # 64 KiB
    body = (header + block * (size // len(block) + 1))[:size]
    return body


def expected_tree(counter: int, size: int, layout: str) -> dict[str, bytes]:
    """What ``restore()`` must produce for a version written by this child."""
    if layout.startswith("dir"):
        half = size // 2
        return {
            "part-a.bin": content(counter, half, b"a"),
            "sub/part-b.bin": content(counter, size - half, b"b"),
        }
    if layout.startswith("file"):
        return {"payload.bin": content(counter, size)}
    return {"data": content(counter, size)}


def _pick_size(rng: random.Random, max_size: int) -> int:
    return min(_any_size(rng), max_size)


def _any_size(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.45:
        return rng.randint(1, 1024)
    if roll < 0.80:
        return rng.randint(1025, 256 * 1024)
    if roll < 0.97:
        return rng.randint(256 * 1024, 8 * MiB)
    return 64 * MiB


def _write(cp, work: Path, counter: int, size: int, layout: str):
    meta = {"size": size, "layout": layout}
    blocking = not layout.endswith("-async")
    tree = expected_tree(counter, size, layout)
    if layout.startswith("write"):
        return cp.write(tree["data"], step=counter, metadata=meta, blocking=blocking)
    if layout.startswith("stream"):
        stream = io.BytesIO(tree["data"])
        return cp.save(stream, step=counter, metadata=meta, blocking=blocking)
    src = work / f"src-{counter}"
    for rel, data in tree.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    target = src / "payload.bin" if layout.startswith("file") else src
    try:
        return cp.save(target, step=counter, metadata=meta, blocking=blocking)
    finally:
        # an async save has its snapshot already: the source can go at once
        shutil.rmtree(src)


def _log(fd: int, vid: str, counter: int) -> None:
    os.write(fd, f"{vid} {counter}\n".encode())
    os.fsync(fd)


def main(argv: list[str]) -> None:
    url, attempt, keep, log_path, work, seed = argv[:6]
    big_first = "--big-first" in argv
    count = int(argv[argv.index("--count") + 1]) if "--count" in argv else None
    max_size = int(argv[argv.index("--max-size") + 1]) if "--max-size" in argv else 64 * MiB
    layouts = argv[argv.index("--layouts") + 1].split(",") if "--layouts" in argv else LAYOUTS
    options = None
    if "--endpoint" in argv:  # S3 on a test server; credentials come from AWS_* variables
        endpoint = argv[argv.index("--endpoint") + 1]
        options = {"client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    from taskpoint import Checkpoint

    cp = Checkpoint.open(url, attempt=int(attempt), keep=int(keep), storage_options=options)
    work_dir = Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    rng = random.Random(int(seed))
    counter = int(seed) * 1_000_000
    pending = []
    print("ready", flush=True)
    iterations = 0
    while count is None or iterations < count:
        iterations += 1
        counter += 1
        size = max_size if big_first and iterations == 1 else _pick_size(rng, max_size)
        layout = rng.choice(layouts)
        if "inline" in layout:
            size = min(size, rng.choice((16, INLINE_MAX)))
        result = _write(cp, work_dir, counter, size, layout)
        if hasattr(result, "result"):
            pending.append((result, counter))
        else:
            _log(log_fd, result.id, counter)
        if rng.random() < 0.1:
            cp.wait()
        for future, done_counter in list(pending):
            if future.done():
                pending.remove((future, done_counter))
                version = future.result()  # None: superseded by a newer async write
                if version is not None:
                    _log(log_fd, version.id, done_counter)
    cp.close()
    for future, done_counter in pending:
        version = future.result()
        if version is not None:
            _log(log_fd, version.id, done_counter)


if __name__ == "__main__":
    main(sys.argv[1:])
