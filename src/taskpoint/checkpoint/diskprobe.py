"""Which way large local writes go on each filesystem, buffered or O_DIRECT: measured, not assumed.

Neither is faster everywhere. O_DIRECT saves the copy into the page cache, which on some machines
costs more than the disk; on others the disk takes buffered writes faster, or the filesystem
refuses O_DIRECT. And O_DIRECT from memory that is not page aligned (a ``bytes`` object never is)
costs a copy into a bounce buffer first: on tmpfs that doubles the work. So the first write of at
least `PROBE_MIN` bytes into a filesystem (told apart by ``st_dev``) from page-aligned memory, or
from other memory, measures both ways for that kind of memory: it writes a sample of its own bytes
(`PROBE_BYTES`) each way into an unnamed temp file beside the target, in the order direct,
buffered, buffered, direct (a drift of the disk's speed during the probe hits both alike), each run
with its fsync (more rounds on a fast filesystem; each way is judged by its fastest run), and every
later large write of that kind into that filesystem takes the faster way. That costs about ``4 x
PROBE_BYTES`` of writes (on a disk) once per process, filesystem and kind of memory; smaller writes
before it go buffered. ``TASKPOINT_WRITE_MODE=buffered|direct`` skips the probe (``auto``, the
default, probes); ``direct`` where the filesystem refuses O_DIRECT writes buffered.

The choice is kept in memory only (forked children inherit it), not in the store: the probe
costs well under a second once per process, while a stored result would outlive what it
measured (a volume attached to another machine, a store on a network filesystem shared by
machines with different disks) and would be one more file in the store for sweeps and readers
to account for. The temp files are unnamed (``O_TMPFILE``) where the filesystem allows it, else
unlinked right after they are created: a killed probe leaves nothing behind.

A short probe does not tell how a disk takes writes of hundreds of MiB: buffered writes that fill
the page cache get throttled, and a virtual disk may take large direct writes faster than its
probe suggested. So the first two writes of at least `TRIAL_MIN` bytes of each kind into a
filesystem are trials, one each way (the probe's choice first), timed with their fsync, and
later writes that large take the way that wrote faster per byte. The trials are real writes:
they cost nothing but a possibly slower way once.

`probe_write_mode` and `chosen_write_mode` are public: ``python -m benchmarks`` prints what this
machine's disks measure and what taskpoint chose.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from taskpoint.checkpoint.largewrite import ALIGN, buffer_address, write_buffered, write_direct

ENV_VAR = "TASKPOINT_WRITE_MODE"
MODES = ("auto", "buffered", "direct")
PROBE_MIN = 64 << 20  # the first write this large into a filesystem probes it
PROBE_BYTES = 32 << 20  # one run of the probe
PROBE_MIN_S = 0.1  # a filesystem this fast per round (tmpfs) gets more rounds, up to
PROBE_ROUNDS = 3  # ... this many
TRIAL_MIN = 256 << 20  # writes this large are timed: the first two try each way once
_ORDER = ("direct", "buffered", "buffered", "direct")

log = logging.getLogger("taskpoint.checkpoint")
_chosen: dict[tuple[int, bool], ProbeResult] = {}  # (st_dev, page aligned) -> what was found
_trials: dict[tuple[int, bool], dict[str, float]] = {}  # same key -> way -> seconds per byte
trial_clock: Callable[[], float] = time.perf_counter  # what trials are timed by (tests swap it)
_lock = threading.Lock()
_warned: set[str] = set()


@dataclass(frozen=True)
class ProbeResult:
    """What a probe measured: seconds of the fastest run of each way (``direct_s`` is None
    where the filesystem refused O_DIRECT) and the way chosen, ``"buffered"`` or ``"direct"``."""

    mode: str
    buffered_s: float
    direct_s: float | None
    run_bytes: int  # bytes written per run

    def mib_per_s(self, mode: str) -> float | None:
        seconds = self.buffered_s if mode == "buffered" else self.direct_s
        if not seconds or seconds <= 0:
            return None
        return self.run_bytes / seconds / (1 << 20)


def configured_mode() -> str:
    """``TASKPOINT_WRITE_MODE``: ``auto`` (default), ``buffered`` or ``direct``. Another value
    is reported once and read as ``auto``."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if value in MODES:
        return value
    if value not in _warned:
        _warned.add(value)
        log.warning(
            "%s=%r is not one of %s; probing the disk as with 'auto'",
            ENV_VAR,
            value,
            ", ".join(MODES),
        )
    return "auto"


def probe_write_mode(
    directory: str | os.PathLike[str],
    sample: bytes | bytearray | memoryview | None = None,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> ProbeResult:
    """Measure buffered and O_DIRECT writes of ``sample`` (default: `PROBE_BYTES` of random
    bytes in page-aligned memory) into the filesystem of ``directory`` now, and return which
    was faster. Nothing is cached and nothing left behind.

    A round is four runs in the order direct, buffered, buffered, direct, each timed from
    before the write to after its fsync by ``clock`` (called twice per run; a direct run the
    filesystem refuses calls it once and ends the direct runs). Rounds repeat, up to
    `PROBE_ROUNDS`, while they take less than `PROBE_MIN_S` (a fast filesystem: a short run is
    easily thrown off by the scheduler). Each way is judged by its fastest run: on a busy
    machine noise only ever adds time."""
    if sample is None:
        sample = _aligned_sample(PROBE_BYTES)
    view = memoryview(sample).cast("B")
    view = view[: len(view) - len(view) % ALIGN]
    if not view:
        raise ValueError(f"a probe sample needs at least {ALIGN} bytes")
    runs: dict[str, list[float]] = {"buffered": [], "direct": []}
    refused = False
    for _ in range(PROBE_ROUNDS):
        spent = 0.0
        for mode in _ORDER:
            if mode == "direct" and refused:
                continue
            seconds = _timed_run(os.fspath(directory), mode, view, clock)
            if seconds is None:
                refused = True
            else:
                runs[mode].append(seconds)
                spent += seconds
        if spent >= PROBE_MIN_S:
            break
    buffered_s = min(runs["buffered"])
    direct_s = None if refused else min(runs["direct"])
    faster = "direct" if direct_s is not None and direct_s < buffered_s else "buffered"
    return ProbeResult(faster, buffered_s, direct_s, len(view))


def chosen_write_mode(
    path: str | os.PathLike[str], *, aligned: bool = True, size: int = 0
) -> str | None:
    """How large writes (of ``size`` bytes) into the filesystem of ``path`` from page-aligned
    memory (``aligned=False``: from any other memory, a ``bytes`` object for one) go in this
    process: the override of ``TASKPOINT_WRITE_MODE``, else what its probe chose, or for a
    ``size`` of at least `TRIAL_MIN` what the trials chose; None until a write probed it."""
    forced = configured_mode()
    if forced != "auto":
        return forced
    key = (os.stat(path).st_dev, aligned)
    result = _chosen.get(key)
    if result is None:
        return None
    return _large_mode(key, result) if size >= TRIAL_MIN else result.mode


def write_mode(fd: int, data: memoryview, directory: str | None = None) -> str:
    """The way to write ``data`` into the new file ``fd``: the override, else the choice for
    its filesystem and the kind of memory ``data`` is in, probed now (with the leading bytes
    of ``data``, in ``directory`` or the file's own) when ``data`` is large enough and it was
    never measured, else buffered."""
    forced = configured_mode()
    if forced != "auto":
        return forced
    key = _key(fd, data)
    device = key[0]
    result = _chosen.get(key)
    if result is None and len(data) >= PROBE_MIN:
        with _lock:  # one probe per filesystem, however many threads write to it
            result = _chosen.get(key)
            if result is None:
                result = _probe_for(device, data[:PROBE_BYTES], directory or _directory_of(fd))
                if result is not None:
                    _chosen[key] = result
    if result is None:
        return "buffered"
    return _large_mode(key, result) if len(data) >= TRIAL_MIN else result.mode


def is_trial(fd: int, data: memoryview) -> bool:
    """Whether writing ``data`` into ``fd`` now is a trial, to be timed (`note_trial`)."""
    if len(data) < TRIAL_MIN or configured_mode() != "auto":
        return False
    key = _key(fd, data)
    result = _chosen.get(key)
    return result is not None and result.direct_s is not None and len(_trials.get(key, {})) < 2


def note_trial(fd: int, data: memoryview, mode: str, seconds: float) -> None:
    """Record how long a trial write of ``data`` took ``mode`` (with its fsync)."""
    key = _key(fd, data)
    with _lock:
        _trials.setdefault(key, {}).setdefault(mode, seconds / max(len(data), 1))
    log.debug("write trial: %s, %.0f MiB/s", mode, len(data) / max(seconds, 1e-9) / (1 << 20))


def _key(fd: int, data: memoryview) -> tuple[int, bool]:
    """What choices are kept by: the file's filesystem, and whether ``data`` is page aligned."""
    return (os.fstat(fd).st_dev, (buffer_address(data) or 1) % ALIGN == 0)


def _large_mode(key: tuple[int, bool], result: ProbeResult) -> str:
    """The way for a write of at least `TRIAL_MIN` bytes: an untried way while the trials
    last (the probe's choice first), then the one that wrote faster."""
    if result.direct_s is None:
        return result.mode  # O_DIRECT refused here: nothing to try
    trials = _trials.get(key, {})
    other = "buffered" if result.mode == "direct" else "direct"
    for mode in (result.mode, other):
        if mode not in trials:
            return mode
    return min(trials, key=trials.__getitem__)


def forget() -> None:
    """Drop every choice made so far (the next large write into each filesystem probes it)."""
    _chosen.clear()
    _trials.clear()


def _probe_for(device: int, sample: memoryview, directory: str | None) -> ProbeResult | None:
    if directory is None:
        return None
    try:
        if os.stat(directory).st_dev != device:
            return None
        result = probe_write_mode(directory, sample)
    except OSError as exc:  # e.g. a full disk: the write itself will say so
        log.debug("write probe in %s failed (%s): writing buffered", directory, exc)
        return ProbeResult("buffered", 0.0, None, 0)
    log.debug(
        "write probe in %s: buffered %.1f ms, direct %s: %s",
        directory,
        result.buffered_s * 1e3,
        "refused" if result.direct_s is None else f"{result.direct_s * 1e3:.1f} ms",
        result.mode,
    )
    return result


def _timed_run(
    directory: str, mode: str, view: memoryview, clock: Callable[[], float]
) -> float | None:
    fd = _scratch_file(directory)
    try:
        start = clock()
        if mode == "direct":
            if not write_direct(fd, view):
                return None
        else:
            write_buffered(fd, view)
        os.fsync(fd)
        return clock() - start
    finally:
        os.close(fd)


def _scratch_file(directory: str) -> int:
    """A new file in ``directory``'s filesystem that vanishes when closed."""
    flags = os.O_WRONLY | os.O_CLOEXEC
    if hasattr(os, "O_TMPFILE"):
        try:
            return os.open(directory, flags | os.O_TMPFILE, 0o600)
        except OSError:
            pass  # a filesystem without unnamed files
    path = os.path.join(directory, f".taskpoint-probe-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    os.unlink(path)
    return fd


def _aligned_sample(size: int) -> memoryview:
    """``size`` random-looking bytes in page-aligned memory (an anonymous mapping)."""
    import mmap

    block = os.urandom(1 << 20)
    sample = memoryview(mmap.mmap(-1, size))
    for pos in range(0, size, len(block)):
        sample[pos : pos + len(block)] = block[: size - pos]
    return sample


def _directory_of(fd: int) -> str | None:
    """The directory of the open file ``fd`` (Linux: through /proc), or None."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return os.path.dirname(path) if path.startswith("/") else None


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a parent thread may have been probing at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
