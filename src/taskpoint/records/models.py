"""Plain rows of the records database."""

from __future__ import annotations

from dataclasses import dataclass

from taskpoint.records.liveness import hostname, process_alive
from taskpoint.records.status import ExecutionStatus


@dataclass
class ExecutionRecord:
    id: str
    name: str
    kind: str
    module: str | None
    file: str | None
    qualname: str
    inputs: str | None
    inputs_ref: str | None
    storage: str
    status: str
    result_ref: str | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    failed_node: str | None
    created: float
    started: float | None
    ended: float | None
    driver_pid: int | None
    driver_host: str | None
    driver_token: str | None
    result_preview: str | None = None  # JSON text (records/preview.py); None in older records
    # Schema 3 (None in older records): driver runs (1 + resumes), seconds the earlier ones ran,
    # and the running driver's last heartbeat (records/heartbeat.py).
    runs: int | None = None
    ran_before_s: float | None = None
    last_run_end: float | None = None  # when the previous driver run ended (its last sign)
    last_seen: float | None = None

    @property
    def driver_alive(self) -> bool:
        """False when the driver is known dead; True when alive or not checkable (other host)."""
        if self.driver_host != hostname():
            return True
        return process_alive(self.driver_pid, self.driver_token)

    @property
    def effective_status(self) -> str:
        """The stored status, except ``interrupted`` for a running one whose driver died."""
        if self.status == ExecutionStatus.RUNNING and not self.driver_alive:
            return ExecutionStatus.INTERRUPTED
        return self.status


@dataclass
class NodeRecord:
    execution_id: str
    key: str
    task: str
    status: str
    attempts: int
    max_attempts: int | None
    output: bytes | None
    output_ref: str | None
    error_type: str | None
    error_message: str | None
    started: float | None
    ended: float | None
    output_preview: str | None = None  # JSON text (records/preview.py); None in older records
    # Schema 3 (None in older records): the task's budgets and the first attempt they count from.
    retries: int | None = None
    system_retries: int | None = None
    budget_from: int | None = None


@dataclass
class AttemptRecord:
    execution_id: str
    node_key: str
    n: int
    status: str
    error_type: str | None
    error_message: str | None
    traceback: str | None
    started: float
    ended: float | None
    pid: int | None
    checkpoint_at_start: str | None
    checkpoint_at_end: str | None
    # Schema 3 (None in older records): the driver run it ran in, the budget its retry spent
    # ("retries" | "system_retries"), when it committed checkpoint_at_end (when that is its own
    # version) and the steps of its start and end versions (kept after retention prunes them).
    run: int | None = None
    budget: str | None = None
    last_commit: float | None = None
    step_at_start: int | None = None
    step_at_end: int | None = None
    # Schema 4 (None in older records, and when the attempt could not report): the version its
    # loads returned, why it restarted from scratch, and what it measured (engine/meter.py).
    loaded_version: str | None = None
    loaded_step: int | None = None
    resume_warning: str | None = None
    start_s: float | None = None
    restore_s: float | None = None
    first_step_s: float | None = None
    stall_s: float | None = None
    work_lost_s: float | None = None

    @property
    def error(self) -> str | None:
        if self.error_type is None:
            return None
        return f"{self.error_type}: {self.error_message}" if self.error_message else self.error_type
