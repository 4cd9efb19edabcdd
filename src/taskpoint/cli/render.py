"""What the CLI prints: the JSON shape of an execution, and its human rendering."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from taskpoint.engine.execution import Execution, Node
from taskpoint.records.preview import preview_text, preview_value
from taskpoint.records.status import AttemptStatus, ExecutionStatus, NodeStatus


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def local_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def duration(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return "-"
    seconds = max(0.0, end - start)
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


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


def node_dict(node: Node, checkpoints: list[Any]) -> dict[str, Any]:
    done = node.status == NodeStatus.SUCCEEDED
    return {
        "key": node.key,
        "task": node.task,
        "status": node.status,
        # The stored preview (the value as JSON, or its bounded repr): never unpickled.
        "output": preview_value(node.output_preview) if done else None,
        "output_preview": preview_text(node.output_preview) if done else None,
        "error": node.error,
        "started": iso(node.started),
        "ended": iso(node.ended),
        "attempts": [
            {
                "n": a.n,
                "status": a.status,
                "error": a.error,
                "started": iso(a.started),
                "ended": iso(a.ended),
                "pid": a.pid,
                "checkpoint_at_start": a.checkpoint_at_start,
                "checkpoint_at_end": a.checkpoint_at_end,
            }
            for a in node.attempts
        ],
        "checkpoints": [version_dict(v) for v in checkpoints],
    }


def execution_dict(execution: Execution, checkpoints: dict[str, list[Any]]) -> dict[str, Any]:
    done = execution.status == ExecutionStatus.SUCCEEDED
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
        "started": iso(execution.started),
        "ended": iso(execution.ended),
        "storage": execution.storage,
        "nodes": [node_dict(n, checkpoints.get(n.key, [])) for n in execution.nodes],
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
