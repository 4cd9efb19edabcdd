"""Fault: a planted pickle in the blob store (or in a record row) meets the read-only views.

Whoever can write the blob store can replace an execution's stored inputs, result or a node's
output with a pickle that runs ``os.system`` when it is loaded (and whoever can write the records
database, a small output kept inline in it). ``taskpoint list``, ``show``, ``show --json``,
``checkpoints`` and the web view (its JSON API and its pages) are read-only: they must never
unpickle anything, and show the bounded previews stored when the values were produced. The
marker file the pickle would create never appears. An older records database (written before
previews existed) is shown with "(no preview stored)", still without unpickling, and the web view
reads it without migrating it.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from faults_procs import DEADLINE, cli_command, tp_env
from faults_stats import record

import taskpoint
from taskpoint import task, workflow
from taskpoint.engine import blobs
from taskpoint.engine.node import INLINE_OUTPUT_MAX
from taskpoint.records import schema
from taskpoint.records.preview import NO_PREVIEW, PREVIEW_CHARS

UI_TESTS = Path(__file__).resolve().parents[1] / "ui"


@dataclass
class Summary:
    rows: int
    label: str


@task
def count(n: int) -> dict:
    return {"rows": n, "ok": True}


@task
def blob(n: int) -> bytes:
    return b"x" * (INLINE_OUTPUT_MAX + 8000)  # too large to be kept inline: output.pkl


@workflow
def summarise(n: int, label: str) -> Summary:
    count(n=n)
    blob(n=n)
    return Summary(rows=n, label=label)


class _Boom:
    """Unpickling this runs ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(home: Path, execution, marker: Path) -> None:
    """The evil pickle in place of every stored value: inputs, result, the large node output
    (blob store) and the small one (its record row)."""
    evil = pickle.dumps(_Boom(marker))
    base = blobs.execution_url(execution.storage, execution.id)
    for ref in (
        f"{base}/inputs.pkl",
        f"{base}/result.pkl",
        f"{blobs.node_url(execution.storage, execution.id, 'blob#1')}/output.pkl",
    ):
        assert Path(ref).is_file(), ref
        Path(ref).write_bytes(evil)
    with sqlite3.connect(home / "taskpoint.db") as db:
        (inline,) = db.execute("SELECT output FROM nodes WHERE key='count#1'").fetchone()
        assert inline is not None  # the small output is kept in the row
        db.execute("UPDATE nodes SET output=? WHERE key='count#1'", (evil,))
    record("corruptions")


def _cli(home: Path, *args: str) -> str:
    done = subprocess.run(
        cli_command(*args), capture_output=True, text=True, env=tp_env(home), timeout=DEADLINE
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _web(home: Path, execution_id: str) -> dict:
    """Every read-only endpoint and page of the web view; the execution document."""
    sys.path.insert(0, str(UI_TESTS))
    try:
        from ui_support import base_url, get, serving
    finally:
        sys.path.remove(str(UI_TESTS))
    with serving(home) as server:
        base = base_url(server)
        answers = {
            path: get(base + path)
            for path in (
                "/",
                "/api/executions",
                f"/executions/{execution_id}",
                f"/api/executions/{execution_id}",
                f"/api/executions/{execution_id}/checkpoints",
                f"/api/executions/{execution_id}/nodes/count%231/checkpoints",
            )
        }
    for path, answer in answers.items():
        assert answer.status == 200, (path, answer.body)
    return answers[f"/api/executions/{execution_id}"].json()


@pytest.fixture
def planted(tp_home: Path, tmp_path: Path):
    execution = taskpoint.run(summarise, n=3, label="abc")
    assert execution.status == "succeeded", execution.error
    marker = tmp_path / "pwned"
    _plant(tp_home, execution, marker)
    return execution, marker


def test_read_only_views_show_previews_and_never_unpickle(planted, tp_home):
    execution, marker = planted
    eid = execution.id
    views = [
        ("list",),
        ("list", "--json"),
        ("show", eid),
        ("show", eid, "--json"),
        ("checkpoints", eid),
        ("checkpoints", eid, "--json"),
        ("checkpoints", eid, "count"),
    ]
    out = {}
    for args in views:
        out[args] = _cli(tp_home, *args)
        assert not marker.exists(), f"`taskpoint {' '.join(args)}` unpickled a planted pickle"
    web = _web(tp_home, eid)
    assert not marker.exists(), "the web view unpickled a planted pickle"

    assert eid in out[("list",)] and '{"n": 3, "label": "abc"}' in out[("list",)]
    assert json.loads(out[("list", "--json")])[0]["id"] == eid
    shown = out[("show", eid)]
    assert "result: Summary(rows=3, label='abc')" in shown
    assert "{'rows': 3, 'ok': True}" in shown and "b'xxxx" in shown

    doc = json.loads(out[("show", eid, "--json")])
    assert doc["result"] == "Summary(rows=3, label='abc')"  # a repr: not plain data
    assert doc["result_preview"] == "Summary(rows=3, label='abc')"
    assert doc["inputs"] == {"n": 3, "label": "abc"}
    nodes = {n["key"]: n for n in doc["nodes"]}
    assert nodes["count#1"]["output"] == {"rows": 3, "ok": True}  # plain data: as itself
    large = nodes["blob#1"]["output"]
    assert large.startswith("b'xxx") and len(large) <= PREVIEW_CHARS  # bounded
    assert f"({INLINE_OUTPUT_MAX + 8000} bytes)" in large

    assert web["result"] == doc["result"] and web["result_preview"] == doc["result_preview"]
    assert [n["output"] for n in web["nodes"]] == [n["output"] for n in doc["nodes"]]
    assert web["inputs"] == doc["inputs"]


def _downgrade(db_path: Path) -> None:
    """Make the database what taskpoint wrote before previews existed (schema version 1)."""
    with sqlite3.connect(db_path) as db:
        for table in ("executions", "nodes", "attempts"):
            columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            kept = ", ".join(c for c in columns if c not in schema.ADDED_IN)
            db.execute(f"CREATE TABLE old_{table} AS SELECT {kept} FROM {table}")
            db.execute(f"DROP TABLE {table}")
            db.execute(f"ALTER TABLE old_{table} RENAME TO {table}")
        db.execute("PRAGMA user_version=1")


def test_records_from_before_previews_show_none_and_still_never_unpickle(planted, tp_home):
    execution, marker = planted
    db_path = tp_home / "taskpoint.db"
    _downgrade(db_path)

    # The web view reads the old database as it is: read-only, never migrated.
    web = _web(tp_home, execution.id)
    assert not marker.exists(), "the web view unpickled a planted pickle"
    assert web["result"] is None and web["result_preview"] == NO_PREVIEW
    assert [n["output_preview"] for n in web["nodes"]] == [NO_PREVIEW, NO_PREVIEW]
    with sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)

    # The CLI migrates it (columns are added, rows kept) and shows the same.
    out = {}
    for args in (("show", execution.id), ("show", execution.id, "--json"), ("list",)):
        out[args] = _cli(tp_home, *args)
        assert not marker.exists(), f"`taskpoint {' '.join(args)}` unpickled a planted pickle"
    _cli(tp_home, "checkpoints", execution.id)
    assert f"result: {NO_PREVIEW}" in out[("show", execution.id)]
    doc = json.loads(out[("show", execution.id, "--json")])
    assert doc["result_preview"] == NO_PREVIEW and doc["inputs"] == {"n": 3, "label": "abc"}
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
        assert db.execute("SELECT count(*) FROM nodes").fetchone() == (2,)
    assert not marker.exists(), "a read-only view unpickled a planted pickle"


def test_previews_are_bounded_and_made_for_every_node(tp_home):
    @task
    def huge() -> list:
        return list(range(1_000_000))

    @workflow
    def flow() -> list:
        return huge()

    execution = taskpoint.run(flow)
    assert execution.status == "succeeded" and len(execution.result) == 1_000_000
    doc = json.loads(_cli(tp_home, "show", execution.id, "--json"))
    for text in (doc["result"], doc["nodes"][0]["output"]):
        assert isinstance(text, str) and text.startswith("[0, 1, 2,") and len(text) < 400
    # A run that needs the value still gets it: the real result, not the preview.
    assert taskpoint.resume(execution.id).result == list(range(1_000_000))
