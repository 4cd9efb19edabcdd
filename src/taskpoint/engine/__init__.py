"""The engine: executions -> nodes -> attempts, retry policy, preemption and resume."""

from taskpoint.engine.api import resume, run
from taskpoint.engine.execution import Execution
from taskpoint.engine.fanout import map_task as map
from taskpoint.engine.settings import configure
from taskpoint.engine.task import Task, Workflow, task, workflow

__all__ = [
    "Execution",
    "Task",
    "Workflow",
    "configure",
    "map",
    "resume",
    "run",
    "task",
    "workflow",
]
