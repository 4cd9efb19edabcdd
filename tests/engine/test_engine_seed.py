"""The seed program, verbatim but for its imports, gives the documented attempt-by-attempt run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import taskpoint
from taskpoint import Checkpoint
from taskpoint.engine import configure
from taskpoint.engine.events import Listener

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed_checkpoint.py"


@pytest.fixture(scope="module")
def seed():
    spec = importlib.util.spec_from_file_location("seed_checkpoint", SEED)
    module = importlib.util.module_from_spec(spec)
    sys.modules["seed_checkpoint"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("seed_checkpoint", None)


class StartRecorder(Listener):
    """Reads the checkpoint each attempt starts from (the content, before the attempt runs)."""

    def __init__(self) -> None:
        self.starts: list[int] = []

    def attempt_started(self, info) -> None:
        with Checkpoint.open(info.checkpoint_url) as cp:
            data = cp.read()
        self.starts.append(int(data.decode()) if data else 0)


@pytest.mark.parametrize(
    ("n", "result", "statuses", "starts"),
    [
        (12, 11, ["recoverable", "recoverable", "succeeded"], [0, 4, 8]),
        (9, 8, ["recoverable", "recoverable", "succeeded"], [0, 3, 6]),
        (3, 2, ["recoverable", "recoverable", "succeeded"], [0, 1, 2]),
        (10, 9, ["succeeded"], [0]),  # 10 / 3 is not whole: the failure never triggers
    ],
)
def test_seed_attempts(seed, n, result, statuses, starts):
    recorder = StartRecorder()
    configure(listener=recorder)
    execution = taskpoint.run(seed.example, n_iterations=n)

    assert execution.status == "succeeded"
    assert execution.result == result
    (node,) = execution.nodes
    assert node.key == "use_checkpoint#1"
    assert [a.status for a in node.attempts] == statuses
    assert [a.n for a in node.attempts] == list(range(1, len(statuses) + 1))
    assert recorder.starts == starts
    # Each retry starts from the version the attempt before it ended with.
    assert node.attempts[0].checkpoint_at_start is None
    for before, after in zip(node.attempts, node.attempts[1:], strict=False):
        assert after.checkpoint_at_start == before.checkpoint_at_end is not None
    if len(statuses) > 1:
        assert node.attempts[0].error.startswith("RecoverableError: Failed at iteration")


def test_seed_workflow_called_eagerly_returns_its_result(seed):
    assert seed.example(n_iterations=12) == 11


def test_seed_task_called_alone_is_a_one_node_execution(seed):
    assert seed.use_checkpoint(n_iterations=9) == 8
