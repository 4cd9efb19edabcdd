"""Progress events the engine emits (the CLI renders them); the base class ignores them all.

Called synchronously in the driver's main thread; a listener must be quick and must not raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskpoint.checkpoint import Checkpoint
    from taskpoint.checkpoint.interval import FailureHistory


@dataclass
class AttemptInfo:
    """The one description of an attempt: decided by the node (``NodeRun._plan``), carried to
    the backend inside the ``AttemptJob`` and, wherever the attempt runs, used to open its
    checkpoint scope (``open_checkpoint``) and shown to listeners."""

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
    keep: int = 2  # committed versions the task's retention keeps
    # Seconds each request to a remote checkpoint store may take (``Checkpoint.open(timeout=)``):
    # the task's ``storage_timeout``, else the engine's; None: the filesystem's own timeouts.
    storage_timeout: float | None = None
    # Where the attempt keeps a local copy of its latest remote version (``Checkpoint.open(
    # local_copy=)``): a directory, False (off), None (the attempt's machine's own default).
    local_copy: str | bool | None = None
    # The node's retry budgets as the attempt starts: "retries" / "system_retries" -> [spent,
    # limit]. When it ended (before ``attempt_ended``) the node sets ``retry_budget``, the budget
    # its retry spends (``budgets`` then count it), or ``exhausted``, the one that ran out.
    budgets: dict[str, list[int]] = field(default_factory=dict)
    retry_budget: str | None = None
    exhausted: str | None = None
    resume_warning: str | None = None  # set when it ended: why it restarted from scratch
    log_url: str | None = None  # where the attempt's stdout/stderr go (engine/logs.py)
    # The task's earlier attempts, for the checkpoint interval (``Checkpoint.due()``)
    history: FailureHistory | None = None
    # One process of a rank group (``@task(nproc=N)``, backends/ranks.py): its rank of
    # ``world_size`` and the port rank 0's rendezvous listens on (0: not a rank group).
    rank: int = 0
    world_size: int = 1
    master_port: int = 0

    def open_checkpoint(self) -> Checkpoint:
        """The attempt's writable checkpoint scope."""
        from taskpoint.checkpoint import Checkpoint

        return Checkpoint.open(
            self.checkpoint_url,
            attempt=self.attempt,
            keep=self.keep,
            storage_options=self.storage_options or None,
            timeout=self.storage_timeout,
            local_copy=self.local_copy,
        )


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


class QuietListener(Listener):
    """Hears nothing and says nothing, not even the start line a plain ``Listener`` engine
    prints for programs (``engine/api.py``): for ``--json`` output and embedding."""
