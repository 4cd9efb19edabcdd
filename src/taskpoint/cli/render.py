"""What the CLI prints: the JSON shapes of executions, and their human rendering.

Every time in JSON is ISO 8601 in UTC with its offset (``2026-12-02T10:30:00.123+00:00``);
durations are seconds (``duration_s``: wall time, ``running_s``: time its drivers or attempts
ran; see `taskpoint.engine.execution` for how both are defined). Human output shows local time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sysconfig
import time
from pathlib import Path
from typing import Any

from taskpoint.engine.execution import Attempt, Budget, Execution, Node, record_times
from taskpoint.engine.goodput import execution_totals, node_ledger
from taskpoint.records import ExecutionRecord
from taskpoint.records.preview import preview_text, preview_value
from taskpoint.records.status import AttemptStatus, ExecutionStatus, NodeStatus

BUDGET_LABELS = {"retries": "retries", "system_retries": "system"}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def local_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def duration(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return "-"
    return seconds_text(end - start)


def times_text(wall: float, running: float, runs: int) -> str:
    """``7.20s``, or ``7.20s (ran 3.10s in 2 driver runs)`` when it spans several driver runs
    (the wall time then counts the gaps between them, the running time does not)."""
    text = seconds_text(wall)
    return f"{text} (ran {seconds_text(running)} in {runs} driver runs)" if runs > 1 else text


def budgets_text(budgets: dict[str, Budget] | dict[str, list[int]] | None) -> str:
    """``retries 1/3, system 0/3``: the retries each budget spent, of how many."""
    if not budgets:
        return ""
    parts = []
    for name, label in BUDGET_LABELS.items():
        value = budgets.get(name)
        if value is None:
            continue
        spent, limit = (value.spent, value.limit) if isinstance(value, Budget) else value
        parts.append(f"{label} {spent}/{limit}")
    return ", ".join(parts)


def exhausted_text(name: str | None, budgets: Any) -> str:
    """``no retry left: retries 3/3 spent`` for the budget a failed node ran out of."""
    if name is None:
        return ""
    value = budgets.get(name) if budgets else None
    if isinstance(value, Budget):
        value = [value.spent, value.limit]
    count = f" {value[0]}/{value[1]}" if value else ""
    return f"no retry left: {BUDGET_LABELS.get(name, name)}{count} spent"


# -- where the user's code raised ----------------------------------------------------------------

_FRAME = re.compile(r'^  File "(?P<file>[^"\n]+)", line (?P<line>\d+), in (?P<func>.+)$', re.M)
_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep  # taskpoint's own code


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return tuple(str(Path(d).resolve()) + os.sep for d in dirs if d)


def user_frame(traceback_text: str | None) -> str | None:
    """Where user code raised, from a stored traceback: its innermost frame outside taskpoint
    and the Python installation (stdlib, site-packages), else outside taskpoint, as
    ``file:line in function`` (the file relative to the working directory when under it)."""
    if not traceback_text:
        return None
    frames = [m.groups() for m in _FRAME.finditer(traceback_text)]
    frames = [f for f in frames if not f[0].startswith("<")]  # <frozen ...>, <string>
    ours = [f for f in frames if not _resolved(f[0]).startswith(_PACKAGE)]
    libraries = _library_dirs()
    users = [f for f in ours if not _resolved(f[0]).startswith(libraries)]
    chosen = users or ours
    if not chosen:
        return None
    file, line, func = chosen[-1]
    try:
        relative = os.path.relpath(file)
        if not relative.startswith(".."):
            file = relative
    except ValueError:
        pass  # another drive
    return f"{file}:{line} in {func}"


def _resolved(file: str) -> str:
    try:
        return str(Path(file).resolve())
    except (OSError, RuntimeError):
        return file


def failure_frame(execution: Execution) -> str | None:
    """Where the user's code raised the error that ended ``execution``: the failed node's last
    attempt's traceback, else the execution's own."""
    for node in execution.nodes:
        if node.key == execution.failed_node and node.attempts:
            found = user_frame(node.attempts[-1].traceback)
            if found:
                return found
    return user_frame(execution.traceback)


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def version_dict(v: Any) -> dict[str, Any]:
    return {
        "id": v.id,
        "attempt": v.attempt,
        "step": v.step,
        "size": v.size,
        "kind": v.kind,
        "files": v.files,
        "created": v.created.isoformat(timespec="milliseconds"),
    }


def attempt_dict(a: Attempt, now: float) -> dict[str, Any]:
    return {
        "n": a.n,
        "status": a.status,
        "error": a.error,
        "started": iso(a.started),
        "ended": iso(a.ended),
        "duration_s": round(a.duration(now), 3),
        "pid": a.pid,
        "checkpoint_at_start": a.checkpoint_at_start,
        "checkpoint_at_end": a.checkpoint_at_end,
        "last_commit": iso(a.last_commit),  # when it committed checkpoint_at_end (its own)
        "driver_run": a.run,
        "budget": a.budget,  # the budget its retry spent: retries | system_retries | null
        "traceback": a.traceback,
    }


def node_dict(node: Node, checkpoints: list[Any], now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    done = node.status == NodeStatus.SUCCEEDED
    started, wall, running, runs = node.times(now)
    ledgers, goodput = node_ledger(node, now)  # engine/goodput.py defines the figures
    budgets = None
    if node.budgets is not None:
        budgets = {k: {"spent": b.spent, "limit": b.limit} for k, b in node.budgets.items()}
    return {
        "key": node.key,
        "task": node.task,
        "status": node.status,
        # The stored preview (the value as JSON, or its bounded repr): never unpickled.
        "output": preview_value(node.output_preview) if done else None,
        "output_preview": preview_text(node.output_preview) if done else None,
        "error": node.error,
        "started": iso(started),
        "ended": iso(node.ended),
        "duration_s": round(wall, 3),
        "running_s": round(running, 3),
        "driver_runs": runs,
        # Retries spent from attempt `budget_from` on (a failed node resumed starts afresh).
        "budgets": budgets,
        "budget_from": node.budget_from,
        "exhausted": node.exhausted,
        "attempts": [
            {**attempt_dict(a, now), "ledger": ledger.as_dict()}
            for a, ledger in zip(node.attempts, ledgers, strict=True)
        ],
        "goodput": goodput.as_dict(),
        "checkpoints": [version_dict(v) for v in checkpoints],
    }


def execution_dict(
    execution: Execution, checkpoints: dict[str, list[Any]], now: float | None = None
) -> dict[str, Any]:
    now = time.time() if now is None else now
    done = execution.status == ExecutionStatus.SUCCEEDED
    wall, running, runs = execution.times(now)
    interrupted = execution.status == ExecutionStatus.INTERRUPTED
    return {
        "id": execution.id,
        "name": execution.name,
        "status": execution.status,
        # The stored preview (the value as JSON, or its bounded repr): never unpickled.
        "result": preview_value(execution.result_preview) if done else None,
        "result_preview": preview_text(execution.result_preview) if done else None,
        "error": execution.error,
        "failed_node": execution.failed_node,
        "inputs": json.loads(execution.inputs) if execution.inputs else None,
        "created": iso(execution.created),
        "started": iso(execution.first_started),  # its first driver run's start
        "last_run_started": iso(execution.started),  # the latest driver run's (resume)
        "ended": iso(execution.ended),
        "last_seen": iso(execution.until(now)) if interrupted else None,
        "duration_s": round(wall, 3),
        "running_s": round(running, 3),
        "driver_runs": runs,
        "storage": execution.storage,
        "traceback": execution.traceback,
        "goodput": execution_totals(execution, now).as_dict(),
        "nodes": [node_dict(n, checkpoints.get(n.key, []), now) for n in execution.nodes],
    }


def list_row(
    rec: ExecutionRecord, status: str, now: float, activity: float | None = None
) -> dict[str, Any]:
    """One execution as `taskpoint list --json` gives it (the web view adds a few fields)."""
    wall, running, runs, end = record_times(rec, status, now, activity)
    return {
        "id": rec.id,
        "name": rec.name,
        "status": status,
        "created": iso(rec.created),
        "started": iso(rec.created),  # its first driver run's start
        "ended": iso(rec.ended),
        "last_seen": iso(end) if status == ExecutionStatus.INTERRUPTED else None,
        "duration_s": round(wall, 3),
        "running_s": round(running, 3),
        "driver_runs": runs,
        "failed_node": rec.failed_node,
        "inputs": json.loads(rec.inputs) if rec.inputs else None,
    }


STATUS_STYLE: dict[str, str] = {
    AttemptStatus.SUCCEEDED: "green",
    AttemptStatus.FAILED: "red",
    AttemptStatus.RECOVERABLE: "yellow",
    AttemptStatus.PREEMPTED: "magenta",
    AttemptStatus.LOST: "red",
    AttemptStatus.ABORTED: "yellow",
    ExecutionStatus.INTERRUPTED: "red",
    AttemptStatus.RUNNING: "cyan",
}


def styled(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/{style}]" if style else status
