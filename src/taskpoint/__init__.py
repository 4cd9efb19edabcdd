"""taskpoint: long-running Python tasks that survive failure, with intra-task checkpoints."""

from taskpoint.checkpoint import Checkpoint, CheckpointVersion
from taskpoint.context import current_context
from taskpoint.engine import Execution, map, resume, run, task, workflow
from taskpoint.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMissingError,
    ExecutionFailed,
    Preempted,
    RecoverableError,
    TaskpointError,
)

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointMissingError",
    "CheckpointVersion",
    "Execution",
    "ExecutionFailed",
    "Preempted",
    "RecoverableError",
    "TaskpointError",
    "__version__",
    "current_context",
    "map",
    "resume",
    "run",
    "task",
    "workflow",
]
