"""Fault 3: the disk fills up under a checkpoint write.

Two small disks, the same tests: a real 4 MiB tmpfs mounted by the test (root only; skipped with
the reason otherwise) and ``enospc://``, an fsspec filesystem that runs out of space at byte N
(see faults_fs.py), which also takes taskpoint's generic fsspec path. A write that does not fit
raises `CheckpointError` naming the cause, frees what it wrote, and leaves the previous version
committed and readable; an async writer's failure surfaces at the next write and at `wait()`;
the engine records the attempt's error where `taskpoint show` prints it.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faults_fs
import pytest
from faults_procs import DEADLINE, tp_env
from faults_stats import record

from taskpoint import Checkpoint, CheckpointError

HERE = Path(__file__).resolve().parent
MiB = 1 << 20
DISK = 4 * MiB
TOO_BIG = 5 * MiB


@dataclass
class SmallDisk:
    kind: str  # "tmpfs" | "enospc"
    path: Path  # where its files really are

    def url(self, name: str) -> str:
        return str(self.path / name) if self.kind == "tmpfs" else faults_fs.url(self.path / name)

    def free(self) -> int | None:
        """Bytes still free (``None``: not measurable)."""
        if self.kind == "tmpfs":
            st = os.statvfs(self.path)
            return st.f_bavail * st.f_frsize
        return faults_fs.FullDiskFS.budget

    def fill(self, leave: int) -> None:
        """Take space until only ``leave`` bytes are free."""
        if self.kind == "enospc":
            faults_fs.FullDiskFS.budget = leave
            return
        free = self.free()
        assert free is not None and free >= leave
        with open(self.path / "filler", "ab") as f:
            f.write(b"\0" * (free - leave))

    def unfill(self) -> None:
        if self.kind == "enospc":
            faults_fs.FullDiskFS.budget = DISK
        else:
            (self.path / "filler").unlink(missing_ok=True)

    def env(self) -> dict[str, str]:
        """Environment for a child process to see the same disk."""
        if self.kind == "tmpfs":
            return {}
        return {"TASKPOINT_TEST_DISK_BYTES": str(faults_fs.FullDiskFS.budget)}


def _mount_tmpfs(path: Path) -> str | None:
    """Mount a 4 MiB tmpfs at ``path``; return why not if that is impossible."""
    if os.geteuid() != 0:
        return "not root: cannot mount a tmpfs (the enospc:// variant covers disk full)"
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return f"mount -t tmpfs not permitted here ({done.stderr.strip()}); enospc:// covers it"
    return None


@pytest.fixture(params=["tmpfs", "enospc"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmallDisk]:
    path = tmp_path / "disk"
    if request.param == "tmpfs":
        why = _mount_tmpfs(path)
        if why is not None:
            pytest.skip(why)
        try:
            yield SmallDisk("tmpfs", path)
        finally:
            if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(path)], capture_output=True)
        return
    faults_fs.register()
    path.mkdir()
    faults_fs.FullDiskFS.budget = DISK
    try:
        yield SmallDisk("enospc", path)
    finally:
        faults_fs.FullDiskFS.budget = None


def _content(step: int, size: int) -> bytes:
    head = f"step {step} ".encode()
    return (head * (size // len(head) + 1))[:size]


def _write(cp: Checkpoint, kind: str, step: int, size: int, src: Path, blocking: bool = True):
    """Write a version of ``kind`` (bytes, file, dir) whose content is fixed by step and size."""
    data = _content(step, size)
    if kind == "bytes":
        return cp.write(data, step=step, blocking=blocking)
    root = src / f"src-{step}"
    root.mkdir(parents=True)
    if kind == "file":
        (root / "state.bin").write_bytes(data)
        return cp.save(root / "state.bin", step=step, blocking=blocking)
    (root / "sub").mkdir()
    (root / "sub" / "state.bin").write_bytes(data)
    (root / "step.txt").write_text(str(step))
    return cp.save(root, step=step, blocking=blocking)


def _check_intact(cp: Checkpoint, kind: str, step: int, size: int, scratch: Path) -> None:
    """The latest committed version is exactly ``step`` and reads back without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        latest = cp.latest()
        assert latest is not None and latest.step == step
        out = cp.restore(scratch / f"check-{step}-{os.urandom(4).hex()}")
        assert out is not None
        if kind == "bytes":
            assert cp.read() == _content(step, size)
        elif kind == "file":
            assert (out / "state.bin").read_bytes() == _content(step, size)
        else:
            assert (out / "sub" / "state.bin").read_bytes() == _content(step, size)
            assert (out / "step.txt").read_text() == str(step)


def _uncommitted(disk: SmallDisk, name: str) -> list[str]:
    """Entries under the scope's ``v/`` that belong to no committed version (an object store
    keeps a committed version's exclusive reservation, ``<id>.writer``, beside it)."""
    vdir = disk.path / name / "v"
    names = os.listdir(vdir)
    committed = {n.removesuffix(".manifest.json") for n in names if n.endswith(".manifest.json")}
    return sorted(
        n
        for n in names
        if n.removesuffix(".manifest.json").removesuffix(".writer") not in committed
    )


def _assert_names_enospc(exc: BaseException) -> None:
    text = str(exc)
    assert "No space left" in text or "ENOSPC" in text, text
    chain, seen = exc, 0
    while chain is not None and seen < 10:
        if isinstance(chain, OSError) and chain.errno == errno.ENOSPC:
            return
        chain, seen = chain.__cause__ or chain.__context__, seen + 1
    raise AssertionError(f"no OSError(ENOSPC) behind {exc!r}")


@pytest.mark.parametrize("kind", ["bytes", "file", "dir"])
def test_sync_write_that_does_not_fit_fails_and_keeps_the_previous_version(disk, kind, tmp_path):
    cp = Checkpoint.open(disk.url("scope"), keep=2)
    _write(cp, kind, 1, 1000, tmp_path / "src")
    free_before = disk.free()
    with pytest.raises(CheckpointError) as failure:
        _write(cp, kind, 2, TOO_BIG, tmp_path / "src")
    record("enospc")
    _assert_names_enospc(failure.value)
    assert disk.url("scope") in str(failure.value)  # names the scope too
    _check_intact(cp, kind, 1, 1000, tmp_path)
    assert [v.step for v in cp.versions()] == [1]
    assert _uncommitted(disk, "scope") == []  # the partial payload was deleted at once
    if disk.kind == "tmpfs":
        assert disk.free() == free_before  # and its space is free again
    _write(cp, kind, 3, 2000, tmp_path / "src")  # the disk is usable again
    _check_intact(cp, kind, 3, 2000, tmp_path)
    cp.close()


@pytest.mark.parametrize("kind", ["bytes", "file", "dir"])
def test_async_write_failure_surfaces_at_the_next_write_and_at_wait(disk, kind, tmp_path):
    cp = Checkpoint.open(disk.url("scope"), keep=2)
    _write(cp, kind, 1, 1000, tmp_path / "src")
    for surface in ("write", "wait"):
        try:
            future = _write(cp, kind, 2, TOO_BIG, tmp_path / f"src-{surface}", blocking=False)
        except CheckpointError as exc:
            # A local store snapshots files into staging on the same (full) disk, so the
            # snapshot itself fails before save() returns: a CheckpointError at once.
            assert disk.kind == "tmpfs" and kind != "bytes", exc
            _assert_names_enospc(exc)
        else:
            error = future.exception(timeout=DEADLINE)
            assert isinstance(error, CheckpointError)
            _assert_names_enospc(error)
            with pytest.raises(CheckpointError, match="earlier async checkpoint write failed") as e:
                if surface == "write":
                    cp.write(b"next")
                else:
                    cp.wait(timeout=DEADLINE)
            _assert_names_enospc(e.value)
        record("enospc")
        _check_intact(cp, kind, 1, 1000, tmp_path)
        assert _uncommitted(disk, "scope") == []
        staging = disk.path / "scope" / ".staging"
        if staging.exists():  # no partial snapshot is left to fill the disk
            assert [p for p in staging.rglob("*") if p.is_file()] == []
    cp.wait(timeout=DEADLINE)  # the error was reported once; the writer is healthy again
    _write(cp, kind, 3, 2000, tmp_path / "src-after")
    _check_intact(cp, kind, 3, 2000, tmp_path)
    cp.close()


def test_running_out_at_any_byte_of_a_version_leaves_nothing_behind(disk, tmp_path):
    """The disk fills at byte N of the new version, for N across its payload and manifest."""
    cp = Checkpoint.open(disk.url("scope"), keep=2)
    cp.write(_content(1, 1000), step=1)
    size = 64 * 1024
    if disk.kind == "enospc":
        before = disk.free()
        cp.write(_content(2, size), step=2)
        used = before - disk.free()  # payload + manifest of one version
        points = sorted({0, 1, size // 2, size - 1, size, size + 1, used - 1})
    else:
        # tmpfs counts whole pages: leave room for the payload but not for the manifest, and
        # room for half the payload.
        cp.write(_content(2, size), step=2)
        points = [size // 2, size]
    for n in points:
        disk.fill(n)
        with pytest.raises(CheckpointError) as failure:
            cp.write(_content(99, size), step=99)
        record("enospc")
        _assert_names_enospc(failure.value)
        disk.unfill()
        _check_intact(cp, "bytes", 2, size, tmp_path)
        assert [v.step for v in cp.versions()] == [1, 2]
        assert _uncommitted(disk, "scope") == [], f"failure at byte {n} left garbage"
    cp.close()


def _cli(home: Path, disk: SmallDisk, *args: str) -> subprocess.CompletedProcess[str]:
    """`taskpoint ARGS` in a process that knows the enospc:// filesystem."""
    return subprocess.run(
        [sys.executable, str(HERE / "faults_enospc_cli.py"), *args],
        capture_output=True,
        text=True,
        env=tp_env(home, **disk.env()),
        timeout=DEADLINE,
    )


def test_engine_records_the_attempts_disk_full_error(disk, tp_home, tmp_path):
    flow = HERE / "workflows" / "fullflow.py"
    storage = disk.url("blobs")
    ran = _cli(
        tp_home,
        disk,
        "--storage",
        storage,
        "run",
        str(flow),
        "fill",
        "--step-size",
        "1000",
        "--big-size",
        str(TOO_BIG),
        "--json",
    )
    record("enospc")
    assert ran.returncode == 1, ran.stderr
    data = json.loads(ran.stdout)
    assert data["status"] == "failed"
    (node,) = data["nodes"]
    # Not a RecoverableError: the node fails at once, its attempt carries the cause.
    assert [a["status"] for a in node["attempts"]] == ["failed"]
    error = node["attempts"][0]["error"]
    assert error.startswith("CheckpointError:") and "No space left" in error, error
    assert [c["step"] for c in node["checkpoints"]] == [1]  # the previous version is committed
    assert node["attempts"][0]["checkpoint_at_end"] == node["checkpoints"][0]["id"]

    shown = _cli(tp_home, disk, "show", data["id"])
    assert shown.returncode == 0, shown.stderr
    assert "No space left" in shown.stdout
    restored = _cli(
        tp_home, disk, "checkpoints", data["id"], "fill", "--restore", str(tmp_path / "out")
    )
    assert restored.returncode == 0, restored.stderr
    assert (tmp_path / "out" / "data").read_bytes() == b"s" * 1000
