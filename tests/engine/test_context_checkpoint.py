"""The task's checkpoint is a real `Checkpoint`; the engine's needs are a hook on it."""

from __future__ import annotations

import taskpoint
from taskpoint import Checkpoint, current_context, task, workflow
from taskpoint.checkpoint import CheckpointHook

SEEN: dict = {}


@task
def look() -> int:
    cp = current_context().checkpoint
    SEEN["type"] = type(cp)
    SEEN["hooks"] = [type(h).__name__ for h in cp._hooks]
    cp.write(b"one", step=1)
    return 1


@workflow
def flow() -> int:
    return look()


def test_the_context_checkpoint_is_a_checkpoint_with_the_engine_hook():
    assert taskpoint.run(flow).status == "succeeded"
    assert SEEN["type"] is Checkpoint
    # The engine's hooks: preemption, and the resume guard (engine/resume_guard.py).
    assert {"PreemptionHook", "ResumeGuard"} <= set(SEEN["hooks"])


def test_a_user_hook_sees_every_write(tmp_path):
    seen = []

    class Count(CheckpointHook):
        def after_write(self, checkpoint, result, blocking):
            seen.append((result.id if blocking else "async", blocking))

    cp = Checkpoint.open(tmp_path / "scope")
    cp.add_hook(Count())
    cp.write(b"a")
    cp.write(b"b", blocking=False).result()
    cp.wait()
    assert seen == [("0001-000001", True), ("async", False)]
