"""``Checkpoint.stats`` and the load/write hooks: what a scope object loaded and what its writes
cost the caller (read by the resume guard, the interval and the goodput ledger)."""

from __future__ import annotations

import pytest

from taskpoint import Checkpoint
from taskpoint.checkpoint import CheckpointHook


class Recorder(CheckpointHook):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def after_load(self, checkpoint, version):
        self.events.append(("load", version.id if version else None))

    def before_write(self, checkpoint, step):
        self.events.append(("before", step))


def test_loads_note_the_version_used_and_an_empty_scope_notes_none(tmp_path):
    cp = Checkpoint.open(tmp_path / "s")
    hook = Recorder()
    cp.add_hook(hook)
    assert cp.read() is None
    assert (cp.stats.loads, cp.stats.empty_loads, cp.stats.loaded) == (0, 1, None)
    first = cp.write(b"one", step=1)
    second = cp.write(b"two", step=2)
    assert cp.read() == b"two"
    assert cp.stats.loaded == second and cp.stats.loads == 1
    restored = cp.restore(tmp_path / "out", version=first.id)
    assert (restored / "data").read_bytes() == b"one"
    assert cp.stats.loaded == second  # the newest loaded stays: an older one does not hide it
    assert cp.read_with(lambda reader: reader.read(reader.size)) == b"two"
    assert cp.stats.loads == 3 and cp.stats.load_s > 0
    assert hook.events == [
        ("load", None),
        ("before", 1),
        ("before", 2),
        ("load", second.id),
        ("load", first.id),
        ("load", second.id),
    ]
    cp.close()


def test_writes_note_stall_and_commits_sync_and_async(tmp_path):
    cp = Checkpoint.open(tmp_path / "s", keep=5)
    version = cp.write(b"x" * 100_000, step=7)
    assert cp.stats.saves == 1 and cp.stats.commits == 1
    assert cp.stats.first_commit == version == cp.stats.last_commit
    assert cp.stats.stall_s >= cp.stats.commit_s > 0  # a sync write stalls for its commit
    future = cp.write(b"y" * 100_000, step=8, blocking=False)
    later = future.result()
    cp.wait()
    assert cp.stats.saves == 2 and cp.stats.commits == 2
    assert cp.stats.first_commit == version and cp.stats.last_commit == later
    assert cp.stats.last_commit_at is not None and cp.stats.first_save_at is not None
    cp.close()


def test_a_hook_refusing_a_write_writes_nothing(tmp_path):
    class Refuse(CheckpointHook):
        def before_write(self, checkpoint, step):
            raise RuntimeError(f"no step {step}")

    cp = Checkpoint.open(tmp_path / "s")
    cp.add_hook(Refuse())
    with pytest.raises(RuntimeError, match="no step 3"):
        cp.write(b"data", step=3)
    assert cp.latest() is None and cp.stats.saves == 0
    cp.close()
