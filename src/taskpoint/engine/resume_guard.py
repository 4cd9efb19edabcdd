"""The resume guard: catch an attempt that could have resumed from a checkpoint but restarted
from scratch (the retry that *looks* resumed but silently trained from step 0).

The node plans each attempt with the version it can resume from (``checkpoint_at_start``). The
attempt's `Checkpoint` notes which version its loads returned (``stats.loaded``: ``read``,
``read_with``, ``restore``, and so every integration's restore, which goes through them). At the
attempt's first write the guard compares the two: the attempt *restarted from scratch* when a
version was available and it loaded none, or when the step of its first commit is below the
available version's step (it loaded an older version, or ignored what it loaded). An attempt
that commits nothing claims no progress and is not judged; without steps, loading an older
version on purpose (a rollback) is not flagged either.

By default that is a warning (logged at once, so it shows live in the run's output, and kept in
the attempt's record for ``taskpoint show`` and the web view). With ``@task(require_resume=True)``
the write is refused with `NotResumedError` before anything is written, every later write of the
attempt too, and the attempt fails (see ``engine/meter.py``).
"""

from __future__ import annotations

import logging
from typing import Any

from taskpoint.checkpoint import CheckpointHook, CheckpointVersion
from taskpoint.engine.events import AttemptInfo
from taskpoint.errors import NotResumedError

log = logging.getLogger("taskpoint")


def describe(version: CheckpointVersion | None) -> str:
    """``checkpoint 0001-000004 (step 4)``."""
    if version is None:
        return "no checkpoint"
    step = f" (step {version.step})" if version.step is not None else ""
    return f"checkpoint {version.id}{step}"


def judge(
    available: CheckpointVersion | None, loaded: CheckpointVersion | None, step: int | None
) -> str | None:
    """Why an attempt that started with ``available``, loaded ``loaded`` and first commits
    ``step`` restarted from scratch; ``None`` when it did not."""
    if available is None:
        return None
    writing = f"step {step}" if step is not None else "a version without a step"
    if loaded is None:
        return (
            f"{describe(available)} was available at its start, but it loaded no checkpoint "
            f"before its first commit ({writing})"
        )
    if step is not None and available.step is not None and step < available.step:
        return (
            f"its first commit is step {step}, below step {available.step} of "
            f"{describe(available)} available at its start (it loaded {describe(loaded)})"
        )
    return None


class ResumeGuard(CheckpointHook):
    """The engine's hook on an attempt's `Checkpoint` that judges its first write."""

    def __init__(self, info: AttemptInfo, require: bool) -> None:
        self.available: CheckpointVersion | None = info.checkpoint_at_start
        self.require = require
        self.node, self.attempt = info.node, info.attempt
        self.warning: str | None = None  # why it restarted from scratch (allowed)
        self.refusal: NotResumedError | None = None  # the first write it refused
        self._judged = False

    def before_write(self, checkpoint: Any, step: int | None) -> None:
        if self.refusal is not None:  # refused once: the attempt commits nothing at all
            raise self._refuse(checkpoint.stats.loaded, step, self.refusal.args[0])
        if self._judged:
            return
        self._judged = True
        problem = judge(self.available, checkpoint.stats.loaded, step)
        if problem is None:
            return
        if self.require:
            self.refusal = self._refuse(checkpoint.stats.loaded, step, None)
            raise self.refusal
        self.warning = problem
        log.warning(
            "taskpoint: %s attempt %d restarted from scratch: %s", self.node, self.attempt, problem
        )

    def _refuse(
        self, loaded: CheckpointVersion | None, step: int | None, message: str | None
    ) -> NotResumedError:
        available = self.available
        assert available is not None  # only an attempt that had a version is refused
        if message is None:
            what = f"step {step}" if step is not None else "a checkpoint"
            message = (
                f"node {self.node} attempt {self.attempt} tried to commit {what} without "
                f"resuming: {describe(available)} was available at its start and it loaded "
                f"{describe(loaded) if loaded is not None else 'none'}. "
                "require_resume=True refused the write; nothing was committed. Load the "
                "checkpoint before writing (current_context().checkpoint.read() or restore(), "
                "or the integration's restore()), or drop require_resume to allow a restart "
                "from scratch."
            )
        return NotResumedError(
            message,
            available=available.id,
            available_step=available.step,
            loaded=loaded.id if loaded is not None else None,
            loaded_step=loaded.step if loaded is not None else None,
            step=step,
        )
