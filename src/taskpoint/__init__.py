"""taskpoint: long-running Python tasks that survive failure, with intra-task checkpoints."""

from taskpoint.checkpoint import Checkpoint, CheckpointVersion
from taskpoint.errors import CheckpointCorruptError, CheckpointError, TaskpointError

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointVersion",
    "TaskpointError",
    "__version__",
]
