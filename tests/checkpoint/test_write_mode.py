"""Large local writes go buffered or O_DIRECT, whichever a probe measured faster on the disk.

The probe (``diskprobe``) times both ways with an injected clock here, so its choice is
deterministic; ``TASKPOINT_WRITE_MODE`` overrides it; a filesystem that refuses O_DIRECT gets
buffered writes. Whatever the way, a version holds exactly the bytes written, and a writer killed
in the middle of a large write never leaves a torn committed version.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from taskpoint import Checkpoint
from taskpoint.checkpoint import diskprobe, largewrite, localio

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _fresh_choices(monkeypatch):
    monkeypatch.delenv(diskprobe.ENV_VAR, raising=False)
    diskprobe.forget()
    yield
    diskprobe.forget()


def _scripted(*durations: float):
    """A clock whose runs take ``durations`` seconds, in the probe's order of runs."""
    ticks, now = [], 0.0
    for seconds in durations:
        ticks += [now, now + seconds]
        now += seconds
    it = iter(ticks)
    return lambda: next(it)


def _fake_direct(refuse: bool = False):
    """Stands in for O_DIRECT, which the test machine's filesystem may not have."""

    def write_direct(fd: int, view: memoryview) -> int:
        if refuse:
            return 0
        largewrite.pwrite_all(fd, view, 0)
        return len(view)

    return write_direct


# ------------------------------------------------------------------------------ the probe
@pytest.mark.parametrize(
    ("durations", "expected"),
    [
        ((3.0, 1.0, 1.0, 3.0), "buffered"),  # direct, buffered, buffered, direct
        ((1.0, 2.0, 2.5, 1.5), "direct"),
        ((1.0, 1.0, 1.0, 1.0), "buffered"),  # a tie keeps the way every filesystem has
    ],
)
def test_probe_chooses_by_measured_time(tmp_path, monkeypatch, durations, expected):
    monkeypatch.setattr(diskprobe, "write_direct", _fake_direct())
    result = diskprobe.probe_write_mode(tmp_path, os.urandom(MiB), clock=_scripted(*durations))
    assert result.mode == expected
    assert result.direct_s == min(durations[0], durations[3])  # the fastest run of each way
    assert result.buffered_s == min(durations[1], durations[2])
    assert result.run_bytes == MiB
    assert os.listdir(tmp_path) == []  # its files were unnamed, or unlinked at once


def test_fast_filesystems_get_more_rounds(tmp_path, monkeypatch):
    """Runs of a few ms (tmpfs) are easily thrown off: rounds repeat up to PROBE_ROUNDS while
    they are short, and one slow run (a scheduler hiccup) does not decide."""
    monkeypatch.setattr(diskprobe, "write_direct", _fake_direct())
    fast = (0.004, 0.003, 0.003, 0.004)
    hiccup = (0.004, 0.003, 0.090, 0.004)  # a buffered run descheduled
    clock = _scripted(*fast, *hiccup, *fast)
    result = diskprobe.probe_write_mode(tmp_path, os.urandom(MiB), clock=clock)
    assert result.mode == "buffered"
    assert (result.buffered_s, result.direct_s) == (pytest.approx(0.003), pytest.approx(0.004))
    assert diskprobe.PROBE_ROUNDS == 3  # the clock above holds exactly three rounds


def test_probe_leaves_nothing_without_unnamed_files(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    monkeypatch.setattr(diskprobe, "write_direct", _fake_direct())
    diskprobe.probe_write_mode(tmp_path, os.urandom(MiB), clock=_scripted(1, 1, 1, 1))
    assert os.listdir(tmp_path) == []


def test_refused_o_direct_probes_as_buffered(tmp_path, monkeypatch):
    monkeypatch.setattr(largewrite, "_enable_direct", lambda fd: None)  # as old tmpfs does
    result = diskprobe.probe_write_mode(tmp_path, os.urandom(MiB))
    assert (result.mode, result.direct_s) == ("buffered", None)
    assert result.buffered_s > 0


def test_tmpfs_probe_is_consistent_with_what_it_allows():
    shm = "/dev/shm"
    if not os.path.isdir(shm) or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm")
    result = diskprobe.probe_write_mode(shm, os.urandom(MiB))
    try:
        fd = os.open(shm, os.O_WRONLY | os.O_TMPFILE | os.O_DIRECT, 0o600)
    except (AttributeError, OSError):
        assert result.direct_s is None and result.mode == "buffered"
    else:
        os.close(fd)
        assert result.direct_s is not None


def test_first_large_write_probes_once_per_filesystem(tmp_path, monkeypatch):
    calls = []

    def probe(directory, sample=None, *, clock=None):
        calls.append((directory, len(sample)))
        return diskprobe.ProbeResult("direct", 2.0, 1.0, len(sample))

    monkeypatch.setattr(diskprobe, "probe_write_mode", probe)
    monkeypatch.setattr(diskprobe, "PROBE_MIN", 4 * MiB)
    assert diskprobe.chosen_write_mode(tmp_path, aligned=False) is None
    memory = mmap.mmap(-1, 6 * MiB)
    small = memoryview(memory)[48 : 48 + MiB]  # not page aligned (as a bytes object's data)
    large = memoryview(memory)[48:]
    with open(tmp_path / "f", "wb") as handle:
        fd = handle.fileno()
        assert diskprobe.write_mode(fd, small) == "buffered"  # too small to probe
        assert calls == []
        assert diskprobe.write_mode(fd, large) == "direct"
        assert diskprobe.write_mode(fd, large) == "direct"
        assert diskprobe.write_mode(fd, small) == "direct"  # the choice holds for all sizes
        # with the file's own directory and the leading bytes of the write
        assert calls == [(os.path.realpath(tmp_path), min(len(large), diskprobe.PROBE_BYTES))]
        assert diskprobe.chosen_write_mode(tmp_path, aligned=False) == "direct"
        # page-aligned memory needs no bounce copy for O_DIRECT: measured on its own
        assert diskprobe.chosen_write_mode(tmp_path) is None
        aligned = memoryview(memory)[4096:]
        assert diskprobe.write_mode(fd, aligned) == "direct"
        assert len(calls) == 2
        assert diskprobe.write_mode(fd, aligned) == "direct"
    assert len(calls) == 2
    assert diskprobe.chosen_write_mode(tmp_path) == "direct"


def test_writes_of_hundreds_of_mib_try_each_way_then_keep_the_faster(tmp_path, monkeypatch):
    """The probe chose buffered; the first two writes of at least TRIAL_MIN are one each way
    (the probe's first), timed with their fsync; direct wrote faster per byte, so later ones
    that large go direct, while smaller ones keep the probe's choice."""
    monkeypatch.setattr(
        diskprobe,
        "probe_write_mode",
        lambda directory, sample=None, *, clock=None: diskprobe.ProbeResult(
            "buffered", 1.0, 2.0, len(sample)
        ),
    )
    monkeypatch.setattr(diskprobe, "PROBE_MIN", 4 * MiB)
    monkeypatch.setattr(diskprobe, "TRIAL_MIN", 8 * MiB)
    monkeypatch.setattr(diskprobe, "trial_clock", _scripted(3.0, 1.0))  # buffered, then direct
    ways: list[tuple[str, int]] = []
    fake_direct, real_buffered = _fake_direct(), localio.write_buffered

    def direct(fd, view):
        ways.append(("direct", len(view)))
        return fake_direct(fd, view)

    def buffered(fd, view, offset=0):
        if len(view):
            ways.append(("buffered", len(view)))
        real_buffered(fd, view, offset)

    monkeypatch.setattr(localio, "write_direct", direct)
    monkeypatch.setattr(localio, "write_buffered", buffered)
    memory = mmap.mmap(-1, 8 * MiB)
    memory[:] = os.urandom(8 * MiB)
    for n, size in enumerate((8, 8, 8, 6, 8)):
        with open(tmp_path / f"f{n}", "wb") as handle:
            localio.write_large(handle.fileno(), memoryview(memory)[: size * MiB])
        assert (tmp_path / f"f{n}").read_bytes() == memory[: size * MiB]
    assert [way for way, _ in ways] == ["buffered", "direct", "direct", "buffered", "direct"]
    assert diskprobe.chosen_write_mode(tmp_path, size=8 * MiB) == "direct"
    assert diskprobe.chosen_write_mode(tmp_path) == "buffered"  # what the probe chose


@pytest.mark.parametrize("mode", ["buffered", "direct"])
def test_env_override_skips_the_probe(tmp_path, monkeypatch, mode):
    def probe(*args, **kwargs):
        raise AssertionError("probed despite the override")

    monkeypatch.setattr(diskprobe, "probe_write_mode", probe)
    monkeypatch.setattr(diskprobe, "PROBE_MIN", MiB)
    monkeypatch.setenv(diskprobe.ENV_VAR, mode.upper())
    with open(tmp_path / "f", "wb") as handle:
        assert diskprobe.write_mode(handle.fileno(), memoryview(bytes(2 * MiB))) == mode
    assert diskprobe.chosen_write_mode(tmp_path) == mode
    assert diskprobe.chosen_write_mode(tmp_path, aligned=False) == mode


def test_unknown_env_value_warns_once_and_probes(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(diskprobe.ENV_VAR, "fastest")
    monkeypatch.setattr(diskprobe, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="taskpoint.checkpoint"):
        assert diskprobe.configured_mode() == "auto"
        assert diskprobe.configured_mode() == "auto"
    assert [r.getMessage() for r in caplog.records].count(
        "TASKPOINT_WRITE_MODE='fastest' is not one of auto, buffered, direct; probing the disk "
        "as with 'auto'"
    ) == 1


# ------------------------------------------------------------------------------ the writes
def _sources(size: int, offset: int) -> dict[str, object]:
    data = os.urandom(size + offset)
    aligned = mmap.mmap(-1, size + offset)
    aligned[:] = data
    return {
        "page-aligned": memoryview(aligned)[offset:],
        "bytes": data[offset:],
        "bytearray": bytearray(data)[offset:],
    }


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of a few blocks: every path runs with several pieces in flight, in little time."""
    monkeypatch.setattr(largewrite, "DIRECT_PIECE", 1 * MiB)
    monkeypatch.setattr(largewrite, "BOUNCE_PIECE", MiB // 2)
    monkeypatch.setattr(largewrite, "BUFFERED_PIECE", MiB // 2)
    monkeypatch.setattr(largewrite, "_bounce_sets", [])


@pytest.mark.parametrize("mode", ["buffered", "direct"])
@pytest.mark.parametrize("offset", [0, 7])
def test_both_modes_write_identical_bytes(tmp_path, monkeypatch, small_pieces, mode, offset):
    """Several pieces in flight and a tail that is not a whole block, from every kind of
    source (direct: straight from aligned memory, else through the bounce buffers)."""
    monkeypatch.setenv(diskprobe.ENV_VAR, mode)
    size = localio.DIRECT_MIN + 3 * largewrite.DIRECT_PIECE + 4097
    with Checkpoint.open(tmp_path / "ckpt", keep=1) as cp:
        for name, source in _sources(size, offset).items():
            expected = bytes(memoryview(source))  # type: ignore[arg-type]
            cp.write(source)  # type: ignore[arg-type]
            assert cp.read() == expected, name
            out = cp.restore(tmp_path / f"out-{mode}-{offset}-{name}")
            assert out is not None and (out / "data").read_bytes() == expected, name


def test_direct_without_buffer_addresses_copies_by_slices(tmp_path, monkeypatch, small_pieces):
    """An interpreter that does not tell buffer addresses still writes unaligned sources."""
    monkeypatch.setattr(largewrite, "buffer_address", lambda view: None)
    data = os.urandom(5 * largewrite.BOUNCE_PIECE + 100)
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        done = largewrite.write_direct(fd, memoryview(data))
        largewrite.write_buffered(fd, memoryview(data)[done:], done)
    finally:
        os.close(fd)
    assert path.read_bytes() == data


def test_forced_direct_where_refused_writes_buffered(tmp_path, monkeypatch):
    monkeypatch.setenv(diskprobe.ENV_VAR, "direct")
    monkeypatch.setattr(largewrite, "_enable_direct", lambda fd: None)
    data = os.urandom(localio.DIRECT_MIN * 3 + 1)
    with Checkpoint.open(tmp_path / "ckpt") as cp:
        cp.write(data)
        assert cp.read() == data


def test_buffered_path_flushes_and_drops_every_range_it_writes(tmp_path, monkeypatch, small_pieces):
    if not largewrite._can_sync_range():
        pytest.skip("no sync_file_range here")
    calls: list[tuple[int, int, int]] = []
    real = largewrite._sync_range

    def record(fd: int, offset: int, length: int, flags: int) -> None:
        calls.append((offset, length, flags))
        real(fd, offset, length, flags)

    monkeypatch.setattr(largewrite, "_sync_range", record)
    size = 5 * largewrite.BUFFERED_PIECE + 123
    data = os.urandom(size)
    with open(tmp_path / "f", "wb") as handle:
        largewrite.write_buffered(handle.fileno(), memoryview(data))
    waited = sorted((o, n) for o, n, flags in calls if flags & 4)  # SYNC_FILE_RANGE_WAIT_AFTER
    started = sorted((o, n) for o, n, flags in calls if flags == 2)
    pieces = [
        (o, min(largewrite.BUFFERED_PIECE, size - o))
        for o in range(0, size, largewrite.BUFFERED_PIECE)
    ]
    assert started == pieces and waited == pieces
    assert (tmp_path / "f").read_bytes() == data


def test_buffer_address_of_read_only_and_sliced_views():
    writable = bytearray(b"x" * 100)
    expected = ctypes.addressof(ctypes.c_char.from_buffer(writable))
    assert largewrite.buffer_address(memoryview(writable)) == expected
    assert largewrite.buffer_address(memoryview(writable)[10:]) == expected + 10
    data = bytes(range(256)) * 4
    address = largewrite.buffer_address(memoryview(data)[5:])
    assert address is not None
    assert ctypes.string_at(address, 4) == data[5:9]


# ------------------------------------------------------------------------------ crashes
CHILD = Path(__file__).with_name("large_write_child.py")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["buffered", "direct", "auto"])
def test_killed_in_a_large_write_never_tears_a_version(tmp_path, mode):
    """SIGKILL at random moments of 64 MiB writes (a first one probes under ``auto``): every
    committed version reads back whole, and nothing of the probe is left in the scope."""
    rng = random.Random(16)
    url = str(tmp_path / "scope")
    size = 64 * MiB + 4097
    env = {**os.environ, diskprobe.ENV_VAR: mode}
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), url, str(size)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.2, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a torn version would be skipped with a warning
            cp = Checkpoint.open(url, readonly=True)
            latest = cp.latest()
            if latest is not None:
                assert cp.read() == bytes([latest.step % 251]) * size
            cp.close()
    leftovers = [p.name for p in Path(url).rglob("*") if "probe" in p.name]
    assert leftovers == []
