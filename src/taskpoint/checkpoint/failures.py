"""What a storage failure is: an error to raise, or damage to one version to fall back from.

`storage_errors` turns whatever a store raises (OSError, botocore, aiohttp, ...) into
`CheckpointError` naming the action and the scope (`CheckpointTimeoutError` for a request past
its deadline); `is_damage` decides which failures while reading a version mean that version is bad
(warn, use the previous one) rather than that the storage or the machine is (raise).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from taskpoint.checkpoint.manifest import ManifestError
from taskpoint.checkpoint.safeopen import NotARegularFile
from taskpoint.checkpoint.storage import ChecksumMismatch
from taskpoint.errors import CheckpointError, CheckpointTimeoutError, TaskpointError


class CheckpointWarning(UserWarning):
    """A committed version could not be used; an older one was used instead."""


@contextmanager
def storage_errors(url: str, action: str) -> Iterator[None]:
    """Turn storage failures (OSError, botocore, aiohttp, ...) into `CheckpointError`."""
    try:
        yield
    except (TaskpointError, ManifestError, ChecksumMismatch):
        raise
    except FileNotFoundError:
        raise
    except TimeoutError as exc:  # a request past its deadline (``timeout=``), or the fs's own
        detail = str(exc) or type(exc).__name__
        message = f"could not {action} at {url}: timed out ({detail})"
        raise CheckpointTimeoutError(message) from exc
    except Exception as exc:
        raise CheckpointError(f"could not {action} at {url}: {describe(exc)}") from exc


# I/O errors of the machine or the connection, not of a version's content: raised, never taken
# for damage (falling back to an older version on a full disk would lose work for nothing).
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EIO,
    errno.ENOMEM,
    errno.EROFS,
    errno.EMFILE,
    errno.ENFILE,
    errno.EACCES,
    errno.EPERM,
    # A network error an HTTP client raises as a plain OSError (not a ConnectionError).
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EPIPE,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
}


def is_damage(exc: BaseException) -> bool:
    """Is ``exc``, raised while reading or materialising a version, damage to that version?

    Bad content shows as checksum/size mismatches, a non-regular or missing file, a manifest
    that describes an impossible tree (a name that is both a file and a directory, a path too
    long to create) or values that break the code that uses them. Connection failures, time-outs
    and a full or read-only disk are not: they are raised as storage errors.
    """
    if isinstance(exc, ChecksumMismatch | NotARegularFile | ManifestError | FileNotFoundError):
        return True
    if isinstance(exc, TimeoutError | ConnectionError | MemoryError | TaskpointError):
        return False
    if isinstance(exc, OSError):
        return exc.errno is not None and exc.errno not in _ENVIRONMENT_ERRNOS
    return isinstance(
        exc, ValueError | TypeError | KeyError | IndexError | RecursionError | OverflowError
    )


def describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"
