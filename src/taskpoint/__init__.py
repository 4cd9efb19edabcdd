"""taskpoint: long-running Python tasks that survive failure, with intra-task checkpoints."""

# The backend table installs itself into the engine, which imports no backend (engine/attempt.py).
from taskpoint.backends import registry as _backend_table  # noqa: F401
from taskpoint.checkpoint import Checkpoint, CheckpointVersion
from taskpoint.context import current_context
from taskpoint.engine import Backoff, Engine, Execution, configure, map, resume, run, task, workflow
from taskpoint.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMissingError,
    CheckpointTimeoutError,
    ExecutionFailed,
    NotResumedError,
    Preempted,
    RecoverableError,
    TaskpointError,
)

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "Checkpoint",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointMissingError",
    "CheckpointTimeoutError",
    "CheckpointVersion",
    "Engine",
    "Execution",
    "ExecutionFailed",
    "NotResumedError",
    "Preempted",
    "RecoverableError",
    "TaskpointError",
    "__version__",
    "configure",
    "current_context",
    "map",
    "resume",
    "run",
    "task",
    "workflow",
]
