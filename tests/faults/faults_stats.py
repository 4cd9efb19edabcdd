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
BY_MODULE: dict[str, Counter[str]] = {}
CURRENT = {"module": "other"}  # the test module running now (set by conftest)

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
    BY_MODULE.setdefault(CURRENT["module"], Counter())[kind] += n


def summary_lines() -> list[str]:
    lines = ["taskpoint fault-injection summary:"]
    for kind, label in LABELS.items():
        lines.append(f"  {COUNTS.get(kind, 0):6d}  {label}")
    for kind in sorted(set(COUNTS) - set(LABELS)):
        lines.append(f"  {COUNTS[kind]:6d}  {kind}")
    lines.append("  by test module:")
    for module, counts in sorted(BY_MODULE.items()):
        detail = ", ".join(f"{kind}={n}" for kind, n in sorted(counts.items()))
        lines.append(f"    {module}: {detail}")
    return lines


def write_summary(directory: Path) -> Path:
    path = directory / "faults-summary.json"
    doc = {
        "total": dict(sorted(COUNTS.items())),
        "by_module": {m: dict(sorted(c.items())) for m, c in sorted(BY_MODULE.items())},
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def env_seed(default: int) -> int:
    """The suite's seed: ``TASKPOINT_FAULTS_SEED`` overrides the fixed default."""
    return int(os.environ.get("TASKPOINT_FAULTS_SEED", default))
