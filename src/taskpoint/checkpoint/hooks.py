"""`CheckpointHook`: what a `Checkpoint` calls around its loads and writes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskpoint.checkpoint.core import Checkpoint
    from taskpoint.checkpoint.version import CheckpointVersion


class CheckpointHook:
    """Called by a `Checkpoint` around its loads and writes; the methods are no-ops to override.

    The engine uses one to report commits to the progress listener, to raise `Preempted`
    after the commit that follows a SIGTERM and to guard resumes; a user may add their own
    (metrics, logging).
    """

    def after_load(self, checkpoint: Checkpoint, version: CheckpointVersion | None) -> None:
        """After ``read``/``read_with``/``restore`` returned: ``version`` is the one loaded,
        ``None`` when nothing was committed."""

    def before_write(self, checkpoint: Checkpoint, step: int | None) -> None:
        """Before ``write``/``save`` snapshots anything: an exception raised here reaches the
        caller and nothing is written."""

    def after_write(self, checkpoint: Checkpoint, result: Any, blocking: bool) -> None:
        """After ``write``/``save`` returned: ``result`` is the committed `CheckpointVersion`
        (blocking) or the future of an async write. An exception raised here reaches the
        caller of ``write``/``save``; the version stays committed."""
