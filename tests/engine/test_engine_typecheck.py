"""Inputs are checked against type hints before any attempt runs."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Optional, Union

import pytest

import taskpoint
from taskpoint import task, workflow
from taskpoint.engine.typecheck import find_mismatch


@dataclasses.dataclass
class Config:
    lr: float


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (1, int),
        (1, float),
        (1.5, float),
        ("s", str),
        (True, bool),
        (b"x", bytes),
        (None, None),
        (None, type(None)),
        (None, Optional[int]),  # noqa: UP045 - the typing spelling must work too
        (3, Union[int, str]),  # noqa: UP007
        ("a", int | str),
        ([1, 2], list[int]),
        ({"a": 1.0}, dict[str, float]),
        ((1, "a"), tuple[int, str]),
        ((1, 2, 3), tuple[int, ...]),
        ([], list),
        (Config(0.1), Config),
        (pathlib.Path("/tmp"), pathlib.Path),
        ([[1], [2]], list[list[int]]),
    ],
)
def test_accepted(value, hint):
    assert find_mismatch(value, hint) is None


@pytest.mark.parametrize(
    ("value", "hint", "given"),
    [
        (True, int, "bool"),
        (False, float, "bool"),
        ("1", int, "str"),
        (1.0, int, "float"),
        (b"x", str, "bytes"),
        (1, None, "int"),
        ("x", Optional[int], "str"),  # noqa: UP045
        ([1, "a"], list[int], "list with str at index 1"),
        ({"a": "b"}, dict[str, int], "dict with str at key 'a'"),
        ((1,), tuple[int, str], "tuple of length 1"),
        ("/tmp", pathlib.Path, "str"),
        ({"lr": 0.1}, Config, "dict"),
    ],
)
def test_rejected(value, hint, given):
    assert find_mismatch(value, hint) == given


def test_task_call_with_wrong_type_raises_before_any_attempt(tp_home):
    ran = []

    @task
    def train(n_iterations: int, lr: float = 0.1) -> int:
        ran.append(1)
        return n_iterations

    @workflow
    def flow(n: int) -> int:
        return train(n_iterations=str(n))

    with pytest.raises(TypeError) as info:
        train(n_iterations="12")
    message = str(info.value)
    assert "task 'train'" in message
    assert "parameter 'n_iterations'" in message
    assert "expects int" in message and "got str" in message
    assert not (tp_home / "taskpoint.db").exists()  # nothing was recorded

    with pytest.raises(TypeError, match="bool"):
        train(n_iterations=True)
    assert train(n_iterations=3, lr=1) == 3  # an int is a fine float

    execution = taskpoint.run(flow, n=3)
    assert execution.status == "failed"
    assert "parameter 'n_iterations' expects int, got str" in execution.error
    assert ran == [1]


def test_workflow_inputs_are_checked():
    @workflow
    def flow(items: list[int]) -> int:
        return sum(items)

    with pytest.raises(TypeError, match=r"workflow 'flow': parameter 'items' expects list\[int\]"):
        taskpoint.run(flow, items=[1, "2"])
    assert flow(items=[1, 2]) == 3
