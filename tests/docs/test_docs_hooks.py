"""The build-time generators of docs/hooks/: what they read from the code and the suites' JSON,
and that drift between the code and the reference stops the build."""

from __future__ import annotations

import json
import math
from pathlib import Path

import docgen
import docgen_facts
import docgen_results
import pytest
from docgen_cli import cli_reference
from docs_blocks import ROOT, doc_files
from mkdocs.exceptions import PluginError

from taskpoint.records import schema


def test_unknown_placeholder_stops_the_build() -> None:
    with pytest.raises(PluginError, match="unknown placeholder 'generated: nonsense'"):
        docgen.expand("a\n<!-- generated: nonsense -->\n", where="x.md")


def test_failing_generator_names_the_page() -> None:
    with pytest.raises(PluginError, match=r"x\.md: 'generated: fault-counts' failed"):
        docgen.expand("<!-- generated: fault-counts test_no_such_module -->", where="x.md")


def test_every_placeholder_in_the_docs_expands() -> None:
    pages = [p for p in doc_files() if "<!-- generated:" in p.read_text(encoding="utf-8")]
    assert len(pages) >= 6  # cli, configuration, exit codes, storage, records, results
    for page in pages:
        text = docgen.expand(page.read_text(encoding="utf-8"), where=str(page))
        assert "<!-- generated:" not in text


def test_cli_reference_has_every_command() -> None:
    from taskpoint.cli.app import cli

    page = cli_reference()
    assert cli.commands  # the generator imported every command module
    for name in cli.commands:
        assert f"### `taskpoint {name}`" in page
        assert f"Usage: taskpoint {name}" in page
    assert "--storage-timeout" in page and "--from-scratch" in page


def test_a_config_key_without_a_description_stops_the_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from taskpoint.engine import project

    assert "`storage-timeout`" in docgen_facts.config_keys()
    monkeypatch.setattr(project, "KEYS", (*project.KEYS, "new-key"))
    with pytest.raises(docgen_facts.DocsOutOfDate, match="new-key"):
        docgen_facts.config_keys()


def test_environment_variables_are_the_ones_the_source_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = docgen_facts._environment_in_code()
    assert {"TASKPOINT_HOME", "TASKPOINT_STORAGE", "TASKPOINT_STORAGE_TIMEOUT"} <= found
    monkeypatch.setattr(docgen_facts, "_environment_in_code", lambda: found | {"TASKPOINT_NEW"})
    with pytest.raises(docgen_facts.DocsOutOfDate, match="TASKPOINT_NEW"):
        docgen_facts.environment_variables()


def test_exit_codes_table() -> None:
    table = docgen_facts.exit_codes()
    assert "| `143` | `preempted` |" in table and "| `2` |  |" in table


def test_records_schema_lists_every_column() -> None:
    page = docgen_facts.records_schema()
    for columns in (schema.EXECUTION_COLUMNS, schema.NODE_COLUMNS, schema.ATTEMPT_COLUMNS):
        for column in columns.split(","):
            assert f"| `{column.strip()}` |" in page
    assert f"Schema version **{schema.SCHEMA_VERSION}**" in page
    assert "| `work_lost_s` | REAL |  | 4 |" in page


def _bench(tmp_path: Path) -> Path:
    rows = [
        {
            "metric": "1 sync write",
            "taskpoint": 2.0,
            "baseline": 1.0,
            "unit": "GiB/s",
            "ratio": 2.0,
            "target": ">= 0.9 x baseline",
            "ok": True,
            "note": "",
        },
        {
            "metric": "1   safetensors",
            "taskpoint": math.nan,
            "baseline": None,
            "unit": "",
            "ratio": None,
            "target": "(info)",
            "ok": None,
            "note": "skipped: pip install x",
        },
        {
            "metric": "6 goodput | SIGKILL",
            "taskpoint": 170.0,
            "baseline": 134.5,
            "unit": "s",
            "ratio": 1.264,
            "target": "<= 1.15 x baseline",
            "ok": False,
            "note": "8 kills",
        },
    ]
    path = tmp_path / "benchmarks.json"
    path.write_text(json.dumps({"params": {}, "machine": {}, "rows": rows}))  # NaN as written
    return path


def test_benchmark_table_renders_rows_as_the_suite_wrote_them(tmp_path: Path) -> None:
    table = docgen_results.benchmark_table(_bench(tmp_path))
    assert "### 1. Sync write throughput" in table and "### 6. Goodput" in table
    assert "| sync write | 2 | 1 | GiB/s | 2 | >= 0.9 x baseline | pass |  |" in table
    assert "| &nbsp;&nbsp;&nbsp;&nbsp;safetensors |  |  |  |  |  | skipped |" in table
    assert "goodput \\| SIGKILL" in table and "**FAIL**" in table
    assert "1 targets pass and 1 do not" in table
    with pytest.raises(ValueError, match="no rows for target 3"):
        docgen_results.benchmark_table(_bench(tmp_path), "3")


def test_committed_results_render() -> None:
    data = ROOT / "docs" / "data"
    assert "| CPUs |" in docgen_results.benchmark_machine(data / "benchmarks.json")
    totals = docgen_results.fault_totals(data / "faults.json")
    assert "**0 committed versions lost**" in totals


def test_fault_counts_use_the_suites_labels(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    counts = {"kills": 3, "versions_lost": 0, "custom": 2}
    path.write_text(json.dumps({"total": counts, "by_module": {"test_x": counts}}))
    line = docgen_results.fault_counts(path, "test_x")
    assert line == (
        "3 SIGKILLs injected (drivers, attempts, writers), **0 committed versions lost**, 2 custom"
    )
    with pytest.raises(ValueError, match="no counts for test_y"):
        docgen_results.fault_counts(path, "test_y")


def test_rows_table_and_data_file_names(tmp_path: Path) -> None:
    table = docgen_results.rows_table(_bench(tmp_path))
    assert table.count("\n| ") == 3  # one line per row after the header and separator
    assert "| 1 sync write | 2 |" in table  # a module's own rows are shown as written
    with pytest.raises(PluginError, match=r"a \.json file in docs/data/"):
        docgen.expand("<!-- generated: result-rows ../../secret.json -->")
