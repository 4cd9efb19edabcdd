"""One node of an execution: the attempt loop, the only place that decides to retry."""

from __future__ import annotations

import logging
import os
import pickle
from typing import TYPE_CHECKING, Any

from taskpoint.checkpoint import Checkpoint
from taskpoint.engine import blobs
from taskpoint.engine.attempt import AttemptJob, Outcome
from taskpoint.engine.events import AttemptInfo
from taskpoint.engine.execution import BUDGET_NAMES
from taskpoint.engine.logs import log_url
from taskpoint.engine.retry import SYSTEM_BUDGET, USER_BUDGET, AttemptState, RetryPolicy
from taskpoint.engine.task import Task
from taskpoint.errors import CheckpointMissingError, Preempted, TaskpointError
from taskpoint.records import AttemptEnd, AttemptStart, NodeRecord
from taskpoint.records.history import failure_history
from taskpoint.records.preview import make_preview
from taskpoint.records.status import AttemptStatus, NodeStatus

if TYPE_CHECKING:
    from taskpoint.engine.driver import Run

log = logging.getLogger("taskpoint")

# Pickled outputs up to this size are kept in the records database, larger ones in the blob
# store (`<storage>/<execution>/nodes/<node>/output.pkl`).
INLINE_OUTPUT_MAX = 32 * 1024


class NodeRun:
    def __init__(
        self, run: Run, task: Task, key: str, arguments: dict[str, Any], previous: NodeRecord | None
    ) -> None:
        self.run = run
        self.task = task
        self.key = key
        self.arguments = arguments
        self.previous = previous
        self.url = blobs.node_url(run.storage, run.execution_id, key)
        self.checkpoint_url = f"{self.url}/checkpoints"
        self.backend = run.backend_for(task)
        self._viewer: Checkpoint | None = None
        self._limits = {USER_BUDGET: task.retries, SYSTEM_BUDGET: task.system_retries}
        self.budget_from = 1
        self._reconciled = False

    def execute(self) -> Any:
        policy = RetryPolicy.for_task(
            self.task.retries, self.task.system_retries, self.task.retry_delay, self.run.sleep
        )
        state = AttemptState()
        last = self.previous.attempts if self.previous else 0  # the last attempt number used
        self.budget_from = self._carry_budgets(state, last + 1)
        try:
            while True:
                info, outcome = self._attempt(last + 1, state)
                last = info.attempt
                if outcome.status == AttemptStatus.SUCCEEDED:
                    return self._succeed(info, outcome)
                state.ended(info.attempt, outcome.status, outcome.error)
                retry = (
                    outcome.status != AttemptStatus.ABORTED
                    and not self.run.guard.preempted
                    and not self.run.is_stopped(self.key)
                    and policy.should_retry(state)
                )
                self._judge(info, state, retry)
                node_status = NodeStatus.RUNNING if retry else self._final_status(outcome)
                self._record_end(info, outcome, node_status)
                if not retry:
                    self._stop(outcome, node_status)
                delay = policy.spend(state)
                self.run.listener.retry_scheduled(info, delay)
                if delay > 0:
                    policy.sleep(delay)
                if self.run.guard.preempted:
                    self.run.records.finish_node(
                        self.run.execution_id, self.key, NodeStatus.PREEMPTED
                    )
                    self._stop(outcome, NodeStatus.PREEMPTED)
        finally:
            if self._viewer is not None:
                self._viewer.close()

    # -- budgets ---------------------------------------------------------------------------------

    def _carry_budgets(self, state: AttemptState, first: int) -> int:
        """What a resumed node's budgets start from; returns the first attempt they count.

        The retries its earlier attempts spent count on (a resume does not refill them), except
        when the node failed: a failed node that is resumed (after a fix) gets fresh budgets from
        attempt ``first`` on. Attempts cut short by the driver's death (lost when it was killed,
        or preempted or aborted with it) were never retried, so they spent nothing."""
        prev = self.previous
        if prev is None or prev.status == NodeStatus.FAILED:
            return first
        since = prev.budget_from or 1
        kinds = {name: kind for kind, name in BUDGET_NAMES.items()}
        spent = self.run.records.spent_budgets(self.run.execution_id, self.key, since)
        for name, count in spent.items():
            if name in kinds:
                state.spent[kinds[name]] = count
        return since

    def _budgets(self, state: AttemptState) -> dict[str, list[int]]:
        return {BUDGET_NAMES[k]: [state.spent[k], self._limits[k]] for k in BUDGET_NAMES}

    def _judge(self, info: AttemptInfo, state: AttemptState, retry: bool) -> None:
        """Tell the listeners (through ``info``) which budget the retry spends, or which ran
        out; ``policy.spend`` counts the retry right after."""
        kind = state.budget
        if kind is None:
            return
        if retry:
            info.retry_budget = BUDGET_NAMES[kind]
            info.budgets = self._budgets(state)
            info.budgets[info.retry_budget][0] += 1
        elif state.spent[kind] >= self._limits[kind]:
            info.exhausted = BUDGET_NAMES[kind]

    # -- one attempt -----------------------------------------------------------------------------

    def _attempt(self, n: int, state: AttemptState) -> tuple[AttemptInfo, Outcome]:
        """Plan attempt ``n`` (its number may move past versions the records missed), record
        its start and hand it to the backend. The attempt opens its own writable scope when the
        task first uses it; the driver only looks through one read-only scope per node."""
        info, missing = self._plan(n)
        info.budgets = self._budgets(state)
        isolated = not self.backend.in_driver
        at_start = info.checkpoint_at_start
        info.started = self.run.records.attempt_started(
            self.run.execution_id,
            self.key,
            info.attempt,
            self._start_record(
                info.attempt,
                pid=0 if isolated else os.getpid(),
                checkpoint_at_start=at_start.id if at_start else None,
                step_at_start=at_start.step if at_start else None,
            ),
            defer=not isolated,  # a forked or remote attempt takes long enough: record it now
        )
        if missing is not None:
            # Never started: a configuration problem, not the task's, so no retry either.
            return info, Outcome.from_error(AttemptStatus.FAILED, missing)
        self.run.listener.attempt_started(info)
        job = AttemptJob(self.task, self.arguments, info, self.run.guard, self.run.listener)
        outcome = self.run.wait_for(self.key, self.backend.submit(job))
        # A lost or aborted isolated attempt could not say what it left.
        if isolated and outcome.status in (AttemptStatus.LOST, AttemptStatus.ABORTED):
            outcome.checkpoint_at_end = self._look().latest()
        return info, outcome

    def _plan(self, n: int) -> tuple[AttemptInfo, CheckpointMissingError | None]:
        """The one place an attempt's number and starting version are decided: ``n`` unless
        the scope holds versions of attempt ``n`` or later that the records lost (a driver
        killed right after they committed), then the number after the newest of those, so
        numbers are never reused and versions never collide. Also the error that stops the
        attempt when recorded checkpoints are missing from the scope."""
        start_version = None
        missing = None
        if n > 1 or self.run.resumed:
            if self.previous is not None and not self._reconciled:
                self._reconciled = True
                self._reconcile_lost()
            # Only a retry or a resume can find checkpoints: a fresh node's scope is new.
            start_version = self._look().latest()
            if start_version is None and n > 1:
                missing = self._missing_checkpoints(n)
            elif start_version is not None and start_version.attempt >= n:
                self._record_unrecorded(n, start_version.attempt)
                n = start_version.attempt + 1
        info = AttemptInfo(
            execution_id=self.run.execution_id,
            node=self.key,
            task=self.task.name,
            attempt=n,
            max_attempts=max(self.task.max_attempts, n),
            checkpoint_url=self.checkpoint_url,
            checkpoint_at_start=start_version,
            storage_options=self.run.storage_options,
            keep=self.task.keep,
            storage_timeout=self.run.storage_timeout_for(self.task),
            local_copy=self.run.local_copy,
            log_url=log_url(self.url, n),
            # For the checkpoint interval (due()); a first attempt has no own attempts to read.
            history=failure_history(
                self.run.records, self.run.execution_id, self.key, self.task.name, own=n > 1
            ),
        )
        return info, missing

    def _start_record(self, n: int, **fields: Any) -> AttemptStart:
        defaults: dict[str, Any] = {
            "task": self.task.name,
            "max_attempts": max(self.task.max_attempts, n),
            "run": self.run.run_number,
            "retries": self.task.retries,
            "system_retries": self.task.system_retries,
            "budget_from": self.budget_from,
        }
        return AttemptStart(**{**defaults, **fields})

    def _reconcile_lost(self) -> None:
        """Attempts of this node that a dead driver left running (``restart_execution`` made
        them lost, ending at that driver's last sign of life): fill in, from the versions in the
        scope, the checkpoint each one ended with, its step, and when the attempt committed it
        (its end moves there when that was after the driver's last heartbeat)."""
        records = self.run.records
        lost = records.unreconciled_lost(self.run.execution_id, self.key)
        if not lost:
            return
        try:
            versions = self._look().versions()
        except Exception as exc:  # the store's damage is reported by the reads that need it
            log.warning("taskpoint: %s: cannot list its checkpoint versions: %s", self.key, exc)
            return
        for a in lost:
            own = [v for v in versions if v.attempt == a.n]
            found: tuple[str, int | None, float | None]
            if own:
                end = max(own, key=lambda v: v.order)
                found = (end.id, end.step, end.created.timestamp())
            elif a.checkpoint_at_start is not None:  # it committed nothing: it ended as it began
                found = (a.checkpoint_at_start, a.step_at_start, None)
            else:
                continue
            records.reconcile_lost(
                self.run.execution_id,
                self.key,
                a.n,
                checkpoint_at_end=found[0],
                step_at_end=found[1],
                last_commit=found[2],
            )

    def _look(self) -> Checkpoint:
        """The node's read-only view of its scope, opened once (it creates nothing)."""
        if self._viewer is None:
            self._viewer = Checkpoint.open(
                self.checkpoint_url,
                readonly=True,
                storage_options=self.run.storage_options or None,
                timeout=self.run.storage_timeout_for(self.task),  # a stalled store: no hang
            )
        return self._viewer

    def _missing_checkpoints(self, n: int) -> CheckpointMissingError | None:
        """The error that stops attempt ``n`` when the records say earlier attempts committed
        versions but the scope holds none; ``None`` when nothing is missing, or when the task
        or the resume chose to restart from zero (logged)."""
        expected = _recorded_versions(self.run.records, self.run.execution_id, self.key)
        if not expected or self._look().prev_exists():
            return None  # committed manifests that do not parse: the reads report the damage
        shown = expected[0] + (f" (also {', '.join(expected[1:4])})" if expected[1:] else "")
        where = f"node {self.key} of execution {self.run.execution_id}"
        if self.run.from_scratch or self.task.on_missing_checkpoints == "restart":
            chosen = (
                "`taskpoint resume --from-scratch`"
                if self.run.from_scratch
                else 'on_missing_checkpoints="restart"'
            )
            log.warning(
                "taskpoint: %s: recorded checkpoint version %s is missing from %s; attempt %d "
                "restarts from scratch on purpose (%s)",
                where, shown, self.checkpoint_url, n, chosen,
            )  # fmt: skip
            return None
        eid = self.run.execution_id
        return CheckpointMissingError(
            f"{where}: its records say checkpoint version {shown} was committed, but no committed "
            f"version is in {self.checkpoint_url}; attempt {n} was not started, so as not to "
            "restart it from zero. Likely causes: the checkpoint scope was deleted; the storage "
            f"recorded with the execution ({self.run.storage}) or its options (--storage-option, "
            "TASKPOINT_S3_ENDPOINT_URL, credentials) now lead to another store; a bucket "
            "lifecycle rule expired the checkpoints. Bring them back and resume again, or "
            f"restart the node from zero on purpose: `taskpoint resume {eid} --from-scratch` "
            '(or @task(on_missing_checkpoints="restart")).',
            execution_id=eid,
            node=self.key,
            expected=expected,
            url=self.checkpoint_url,
        )

    def _record_unrecorded(self, first: int, last: int) -> None:
        """Attempts that committed checkpoints but whose start was never recorded (their driver
        died within the start-record delay) are recorded as lost: the history has no gap. What
        is known of each comes from its versions: its first and last commit bound its run."""
        try:
            versions = self._look().versions()
        except Exception:
            versions = []
        for n in range(first, last + 1):
            own = sorted((v for v in versions if v.attempt == n), key=lambda v: v.order)
            start = own[0].created.timestamp() if own else None
            self.run.records.attempt_started(
                self.run.execution_id,
                self.key,
                n,
                # It ran in the driver run before this one, which died.
                self._start_record(n, pid=0, run=max(1, self.run.run_number - 1)),
                at=start,
            )
            message = "its driver died before the attempt's start was recorded (it committed)"
            end = AttemptEnd(AttemptStatus.LOST, NodeStatus.RUNNING, "AttemptLost", message)
            if own:
                end.checkpoint_at_end, end.step_at_end = own[-1].id, own[-1].step
                end.last_commit = end.ended = own[-1].created.timestamp()
            self.run.records.attempt_ended(self.run.execution_id, self.key, n, end)
            if end.ended is not None:
                self.run.records.extend_last_run(self.run.execution_id, end.ended)

    # -- endings ---------------------------------------------------------------------------------

    def _succeed(self, info: AttemptInfo, outcome: Outcome) -> Any:
        try:
            data = pickle.dumps(outcome.value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            failure = Outcome.from_error(
                AttemptStatus.FAILED,
                TypeError(
                    f"task {self.task.name!r} returned a value that cannot be pickled ({exc}); "
                    "outputs must be picklable so they can be stored and returned on resume"
                ),
                outcome.checkpoint_at_end,
            )
            self._record_end(info, failure, NodeStatus.FAILED)
            self._stop(failure, NodeStatus.FAILED)
        # Read-only views show this bounded preview and never unpickle the output.
        preview = make_preview(outcome.value)
        if len(data) <= INLINE_OUTPUT_MAX:
            # Small outputs ride in the attempt's end transaction: one write, atomic with the
            # status, and no file per node on the hot path.
            self._record_end(
                info, outcome, NodeStatus.SUCCEEDED, output=data, output_preview=preview
            )
        else:
            ref = f"{self.url}/output.pkl"
            blobs.put_bytes(ref, data, self.run.storage_options)
            self._record_end(
                info, outcome, NodeStatus.SUCCEEDED, output_ref=ref, output_preview=preview
            )
        if outcome.checkpoint_at_end is not None:  # a task that checkpointed
            self._prune_on_success(info)
        return outcome.value

    def _prune_on_success(self, info: AttemptInfo) -> None:
        """A succeeded node needs no older version to fall back to: keep only what the task's
        ``keep_checkpoints_on_success`` says (default: the latest). Never fails the node."""
        keep = self.task.keep_on_success
        if keep is None or keep >= self.task.keep:
            return  # retention already keeps no more than that
        try:
            with Checkpoint.open(
                self.checkpoint_url,
                attempt=info.attempt,
                keep=self.task.keep,
                storage_options=self.run.storage_options or None,
                retire_grace=0,  # the node is done: no attempt of it reads these any more
                timeout=self.run.storage_timeout_for(self.task),
            ) as scope:
                scope.prune(keep)
        except Exception as exc:
            log.warning(
                "taskpoint: %s succeeded, but pruning its checkpoints to the latest %d failed: %s",
                self.key, keep, exc,
            )  # fmt: skip

    def _record_end(
        self,
        info: AttemptInfo,
        outcome: Outcome,
        node_status: str,
        *,
        output: bytes | None = None,
        output_ref: str | None = None,
        output_preview: str | None = None,
    ) -> None:
        end_version = outcome.checkpoint_at_end
        own = end_version is not None and end_version.attempt == info.attempt
        self.run.records.attempt_ended(
            self.run.execution_id,
            self.key,
            info.attempt,
            AttemptEnd(
                status=outcome.status,
                node_status=node_status,
                error_type=outcome.error_type,
                error_message=outcome.error_message,
                traceback=outcome.traceback,
                checkpoint_at_end=end_version.id if end_version else None,
                output=output,
                output_ref=output_ref,
                output_preview=output_preview,
                pid=outcome.pid,
                budget=info.retry_budget,
                last_commit=end_version.created.timestamp() if own else None,
                step_at_end=end_version.step if end_version else None,
                measured=outcome.ledger,  # the goodput ledger's figures (engine/meter.py)
            ),
        )
        info.resume_warning = (outcome.ledger or {}).get("resume_warning")
        self.run.listener.attempt_ended(info, outcome.status, outcome.error_text, end_version)

    def _final_status(self, outcome: Outcome) -> NodeStatus:
        if outcome.status == AttemptStatus.ABORTED:
            return NodeStatus.ABORTED
        if self.run.guard.preempted and outcome.status != AttemptStatus.FAILED:
            # The driver itself is going away: resume continues this node.
            return NodeStatus.PREEMPTED
        return NodeStatus.FAILED

    def _stop(self, outcome: Outcome, node_status: str) -> None:
        error = outcome.error or TaskpointError(outcome.error_text or outcome.status)
        if node_status == NodeStatus.ABORTED:
            raise KeyboardInterrupt from error
        if node_status == NodeStatus.PREEMPTED:
            self.run.preempted_node = self.key
            raise Preempted(
                f"execution {self.run.execution_id} preempted in node {self.key}; "
                f"`taskpoint resume {self.run.execution_id}` continues it",
                execution_id=self.run.execution_id,
                node=self.key,
            ) from error
        self.run.failures.append((self.key, error, outcome.error_type, outcome.error_message))
        raise error


def _recorded_versions(records: Any, execution_id: str, key: str) -> list[str]:
    """Checkpoint version ids the node's recorded attempts started from or ended at, newest
    first (ids sort by (attempt, seq)). One indexed lookup: retries of tasks that write no
    checkpoint ask it every time."""
    rows = records.db.query(
        "SELECT checkpoint_at_start, checkpoint_at_end FROM attempts "
        "WHERE execution_id=? AND node_key=?",
        (execution_id, key),
    )
    return sorted({vid for row in rows for vid in row if vid}, reverse=True)
