"""Checkpoint stores at scale (part of ``benchmarks.scale``).

- **Many versions**: one scope with ``keep`` as large as the versions written (nothing is ever
  retired), filled with 16 B writes up to 100, 1,000 and 10,000 committed versions; at each mark:
  a write (median of the last 100), ``latest()``, ``versions()`` (per version) and retention's
  pass after a write (``prune(keep)`` with the same ``keep``, which deletes nothing: only the
  listing and the sweep). On tmpfs where there is one, so the disk's fsync latency (a constant
  per write, printed by the suite's first lines) does not hide how the rest grows.
- **Many files**: a directory of 100,000 small files saved as one version and restored, against
  ``cp -r`` and ``tar c | tar x`` of the same directory on the same disk. A save is durable
  (fsync), so the baselines' copies are followed by ``sync -f`` on that filesystem; a restore
  does not fsync, nor do the baselines there. Page cache warm on all sides.
- **S3**: a 1 GiB file saved as a version to a moto server on 127.0.0.1 (its own process) and
  restored from it, against boto3's ``upload_file`` / ``download_file`` (TransferManager, its
  default configuration) of the same file on the same server, alternated (see `_s3_rounds`).
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.common import tmpfs_dir

DATA = b"0123456789abcdef"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -------------------------------------------------------------------------- many versions
def many_versions(workdir: str, marks: list[int], repeats: int) -> dict[str, Any]:
    """Milliseconds per operation at each mark (committed versions in the scope)."""
    from taskpoint.checkpoint import Checkpoint

    shm = tmpfs_dir(None)
    base = tempfile.mkdtemp(prefix="tp-scale-versions-", dir=shm or workdir)
    keep = max(marks)
    out: dict[str, list[float]] = {"write": [], "latest": [], "versions": [], "retention": []}
    try:
        cp = Checkpoint.open(os.path.join(base, "scope"), keep=keep)
        written, writes = 0, []
        for mark in marks:
            while written < mark:
                start = time.perf_counter()
                cp.write(DATA, step=written)
                writes.append(time.perf_counter() - start)
                written += 1
            out["write"].append(statistics.median(writes[-100:]) * 1e3)
            writes = []
            latest = [timed(cp.latest) for _ in range(repeats)]
            out["latest"].append(statistics.median(latest) * 1e3)
            listed = [timed(cp.versions) for _ in range(max(1, repeats // 2))]
            out["versions"].append(statistics.median(listed) * 1e3 / mark)
            retain = [timed(lambda: cp.prune(keep)) for _ in range(repeats)]
            out["retention"].append(statistics.median(retain) * 1e3)
            if len(cp.versions()) != mark:
                raise RuntimeError(f"expected {mark} committed versions, found another count")
            print(f"   checkpoints: {mark} versions", flush=True)
        cp.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {"marks": marks, "ms": out, "tmpfs": bool(shm)}


# -------------------------------------------------------------------------- many files
def make_tree(root: str, files: int, per_dir: int = 1000) -> None:
    for i in range(files):
        sub = os.path.join(root, f"d{i // per_dir:04d}")
        if i % per_dir == 0:
            os.makedirs(sub)
        with open(os.path.join(sub, f"f{i:06d}.txt"), "wb") as handle:
            handle.write(f"file {i} ".encode() * 8)


def many_files(workdir: str, files: int) -> dict[str, float]:
    """Seconds: save and restore of a directory of ``files`` small files; the baselines."""
    from taskpoint.checkpoint import Checkpoint

    base = tempfile.mkdtemp(prefix="tp-scale-files-", dir=workdir)
    src = os.path.join(base, "src")
    out: dict[str, float] = {}
    try:
        make_tree(src, files)
        n = [0]

        def fresh() -> str:
            n[0] += 1
            return os.path.join(base, f"copy{n[0]}")

        def sync(path: str) -> None:
            subprocess.run(["sync", "-f", path], check=True)

        def cp_r(durable: bool) -> None:
            dest = fresh()
            subprocess.run(["cp", "-r", src, dest], check=True)
            if durable:
                sync(dest)

        def tar(durable: bool) -> None:
            dest = fresh()
            os.makedirs(dest)
            pack = subprocess.Popen(["tar", "-C", src, "-cf", "-", "."], stdout=subprocess.PIPE)
            subprocess.run(["tar", "-C", dest, "-xf", "-"], stdin=pack.stdout, check=True)
            assert pack.stdout is not None
            pack.stdout.close()
            if pack.wait() != 0:
                raise RuntimeError("tar -c failed")
            if durable:
                sync(dest)

        cp = Checkpoint.open(os.path.join(base, "scope"), keep=1)
        out["save"] = timed(lambda: cp.save(src))
        out["cp -r + sync"] = timed(lambda: cp_r(True))
        out["tar + sync"] = timed(lambda: tar(True))
        restored = fresh()
        out["restore"] = timed(lambda: cp.restore(restored))
        out["cp -r"] = timed(lambda: cp_r(False))
        out["tar"] = timed(lambda: tar(False))
        count = sum(len(names) for _, _, names in os.walk(restored))
        if count != files:
            raise RuntimeError(f"restored {count} files of {files}")
        cp.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


# -------------------------------------------------------------------------- S3 through moto
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def random_file(path: str, mib: int) -> str:
    """Write ``mib`` MiB of random bytes (one random MiB repeated) to ``path``; return it."""
    block = os.urandom(1 << 20)
    with open(path, "wb") as handle:
        for _ in range(mib):
            handle.write(block)
    return path


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server in its own process on a free loopback port; yields its endpoint."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def s3_roundtrip(workdir: str, mib: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of each side's write and read of a ``mib`` MiB file, round by round."""
    import boto3
    import s3fs

    from taskpoint.checkpoint import Checkpoint

    base = tempfile.mkdtemp(prefix="tp-scale-s3-", dir=workdir)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    no_proxy = os.environ.get("NO_PROXY")
    os.environ["NO_PROXY"] = ",".join(filter(None, [no_proxy, "127.0.0.1"]))
    try:
        path = random_file(os.path.join(base, "state.bin"), mib)
        with moto_server() as endpoint:
            client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
            client.create_bucket(Bucket="scale")
            options = {"client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
            fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
            return _s3_rounds(path, base, client, fs, options, repeats, Checkpoint)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if no_proxy is None:
            os.environ.pop("NO_PROXY", None)
        else:
            os.environ["NO_PROXY"] = no_proxy
        shutil.rmtree(base, ignore_errors=True)


class _Written:
    """An object one side wrote: read it back (timed), or only delete it."""

    def __init__(self, read: Callable[[], float], delete: Callable[[], None]) -> None:
        self._read, self.delete = read, delete

    def read(self) -> float:
        try:
            return self._read()
        finally:
            self.delete()


def _s3_rounds(
    path: str, base: str, client: Any, fs: Any, options: dict, repeats: int, checkpoint: Any
) -> dict[str, list[float]]:
    """Each round writes A B B A and reads A's and B's first objects (A and B alternating
    between rounds). A write takes seconds here and a read over a minute, and the writes vary by
    10-20 % from one to the next on both sides (moto keeps the parts in temporary files on this
    disk), so they get twice the samples, in an order that cancels a drift within the round."""

    def ours(path: str = path) -> tuple[float, _Written]:
        url = f"s3://scale/{uuid.uuid4().hex}"
        # No local copy: the read must fetch the version from the server (checkpoint/localcopy.py)
        cp = checkpoint.open(url, storage_options=options, local_copy=False)

        def read() -> float:
            dest = tempfile.mkdtemp(dir=base)
            try:
                seconds = timed(lambda: cp.restore(dest))
                restored = os.path.join(dest, os.path.basename(path))
                if os.path.getsize(restored) != os.path.getsize(path):
                    raise RuntimeError("restored file has the wrong size")
                return seconds
            finally:
                shutil.rmtree(dest)

        def delete() -> None:
            cp.close()
            fs.rm(url, recursive=True)

        written = _Written(read, delete)
        try:
            return timed(lambda: cp.save(path)), written
        except BaseException:
            delete()
            raise

    def boto(path: str = path) -> tuple[float, _Written]:
        key = uuid.uuid4().hex
        dest = os.path.join(base, f"{key}.bin")

        def read() -> float:
            try:
                return timed(lambda: client.download_file("scale", key, dest))
            finally:
                os.unlink(dest)

        written = _Written(read, lambda: client.delete_object(Bucket="scale", Key=key))
        return timed(lambda: client.upload_file(path, "scale", key)), written

    # Warm-up of both sides (connections, imports, the server's first writes) with a small
    # file that still takes the multipart and ranged paths: a 1 GiB round is minutes here.
    small = os.path.join(base, "warm.bin")
    with open(path, "rb") as src, open(small, "wb") as out:
        out.write(src.read(24 << 20))
    for side in (ours, boto):
        side(small)[1].read()

    names = {ours: ("write", "read"), boto: ("upload", "download")}
    results: dict[str, list[float]] = {"write": [], "read": [], "upload": [], "download": []}
    for i in range(repeats):
        a, b = (ours, boto) if i % 2 == 0 else (boto, ours)
        kept = []
        for n, side in enumerate((a, b, b, a)):
            seconds, written = side()
            results[names[side][0]].append(seconds)
            if n < 2:
                kept.append((side, written))
            else:
                written.delete()
        for side, written in kept:
            results[names[side][1]].append(written.read())
    return results
