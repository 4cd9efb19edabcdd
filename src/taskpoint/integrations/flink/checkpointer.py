"""`FlinkCheckpointer`: one PyFlink job per task, its state kept in the task's checkpoint (see
the package docs; the checkpoint directories themselves are ``_state``)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pyflink.java_gateway as _pyflink_gateway
from pyflink.common import Configuration, JobExecutionResult
from pyflink.datastream import StreamExecutionEnvironment

from taskpoint.errors import (
    CheckpointError,
    Preempted,
    RecoverableError,
    TaskpointError,
)
from taskpoint.integrations import _toolkit as kit
from taskpoint.integrations._jvm_workdir import AttemptDir, jvm_pid
from taskpoint.integrations.flink import _state as state

if TYPE_CHECKING:
    from pyflink.common.job_client import JobClient

    from taskpoint.checkpoint import Checkpoint

__all__ = ["FlinkCheckpointer"]

log = logging.getLogger("taskpoint.integrations.flink")

_inherited_gateway = False


def _after_fork_in_child() -> None:
    global _inherited_gateway
    _inherited_gateway = _pyflink_gateway._gateway is not None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class FlinkCheckpointer:
    """Run one PyFlink job per task with its state kept in the task's checkpoint.

    ``every_ms``: Flink's checkpoint interval in milliseconds (Flink has no steps; each
    completed Flink checkpoint ``chk-N`` is saved with ``step`` = N).

    Attributes: `resumed_step` (the step of the version restored: the Flink checkpoint number,
    or for a savepoint the number of the checkpoint before it, 0 if none; ``None`` on a fresh
    start), `resumed` (its description: ``{"kind": "checkpoint", "id": N, ...}`` or
    ``{"kind": "savepoint", ...}``, or ``None``) and `restore_path` (the local directory Flink
    restores from, or ``None``).
    """

    def __init__(
        self,
        *,
        checkpoint: Checkpoint | None = None,
        every_ms: int = 1000,
        restart_attempts: int = 0,
        work_dir: str | os.PathLike[str] | None = None,
        poll_interval: float = 0.2,
        jvm_exit_timeout: float = 30.0,
        savepoint_retry_s: float = 10.0,
    ) -> None:
        if _inherited_gateway:
            raise TaskpointError(
                "this attempt was forked from a process that already runs a PyFlink JVM, which "
                "it would share; use @task(isolation='spawn') or keep PyFlink out of the driver"
            )
        self.checkpoint, self._ctx = kit.task_checkpoint(checkpoint, "FlinkCheckpointer")
        if isinstance(every_ms, bool) or not isinstance(every_ms, int) or every_ms <= 0:
            raise ValueError(f"every_ms must be a positive integer, got {every_ms!r}")
        self.every_ms = every_ms
        self.restart_attempts = restart_attempts
        self.poll_interval = poll_interval
        self.jvm_exit_timeout = jvm_exit_timeout
        self.savepoint_retry_s = savepoint_retry_s
        base = os.fspath(work_dir) if work_dir is not None else None
        self._dir = AttemptDir(self.checkpoint.url, self.checkpoint.attempt, "flink", base)
        self._preempt = threading.Event()
        self._last: int | None = None
        self.resumed: dict[str, Any] | None = None
        self.resumed_step: int | None = None
        self.restore_path: Path | None = None
        try:
            restored = self.checkpoint.restore(self._dir.path / "restored")
            if restored is not None:
                self.resumed = state.read_meta(restored)
                self.resumed_step = _step_of(self.resumed)
                self.restore_path = restored / state.STATE_DIR
        except BaseException:
            self._dir.remove()
            raise
        if self._ctx is not None:
            self._ctx.on_preempt(self._preempt.set)

    # ------------------------------------------------------------------------ configuration
    def settings(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The Flink configuration `environment` uses: ``extra`` plus the settings above."""
        merged = {str(k): str(v) for k, v in (extra or {}).items()}
        for key, bad in state.UNMOVABLE_SETTINGS.items():
            if merged.get(key, "").strip().lower() == bad:
                raise TaskpointError(
                    f"{key}={merged[key]} makes Flink checkpoints reference files outside their "
                    "directory by absolute path, so they cannot be restored in another attempt "
                    "directory or on another machine; leave it off with taskpoint"
                )
        root = self._dir.path
        merged.update(
            {
                "execution.checkpointing.dir": (root / "checkpoints").as_uri(),
                "execution.checkpointing.savepoint-dir": (root / "savepoints").as_uri(),
                "execution.checkpointing.interval": f"{self.every_ms}ms",
                "execution.checkpointing.externalized-checkpoint-retention": (
                    "RETAIN_ON_CANCELLATION"
                ),
                "execution.checkpointing.num-retained": "2",
            }
        )
        if self.restart_attempts > 0:
            merged["restart-strategy.type"] = "fixed-delay"
            merged["restart-strategy.fixed-delay.attempts"] = str(self.restart_attempts)
        else:
            merged["restart-strategy.type"] = "none"
        if self.restore_path is not None:
            merged["execution.state-recovery.path"] = self.restore_path.as_uri()
            merged["execution.state-recovery.claim-mode"] = "NO_CLAIM"
        merged.setdefault("python.executable", sys.executable)
        return merged

    def environment(self, extra: Mapping[str, str] | None = None) -> StreamExecutionEnvironment:
        """A ``StreamExecutionEnvironment`` configured by `settings` (starts the JVM)."""
        conf = Configuration()
        for key, value in self.settings(extra).items():
            conf.set_string(key, value)
        env = StreamExecutionEnvironment.get_execution_environment(conf)
        self._dir.record_jvm(jvm_pid(_pyflink_gateway.get_gateway()))
        self._dir.retire_previous(self.jvm_exit_timeout)  # a killed attempt's JVM must be gone
        return env

    # ---------------------------------------------------------------------------- running
    def execute(
        self, env: StreamExecutionEnvironment, job_name: str = "taskpoint job"
    ) -> JobExecutionResult:
        """Run the job to its end, saving its completed checkpoints; see the module docs.

        A failed job raises `~taskpoint.RecoverableError` (chained to Flink's error), so
        ``@task(retries=N)`` retries it from the newest saved checkpoint; preemption raises
        `~taskpoint.Preempted` after the savepoint is committed.
        """
        client = env.execute_async(job_name)
        job_id = str(client.get_job_id())
        job_dir = self._dir.path / "checkpoints" / job_id
        result = client.get_job_execution_result()
        while True:
            if self._preempt.is_set():
                self._stop_with_savepoint(client, job_id, job_dir)
            done = result.done()
            try:
                self._persist_newest(job_dir, job_id)
            except Exception:
                if not done:
                    with contextlib.suppress(Exception):
                        client.cancel().result()  # do not leave it running unsaved
                raise
            if done:
                break
            time.sleep(self.poll_interval)
        try:
            return result.result()
        except Exception as exc:
            raise RecoverableError(
                f"Flink job {job_id} failed: {_first_line(exc)}; with @task(retries=N) the next "
                "attempt resumes it from its newest saved checkpoint"
            ) from exc

    def close(self) -> None:
        """Delete the local directory (pending saves hold their own staged copies)."""
        self._dir.remove()

    def __enter__(self) -> FlinkCheckpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------- internals
    def _persist_newest(self, job_dir: Path, job_id: str) -> None:
        newest = state.newest_checkpoint(job_dir, self._last)
        if newest is None:
            return
        number, path = newest
        meta = {"kind": "checkpoint", "id": number, "job": job_id}
        try:
            self._save(path, number, meta)
        except Preempted:
            self._preempt.set()  # committed; the savepoint comes next
        self._last = number

    def _save(self, source: Path, step: int | None, meta: dict[str, Any]) -> bool:
        staging = self._dir.path / f"snapshot-{uuid.uuid4().hex}"
        try:
            if not state.take(source, staging, meta):
                return False  # retired by Flink meanwhile; a newer one exists
            self.checkpoint.save(
                staging, step=step, metadata={"taskpoint.flink": meta["kind"]}, blocking=False
            )
            return True
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _stop_with_savepoint(self, client: JobClient, job_id: str, job_dir: Path) -> None:
        location = self._savepoint(client)
        if location is not None:
            meta = {"kind": "savepoint", "after": self._last, "job": job_id}
            with contextlib.suppress(Preempted):
                if not self._save(Path(urlparse(location).path), _step_of(meta), meta):
                    raise CheckpointError(f"the savepoint at {location} vanished before its copy")
        else:
            with contextlib.suppress(Exception):
                client.cancel().result()
            with contextlib.suppress(Preempted):
                self._persist_newest(job_dir, job_id)
        self.checkpoint.wait()
        ctx = self._ctx
        raise Preempted(
            f"Flink job {job_id} stopped on preemption "
            + ("with a savepoint" if location else "without a savepoint (newest checkpoint kept)")
            + "; the next attempt resumes from it",
            execution_id=ctx.execution_id if ctx else None,
            node=ctx.node if ctx else None,
        )

    def _savepoint(self, client: JobClient) -> str | None:
        """Stop the job with a canonical savepoint; its location, or None if that failed.

        A job whose tasks are still being deployed refuses savepoints for a moment: retried for
        up to ``savepoint_retry_s``. Waiting happens in Python, so the engine's grace-period
        alarm can still interrupt it.
        """
        gateway = _pyflink_gateway.get_gateway()
        canonical = gateway.jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
        target = (self._dir.path / "savepoints").as_uri()
        deadline = time.monotonic() + self.savepoint_retry_s
        while True:
            try:
                future = client._j_job_client.stopWithSavepoint(False, target, canonical)
                while not future.isDone():
                    time.sleep(0.05)
                return str(future.get())
            except Preempted:
                raise
            except Exception as exc:
                reason = _first_line(exc)
                if time.monotonic() < deadline and "not all required tasks" in reason.lower():
                    time.sleep(0.25)
                    continue
                log.warning("taskpoint: stop-with-savepoint failed: %s", reason)
                return None


def _step_of(meta: dict[str, Any]) -> int:
    """The step a payload is saved under: the Flink checkpoint number, or for a savepoint the
    number of the last checkpoint before it (0 if none)."""
    if meta.get("kind") == "checkpoint":
        return int(meta["id"])
    return int(meta.get("after") or 0)


def _first_line(exc: BaseException) -> str:
    """The innermost Java cause's message of a py4j error, on one line."""
    text = str(exc)
    causes = [line for line in text.splitlines() if line.startswith("Caused by:")]
    line = causes[-1] if causes else text.strip().splitlines()[-1] if text.strip() else repr(exc)
    return line.removeprefix("Caused by: ").strip()
