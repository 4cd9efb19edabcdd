"""The engine: executions -> nodes -> attempts, retry policy, preemption and resume."""

from taskpoint.engine.api import resume, run
from taskpoint.engine.config import Engine, configure, default_engine
from taskpoint.engine.execution import Execution
from taskpoint.engine.fanout import map_task as map
from taskpoint.engine.retry import Backoff
from taskpoint.engine.task import Task, Workflow, task, workflow

__all__ = [
    "Backoff",
    "Engine",
    "Execution",
    "Task",
    "Workflow",
    "configure",
    "default_engine",
    "map",
    "resume",
    "run",
    "task",
    "workflow",
]
