"""A large file to S3 as a multipart upload with a steady number of parts in flight.

s3fs's ``put_file`` reads a batch of parts, sends them together and waits for the slowest
before it reads the next batch, and declares no checksum algorithm: on a server that then
computes a whole-object CRC64NVME itself (as S3 does by default now, and moto in Python) the
complete step copies and checksums the whole object once more. Against a moto server on the
same machine that wrote 1 GiB at 0.6 x boto3's ``upload_file``.

`upload_file` here sends parts as ``upload_file`` (s3transfer) does: a new part starts as soon
as one finishes (at most ``at_once`` in flight, so at most ``at_once`` parts in memory), each
part is sent with its checksum, which S3 checks on arrival (moto does not), and the complete
request lists the parts with their checksums (S3 requires them once the upload declared an
algorithm). A failed upload is aborted, so no parts are left behind to be billed.

The checksum is CRC32C, computed by taskpoint in the thread that reads the part (the same
function as the manifest's checksums: hardware-accelerated, without the GIL). Declared as CRC32
and left to botocore, each part's checksum was computed on the event loop's one thread, between
the sends: 1 GiB to moto went at 0.92 x ``upload_file``; at 0.98 x this way (2026-12-05). The
whole file's CRC-32C, which the manifest records, is combined from the parts' (``crcmath``):
the bytes sent are the bytes checksummed, and the file is read once.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Sequence
from typing import Any

from taskpoint.checkpoint.crcmath import combine_parts
from taskpoint.checkpoint.storage import crc_of

MAX_PARTS = 10_000  # S3's limit per upload: a larger file gets larger parts
_MIB = 1 << 20


def can_upload(fs: Any) -> bool:
    """Is ``fs`` an s3fs filesystem whose request helper this module uses?"""
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return "s3" in protocols and callable(getattr(fs, "_call_s3", None))


def part_size(size: int, wanted: int) -> int:
    """``wanted``, or the least whole number of MiB that keeps ``size`` within `MAX_PARTS`."""
    least = -(-size // MAX_PARTS)
    return max(wanted, -(-least // _MIB) * _MIB)


def upload_file(
    fs: Any, local: str, remote: str, part: int, at_once: int, timeout: float | None = None
) -> tuple[int, int]:
    """Send the local file ``local`` to ``remote`` (``bucket/key``) in parts of ``part`` bytes
    (more where the file would need over `MAX_PARTS`), within ``timeout`` seconds if given;
    return the size and the CRC-32C of what was sent."""
    from fsspec.asyn import sync

    return sync(fs.loop, _upload, fs, local, remote, part, at_once, timeout=timeout)  # type: ignore[no-any-return]


async def _upload(fs: Any, local: str, remote: str, part: int, at_once: int) -> tuple[int, int]:
    bucket, key, _ = fs.split_path(remote)
    where = {"Bucket": bucket, "Key": key}
    size = os.path.getsize(local)
    part = part_size(size, part)
    count = max(1, -(-size // part))
    upload = await fs._call_s3("create_multipart_upload", ChecksumAlgorithm="CRC32C", **where)
    where["UploadId"] = upload["UploadId"]
    slots = asyncio.Semaphore(at_once)
    fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)

    checksums: dict[int, tuple[int, int]] = {}  # part number: (CRC-32C, size)

    def read(number: int) -> tuple[bytes, str]:
        offset = (number - 1) * part
        body = os.pread(fd, min(part, size - offset), offset)
        crc = crc_of(body)
        checksums[number] = (crc, len(body))
        return body, base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")

    async def send(number: int) -> dict[str, Any]:
        async with slots:  # read inside the slot: at most ``at_once`` parts in memory
            body, checksum = await asyncio.to_thread(read, number)
            sent = await fs._call_s3(
                "upload_part", PartNumber=number, Body=body, ChecksumCRC32C=checksum, **where
            )
        return {"PartNumber": number, "ETag": sent["ETag"], "ChecksumCRC32C": checksum}

    sends = [asyncio.ensure_future(send(n)) for n in range(1, count + 1)]
    try:
        parts = await asyncio.gather(*sends)
        await fs._call_s3("complete_multipart_upload", MultipartUpload={"Parts": parts}, **where)
    except BaseException:
        # Also when cancelled (a timeout): the parts sent are kept, and billed, until aborted.
        for pending in sends:
            pending.cancel()
        await asyncio.shield(_abort(fs, where, sends))
        raise
    finally:
        os.close(fd)
    fs.invalidate_cache(remote)
    ordered = [checksums[n] for n in range(1, count + 1)]
    return sum(n for _, n in ordered), combine_parts(ordered)


async def _abort(fs: Any, where: dict[str, Any], sends: Sequence[asyncio.Future[Any]]) -> None:
    """Abort once no part is in flight any more (a part that lands after the abort would
    stay)."""
    await asyncio.gather(*sends, return_exceptions=True)
    try:
        await fs._call_s3("abort_multipart_upload", **where)
    except Exception:
        pass  # best effort: a lifecycle rule on the bucket sweeps what is left
