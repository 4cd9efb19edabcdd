"""Versioned, atomic checkpoints on any fsspec URL; usable without the engine."""

from taskpoint.checkpoint.core import Checkpoint, CheckpointHook, CheckpointWarning
from taskpoint.checkpoint.deadline import FlushReport, SaveSkipped
from taskpoint.checkpoint.version import CheckpointVersion

__all__ = [
    "Checkpoint",
    "CheckpointHook",
    "CheckpointVersion",
    "CheckpointWarning",
    "FlushReport",
    "SaveSkipped",
]
