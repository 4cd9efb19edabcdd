"""Counts of the faults the suite injects, summed over the session and printed at its end.

Tests call `record("kills")` etc. as they inject faults, and `record("versions_lost", n)` with
what they measured before asserting on it, so the summary shows what really happened.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

COUNTS: Counter[str] = Counter()

LABELS = {
    "kills": "SIGKILLs injected (drivers, attempts, writers)",
    "sigterms": "SIGTERM preemptions injected",
    "sigstops": "attempts frozen with SIGSTOP (zombies)",
    "corruptions": "corruptions and hostile checkpoints tried",
    "enospc": "writes into a full filesystem",
    "s3_faults": "S3 connections dropped or stalled mid-upload by the proxy",
    "executions": "executions run to completion under faults",
    "commits_checked": "committed versions checked after a fault",
    "versions_lost": "committed versions lost",
    "torn_reads": "torn checkpoints read",
    "bad_inputs": "bad inputs tried (API and CLI)",
}


def record(kind: str, n: int = 1) -> None:
    COUNTS[kind] += n


def summary_lines() -> list[str]:
    lines = ["taskpoint fault-injection summary:"]
    for kind, label in LABELS.items():
        lines.append(f"  {COUNTS.get(kind, 0):6d}  {label}")
    for kind in sorted(set(COUNTS) - set(LABELS)):
        lines.append(f"  {COUNTS[kind]:6d}  {kind}")
    return lines


def write_summary(directory: Path) -> Path:
    path = directory / "faults-summary.json"
    path.write_text(json.dumps(dict(sorted(COUNTS.items())), indent=2) + "\n")
    return path


def env_seed(default: int) -> int:
    """The suite's seed: ``TASKPOINT_FAULTS_SEED`` overrides the fixed default."""
    return int(os.environ.get("TASKPOINT_FAULTS_SEED", default))
