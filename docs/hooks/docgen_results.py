"""The Performance and Reliability tables, rendered from the suites' own JSON output.

``docs/data/benchmarks.json`` is what ``python -m benchmarks`` writes (its ``params``,
``machine``, ``seconds`` and ``rows``); ``docs/data/faults.json`` is the ``faults-summary.json``
that ``pytest tests/faults`` writes. Refreshing the pages means copying a newer file over the
old one; nothing in these tables is typed by hand.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Any

# The performance targets, by the number each benchmark row starts with.
SECTIONS = {
    1: "Sync write throughput",
    2: "Async save: how long the training loop is blocked",
    3: "Training-loop overhead",
    4: "Restore",
    5: "Small checkpoints",
    6: "Goodput under failures, and restart",
    7: "Engine overhead",
    8: "How the cost grows",
    9: "Multi-process training: sharded checkpoints and rank groups",
}
_ROW = re.compile(r"^(\d+)( +)(.*)$")
REPO = Path(__file__).resolve().parents[2]


def _load(path: Path) -> Any:
    # The suite writes NaN for a skipped measurement: Python's json reads it.
    return json.loads(path.read_text(encoding="utf-8"))


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, int | float):
        return f"{value:.4g}"
    return str(value)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _rows_by_section(doc: dict[str, Any]) -> dict[int, list[tuple[bool, dict[str, Any]]]]:
    sections: dict[int, list[tuple[bool, dict[str, Any]]]] = {}
    for row in doc["rows"]:
        match = _ROW.match(row["metric"])
        if match is None:
            raise ValueError(f"benchmark row without a target number: {row['metric']!r}")
        number, indent, metric = int(match.group(1)), match.group(2), match.group(3)
        sections.setdefault(number, []).append((len(indent) > 1, {**row, "metric": metric}))
    return sections


def _verdict(row: dict[str, Any]) -> str:
    if isinstance(row["taskpoint"], float) and math.isnan(row["taskpoint"]):
        return "skipped"
    return {True: "pass", False: "**FAIL**", None: "info"}[row["ok"]]


def _section_table(rows: list[tuple[bool, dict[str, Any]]]) -> str:
    lines = [
        "| metric | taskpoint | baseline | unit | ratio | target | result | notes |",
        "|---|---:|---:|---|---:|---|---|---|",
    ]
    for detail, row in rows:
        metric = ("&nbsp;&nbsp;&nbsp;&nbsp;" if detail else "") + _cell(row["metric"])
        target = row["target"] if row["target"] not in ("(info)", "") else ""
        cells = [
            metric,
            _number(row["taskpoint"]),
            _number(row["baseline"]),
            row["unit"],
            _number(row["ratio"]),
            _cell(target),
            _verdict(row),
            _cell(row.get("note") or ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rows_table(path: Path) -> str:
    """The rows of one benchmark module's own output (e.g. ``python -m benchmarks.goodput``,
    whose rows carry no target number), as one table."""
    rows = _load(path)["rows"]
    return _section_table([(False, row) for row in rows])


def benchmark_table(path: Path, only: str | None = None) -> str:
    """One table per target (or only target ``only``), each under a heading."""
    sections = _rows_by_section(_load(path))
    wanted = sorted(sections) if only is None else [int(only)]
    parts = []
    for number in wanted:
        if number not in sections:
            raise ValueError(f"{path.name} has no rows for target {number}")
        title = SECTIONS.get(number, f"Target {number}")
        parts += [f"### {number}. {title}", "", _section_table(sections[number])]
    rows = [row for section in sections.values() for _, row in section]
    passed = sum(1 for row in rows if row["ok"] is True)
    failed = [row for row in rows if row["ok"] is False]
    if only is None:
        parts.append(f"{passed} targets pass and {len(failed)} do not in this run.\n")
    return "\n".join(parts)


def benchmark_machine(path: Path) -> str:
    """The machine and the run's settings, as the suite recorded them."""
    doc = _load(path)
    machine, params, seconds = doc["machine"], doc["params"], doc.get("seconds", {})
    facts = [
        ("CPUs", machine.get("cpus")),
        ("memory", f"{machine.get('memory_gib')} GiB"),
        (
            "disk",
            f"{machine.get('disk')}, {machine.get('disk_size_gib')} GiB, "
            f"{machine.get('filesystem')}",
        ),
        ("kernel", machine.get("kernel")),
        ("Python", machine.get("python")),
        ("torch", machine.get("torch")),
        (
            "load average at start / end",
            f"{machine.get('load_at_start')} / {machine.get('load_at_end')}",
        ),
        (
            "sections run (seconds)",
            ", ".join(f"{k} {v:.0f}" for k, v in seconds.items() if k != "total"),
        ),
        ("whole run", f"{seconds['total'] / 60:.1f} minutes" if "total" in seconds else ""),
    ]
    sizes = [
        ("torch state", f"{params.get('state_mib')} MiB and {params.get('large_mib')} MiB"),
        ("bytes payload", f"{params.get('io_mib')} MiB"),
        ("sync write sizes", f"{params.get('write_mib')} MiB"),
        (
            "goodput job",
            f"{params.get('job_s')} s, a failure every {params.get('every')} s, "
            f"{params.get('goodput_state_mib')} MiB state saved every "
            f"{params.get('ckpt_every')} s",
        ),
        ("rounds per measurement", params.get("repeats")),
    ]
    if "io" not in str(params.get("only", "io")):  # a run of the scale/multi-process sections
        sizes = [
            ("executions in one home", params.get("scale_execs")),
            (
                "items mapped",
                f"{params.get('scale_items')} (process: {params.get('scale_process_items')})",
            ),
            ("versions in one scope", params.get("scale_versions")),
            ("small files in one directory version", params.get("scale_files")),
            (
                "S3 version",
                f"{params.get('scale_s3_mib')} MiB, {params.get('scale_s3_repeats')} rounds",
            ),
            ("sharded state over 2 ranks", f"{params.get('sharded_mib')} MiB"),
            (
                "rank group restarts",
                f"{params.get('ranks_kills')} SIGKILLs, "
                f"{params.get('ranks_state_mib')} MiB DDP state",
            ),
            ("rounds per measurement", params.get("scale_repeats")),
        ]
    lines = ["| Machine | |", "|---|---|"]
    lines += [f"| {name} | {_cell(value)} |" for name, value in facts]
    lines += ["", "| Setting | |", "|---|---|"]
    lines += [f"| {name} | {_cell(value)} |" for name, value in sizes]
    baselines = machine.get("baselines", {})
    if baselines:
        lines += ["", "Measured on the machine without taskpoint, and what its probe chose:", ""]
        lines += [f"- {_cell(entry['text'])}" for entry in baselines.values()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ faults
def _labels() -> dict[str, str]:
    """The suite's own wording of each counter (tests/faults/faults_stats.py)."""
    source = REPO / "tests" / "faults" / "faults_stats.py"
    spec = importlib.util.spec_from_file_location("taskpoint_faults_stats", source)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {source}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.LABELS)


def _counts(counts: dict[str, int]) -> str:
    labels = _labels()
    ordered = [k for k in labels if k in counts] + sorted(set(counts) - set(labels))
    parts = []
    for kind in ordered:
        text = f"{counts[kind]} {labels.get(kind, kind)}"
        # The counters that must stay at zero are the guarantee itself: make them stand out.
        parts.append(f"**{text}**" if kind in ("versions_lost", "torn_reads") else text)
    return ", ".join(parts)


def fault_counts(path: Path, module: str | None) -> str:
    """The counters one test module recorded, as one line (for a table cell)."""
    if not module:
        raise ValueError("fault-counts needs a test module name, e.g. test_random_kills")
    by_module = _load(path)["by_module"]
    if module not in by_module:
        raise ValueError(f"{path.name} has no counts for {module} (it has {sorted(by_module)})")
    return _counts(by_module[module])


def fault_totals(path: Path) -> str:
    """The session's totals as a list."""
    totals = _load(path)["total"]
    labels = _labels()
    ordered = [k for k in labels if k in totals] + sorted(set(totals) - set(labels))
    lines = []
    for kind in ordered:
        text = f"{totals[kind]} {labels.get(kind, kind)}"
        lines.append(f"- **{text}**" if kind in ("versions_lost", "torn_reads") else f"- {text}")
    return "\n".join(lines) + "\n"
