"""A succeeded node keeps only the checkpoint versions ``keep_checkpoints_on_success`` says
(default: the latest), so finished executions stop holding several full copies of a model."""

from __future__ import annotations

import pytest

from taskpoint import Checkpoint, RecoverableError, current_context, run, task
from taskpoint.engine import blobs


def scope_of(execution) -> Checkpoint:
    node = execution.nodes[0]
    url = blobs.checkpoint_url(execution.storage, execution.id, node.key)
    return Checkpoint.open(url, readonly=True)


def payload_dirs(execution) -> list[str]:
    from pathlib import Path

    node = execution.nodes[0]
    root = Path(blobs.checkpoint_url(execution.storage, execution.id, node.key)) / "v"
    return sorted(p.name for p in root.iterdir() if p.is_dir())


@pytest.mark.parametrize(
    ("option", "expected"),
    [("latest", ["0002-000003"]), (2, ["0002-000002", "0002-000003"]), ("all", None)],
)
def test_success_prunes_to_what_the_task_keeps(option, expected):
    @task(retries=1, keep=4, keep_checkpoints_on_success=option)
    def steps() -> int:
        ctx = current_context()
        for step in range(1, 4):
            # Large enough to be a payload directory, not inline in the manifest.
            ctx.checkpoint.write(bytes([step]) * (128 << 10), step=step)
        if ctx.attempt == 1:
            raise RecoverableError("again")
        return 3

    execution = run(steps)
    assert execution.status == "succeeded", execution.error
    ids = [v.id for v in scope_of(execution).versions()]
    if expected is None:  # as retention left it during the run: the newest keep=4
        assert ids == ["0001-000003", "0002-000001", "0002-000002", "0002-000003"]
    else:
        assert ids == expected
        assert payload_dirs(execution) == expected  # the bytes are gone, not only the names
    assert execution.nodes[0].attempts[-1].checkpoint_at_end == "0002-000003"


def test_a_failed_node_keeps_its_versions_for_resume():
    @task(keep=3)
    def broken() -> int:
        for step in range(1, 4):
            current_context().checkpoint.write(str(step).encode(), step=step)
        raise ValueError("bug")

    execution = run(broken)
    assert execution.status == "failed"
    assert len(scope_of(execution).versions()) == 3


@pytest.mark.parametrize("bad", [0, -1, "some", 1.5, True])
def test_bad_option_values_name_the_option(bad):
    with pytest.raises(ValueError, match="keep_checkpoints_on_success"):
        task(keep_checkpoints_on_success=bad)(len)


def test_prune_keeps_the_newest(tmp_path):
    with Checkpoint.open(tmp_path / "cp", keep=5) as cp:
        for i in range(5):
            cp.write(b"x" * 100_000, step=i)
        cp.prune(2)
        assert [v.step for v in cp.versions()] == [3, 4]
        cp.write(b"y", step=5)  # and keeps that from now on
        assert [v.step for v in cp.versions()] == [4, 5]
    with pytest.raises(ValueError, match="keep"):
        Checkpoint.open(tmp_path / "cp").prune(0)
