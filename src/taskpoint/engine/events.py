"""Progress events the engine emits (the CLI renders them); the base class ignores them all.

Called synchronously in the driver's main thread; a listener must be quick and must not raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AttemptInfo:
    execution_id: str
    node: str
    task: str
    attempt: int
    max_attempts: int
    checkpoint_url: str
    checkpoint_at_start: Any = None  # CheckpointVersion | None
    started: float = 0.0
    # fsspec options for the checkpoint URL (credentials may be in them: never shown)
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)


class Listener:
    def execution_started(self, execution_id: str, name: str, resumed: bool) -> None:
        pass

    def node_reused(self, execution_id: str, node: str) -> None:
        """A resumed execution returned this succeeded node's stored output without running it."""

    def attempt_started(self, info: AttemptInfo) -> None:
        pass

    def checkpoint_written(self, info: AttemptInfo, version: Any) -> None:
        pass

    def attempt_ended(
        self, info: AttemptInfo, status: str, error: str | None, checkpoint_at_end: Any
    ) -> None:
        pass

    def retry_scheduled(self, info: AttemptInfo, delay: float) -> None:
        pass
