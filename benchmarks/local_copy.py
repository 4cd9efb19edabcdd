"""A retry's restore from S3 on the machine that wrote the version: with the local copy or not.

    python -m benchmarks.local_copy [--mib 256] [--repeats 5] [--dir DIR]

A moto server in its own process on 127.0.0.1 (``scale_store.moto_server``) holds a version of one
``--mib`` MiB file, written once with a local copy (``checkpoint/localcopy.py``). Then, alternated
in each round, a fresh scope object (as a retry opens one) restores it with the local copy
(listing and manifest from the store, the bytes from the copy, each file verified against the
manifest) and without (``local_copy=False``: every byte from the store). The copy's files are in
the page cache, as they are for a retry soon after the failure. For the write path, the same file
is saved to a new scope with and without making the copy, alternated: what the copy costs there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.common import Row, alternate, bandwidth_row, print_table, timed


def bench(workdir: str, mib: int, repeats: int) -> list[Row]:
    """Two rows (GiB/s, ratio = with the copy / without): the restore and the write."""
    try:
        import boto3
        import s3fs

        from benchmarks.scale_store import moto_server, random_file
    except ImportError as exc:
        return [_skipped(mib, f"skipped: {exc} (pip install s3fs boto3 'moto[server]')")]
    base = tempfile.mkdtemp(prefix="taskpoint-bench-", dir=workdir)
    try:
        source = random_file(os.path.join(base, "state.bin"), mib)
        with moto_server() as endpoint:
            options: dict[str, Any] = {
                "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
                "key": "testing",
                "secret": "testing",
            }
            boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            ).create_bucket(Bucket="bench")
            fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
            return _rounds(source, base, options, fs, repeats)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _rounds(source: str, base: str, options: dict[str, Any], fs: Any, repeats: int) -> list[Row]:
    from taskpoint import Checkpoint

    copies = os.path.join(base, "copies")
    size = os.path.getsize(source)
    gib = size / (1 << 30)

    def open_scope(url: str, local_copy: str | bool, attempt: int = 1) -> Checkpoint:
        return Checkpoint.open(
            url, attempt=attempt, storage_options=options, local_copy=local_copy, keep=1
        )

    def restore(url: str, local_copy: str | bool) -> Callable[[], float]:
        def run() -> float:
            dest = tempfile.mkdtemp(dir=base)
            with open_scope(url, local_copy, attempt=2) as cp:
                took = timed(lambda: cp.restore(dest))
            if os.path.getsize(os.path.join(dest, "state.bin")) != size:
                raise RuntimeError("the restored file has the wrong size")
            shutil.rmtree(dest)
            return took

        return run

    def write(local_copy: str | bool) -> Callable[[], float]:
        def run() -> float:
            url = f"s3://bench/w-{uuid.uuid4().hex}"
            with open_scope(url, local_copy) as cp:
                took = timed(lambda: cp.save(source))
            fs.rm(url, recursive=True)  # the server keeps every object in memory
            return took

        return run

    url = f"s3://bench/{uuid.uuid4().hex}"
    with open_scope(url, copies) as writer:
        writer.save(source)
    restore(url, False)()  # warm-up: connections, the server's first reads
    with_copy, without = alternate(restore(url, copies), restore(url, False), repeats)
    copying, plain = alternate(write(copies), write(False), repeats)
    where = "moto in its own process on 127.0.0.1, same version, alternated"
    return [
        bandwidth_row(
            f"S3 restore {size >> 20} MiB on the writing machine (vs no local copy)",
            gib,
            with_copy,
            without,
            None,
            f"{where}; the copy's files warm in the page cache, each verified on use",
        ),
        bandwidth_row(
            f"S3 write {size >> 20} MiB making the local copy (vs not)",
            gib,
            copying,
            plain,
            None,
            f"{where}; the copy is written beside the upload, not after it",
        ),
    ]


def _skipped(mib: int, why: str) -> Row:
    metric = f"S3 restore {mib} MiB on the writing machine (vs no local copy)"
    return Row(metric, float("nan"), None, "GiB/s", None, "(info)", None, why)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dir", default=None)
    args = p.parse_args()
    rows = bench(args.dir or os.getcwd(), args.mib, args.repeats)
    print_table("restore from S3 with the local copy", rows)


if __name__ == "__main__":
    main()
