"""The web view's attempt logs, its 404 page and the paginated, searchable executions list.

Logs and the 404 page are checked over the shared home (real `taskpoint run`s, see
conftest.py); the list's pages and searches also over a records database holding 130
executions of every status, written through the engine's own `Records`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest
from ui_flows import MARKUP
from ui_support import FLOWS, Home, base_url, get, serving, tree_state

from support.fixtures import cli_command, tp_env
from support.polling import wait_until
from taskpoint.records import ExecutionRecord, Records
from taskpoint.records.liveness import hostname, process_token
from taskpoint.ui import logview
from taskpoint.ui.readonly import ExecutionQuery, ReadOnlyRecords
from taskpoint.ui.server import UiServer


def log_url(server: UiServer, eid: str, node: str, attempt: object, query: str = "") -> str:
    node = node.replace("#", "%23")
    return f"{base_url(server)}/api/executions/{eid}/nodes/{node}/attempts/{attempt}/log{query}"


def read_log(server: UiServer, eid: str, node: str, attempt: object, query: str = "") -> bytes:
    response = get(log_url(server, eid, node, attempt, query))
    assert response.status == 200, response.body
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    return response.body


def cli_logs(home: Home, eid: str, node: str, attempt: int) -> bytes:
    return subprocess.run(
        cli_command("--home", home.path, "logs", eid, node, "--attempt", str(attempt)),
        capture_output=True,
        env=tp_env(),
        timeout=60,
        check=True,
    ).stdout


# -- attempt logs ---------------------------------------------------------------------------------


def test_each_attempt_has_its_own_log_as_taskpoint_logs_prints_it(ui_home, ui_server):
    eid = ui_home.ids["chatty"]
    doc = get(f"{base_url(ui_server)}/api/executions/{eid}").json()
    assert [a["status"] for a in doc["nodes"][0]["attempts"]] == ["recoverable", "succeeded"]
    for n in (1, 2):
        body = read_log(ui_server, eid, "chatter#1", n)
        text = body.decode()
        lines = [f"attempt {n} line {i}" for i in range(40)]
        assert text.splitlines() == [*lines, MARKUP]  # stdout and stderr, in order
        assert f"attempt {3 - n} line" not in text
        assert body in cli_logs(ui_home, eid, "chatter#1", n)  # the same bytes as the CLI's


def test_a_log_is_read_from_an_offset_or_its_tail(ui_home, ui_server):
    eid = ui_home.ids["chatty"]
    whole = read_log(ui_server, eid, "chatter#1", 2)
    response = get(log_url(ui_server, eid, "chatter#1", 2))
    assert response.headers["X-Log-Start"] == "0"
    assert response.headers["X-Log-Size"] == str(len(whole))

    response = get(log_url(ui_server, eid, "chatter#1", 2, "?offset=100"))
    assert response.body == whole[100:]
    assert response.headers["X-Log-Start"] == "100"
    response = get(log_url(ui_server, eid, "chatter#1", 2, f"?offset={len(whole) + 50}"))
    assert response.status == 200 and response.body == b""
    assert response.headers["X-Log-Start"] == str(len(whole))  # nothing more yet

    response = get(log_url(ui_server, eid, "chatter#1", 2, "?tail=30"))
    assert response.body == whole[-30:]
    assert response.headers["X-Log-Start"] == str(len(whole) - 30)
    response = get(log_url(ui_server, eid, "chatter#1", 2, f"?tail={len(whole) * 2}"))
    assert response.body == whole and response.headers["X-Log-Start"] == "0"


def test_a_response_holds_a_bounded_piece_and_the_pieces_make_the_log(
    ui_home, ui_server, monkeypatch
):
    eid = ui_home.ids["chatty"]
    whole = read_log(ui_server, eid, "chatter#1", 1)
    monkeypatch.setattr(logview, "MAX_CHUNK", 100)
    pieces, offset = [], 0
    while True:
        response = get(log_url(ui_server, eid, "chatter#1", 1, f"?offset={offset}"))
        assert int(response.headers["X-Log-Start"]) == offset
        assert len(response.body) <= 100
        if not response.body:
            break
        pieces.append(response.body)
        offset += len(response.body)
    assert len(pieces) == -(-len(whole) // 100)
    assert b"".join(pieces) == whole
    tail = get(log_url(ui_server, eid, "chatter#1", 1, "?tail=5000"))
    assert tail.body == whole[-100:]  # a tail is bounded too


def test_an_attempt_that_printed_nothing_has_an_empty_log(ui_home, ui_server):
    before = tree_state(ui_home.path)
    eid = ui_home.ids["big"]
    response = get(log_url(ui_server, eid, "big#1", 1))
    assert response.status == 200 and response.body == b""
    assert response.headers["X-Log-Size"] == "0"
    assert tree_state(ui_home.path) == before  # nothing was created to answer


def test_a_running_attempts_log_is_read_as_it_grows(tmp_path):
    home, marker = tmp_path / "home", tmp_path / "go"
    proc = subprocess.Popen(
        cli_command("--home", home, "run", FLOWS, "waits_for", "--marker", marker),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=tp_env(),
    )
    try:
        with serving(home) as server:

            def running_id() -> str | None:
                response = get(f"{base_url(server)}/api/executions")
                assert response.status == 200, response.body  # also while the db is created
                rows = response.json()
                return rows[0]["id"] if rows else None

            eid = wait_until(running_id, 30, "the execution to be recorded", proc=proc)

            def log_with(lines: int) -> bytes:
                body = get(log_url(server, eid, "wait_for_file#1", 1)).body
                return body if body.count(b"\n") >= lines else b""

            first = wait_until(lambda: log_with(3), 30, "3 lines in the log", proc=proc)
            after = get(log_url(server, eid, "wait_for_file#1", 1, f"?offset={len(first)}"))
            assert int(after.headers["X-Log-Start"]) == len(first)
            grown = wait_until(lambda: log_with(first.count(b"\n") + 3), 30, "3 more", proc=proc)
            assert grown.startswith(first) and grown[len(first) :].startswith(after.body)
            marker.write_text("go")
            assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
            assert read_log(server, eid, "wait_for_file#1", 1).endswith(b"found the marker\n")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize(
    "attempt, node",
    [
        ("3", "chatter%231"),  # no such attempt
        ("0", "chatter%231"),
        ("01", "chatter%231"),  # numbers are matched as recorded
        ("-1", "chatter%231"),
        ("x", "chatter%231"),
        ("1", "chatter"),  # a task name, not a node key
        ("1", "..%2F..%2Fchatter-1"),
    ],
)
def test_an_unknown_attempt_or_node_is_a_json_404(ui_home, ui_server, attempt, node):
    eid = ui_home.ids["chatty"]
    url = f"{base_url(ui_server)}/api/executions/{eid}/nodes/{node}/attempts/{attempt}/log"
    response = get(url)
    assert response.status == 404 and "error" in response.json()


def test_an_unknown_execution_log_and_bad_offsets(ui_home, ui_server):
    assert get(log_url(ui_server, "nope", "chatter#1", 1)).status == 404
    eid = ui_home.ids["chatty"]
    for query in ("?offset=-1", "?offset=x", "?tail=-5", "?offset=1&tail=2"):
        response = get(log_url(ui_server, eid, "chatter#1", 1, query))
        assert response.status == 400 and "error" in response.json(), query


def test_a_log_needs_the_token_like_every_endpoint(ui_home):
    eid = ui_home.ids["chatty"]
    with serving(ui_home.path, host="0.0.0.0") as server:
        url = log_url(server, eid, "chatter#1", 1)
        assert get(url).status == 401
        assert get(url, {"Authorization": "Bearer wrong"}).status == 401
        response = get(url, {"Authorization": f"Bearer {server.token}"})
        assert response.status == 200 and b"attempt 1 line 0" in response.body


@pytest.fixture
def home_copy(ui_home: Home, tmp_path: Path) -> Path:
    """A copy of the shared home whose store a test may damage (served with --storage)."""
    copy = tmp_path / "home"
    shutil.copytree(ui_home.path, copy, symlinks=True)
    return copy


def _log_path(home: Path, eid: str, attempt: int) -> Path:
    return home / "blobs" / eid / "nodes" / "chatter-1" / "logs" / f"attempt-{attempt:04d}.log"


@pytest.mark.parametrize("kind", ["link", "fifo", "directory", "linked-dir"])
def test_a_log_that_is_not_a_plain_file_in_the_store_is_refused(ui_home, home_copy, kind):
    eid = ui_home.ids["chatty"]
    path = _log_path(home_copy, eid, 1)
    secret = home_copy.parent / "secret.txt"
    secret.write_text("the secret")
    path.unlink()
    if kind == "link":
        path.symlink_to(secret)
    elif kind == "fifo":
        os.mkfifo(path)  # opening it to read would block a reader that does not guard against it
    elif kind == "directory":
        path.mkdir()
    else:  # the logs directory itself is a link to a directory holding the "log"
        elsewhere = home_copy.parent / "elsewhere"
        elsewhere.mkdir()
        shutil.copy(secret, elsewhere / path.name)
        shutil.rmtree(path.parent)
        path.parent.symlink_to(elsewhere)
    with serving(home_copy, storage=str(home_copy / "blobs")) as server:
        response = get(log_url(server, eid, "chatter#1", 1))
        assert response.status == 502, response.body
        assert b"the secret" not in response.body
        assert "not a regular file" in response.json()["error"]
        other = get(log_url(server, eid, "chatter#1", 2))  # behind the same link, or intact
        assert other.status == 502 if kind == "linked-dir" else b"attempt 2 line 0" in other.body


# -- the page of an unknown execution -------------------------------------------------------------


def test_an_unknown_execution_page_is_a_readable_404(ui_home, ui_server):
    seed = ui_home.ids["seed"]
    for eid in ("nope", seed[:6]):  # a prefix of a real id is no id either
        response = get(f"{base_url(ui_server)}/executions/{eid}")
        assert response.status == 404
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        page = response.body.decode()
        assert "Unknown execution" in page and f"<code>{eid}</code>" in page
        assert 'href="/"' in page  # back to the list
    # The API keeps answering JSON.
    response = get(f"{base_url(ui_server)}/api/executions/nope")
    assert response.status == 404 and response.json() == {"error": "no execution 'nope'"}


def test_the_404_page_escapes_what_the_url_says(ui_server):
    response = get(f"{base_url(ui_server)}/executions/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    assert response.status == 404
    page = response.body.decode()
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_the_404_page_keeps_the_token_in_its_links(ui_home):
    with serving(ui_home.path, host="0.0.0.0") as server:
        base = f"http://127.0.0.1:{server.port}"
        response = get(f"{base}/executions/nope?token={server.token}")
        assert response.status == 404
        assert f'href="/?token={server.token}"' in response.body.decode()
        assert f"/static/ui.css?token={server.token}" in response.body.decode()
        assert get(f"{base}/executions/nope").status == 401  # and needs it like any page


def test_other_unknown_pages_are_html_and_unknown_api_paths_json(ui_server):
    page = get(f"{base_url(ui_server)}/no/such/page")
    assert page.status == 404 and page.headers["Content-Type"].startswith("text/html")
    assert "Page not found" in page.body.decode()
    for path in ("/api/nope", "/api/executions/x/y/z", "/static/nope.js"):
        response = get(base_url(ui_server) + path)
        assert response.status == 404 and "error" in response.json(), path


# -- the executions list: pages and searches ------------------------------------------------------

NAMES = ("train_model", "etl_daily", "report 100% done")
# (stored status, whether its driver is this live process): "interrupted" is a running row
# whose driver is gone.
KINDS = (
    ("succeeded", False),
    ("failed", False),
    ("running", True),
    ("running", False),
    ("preempted", False),
    ("succeeded", False),
    ("aborted", False),
)
COUNT = 130


def _effective(i: int) -> str:
    stored, alive = KINDS[i % len(KINDS)]
    return "interrupted" if stored == "running" and not alive else stored


def execution_record(
    eid: str, name: str, status: str, created: float, driver: int | None = None
) -> ExecutionRecord:
    """A row as a driver writes it; a running one is driven by the live process ``driver``,
    or by a process long gone."""
    running = status == "running"
    pid = driver or os.getpid()
    return ExecutionRecord(
        id=eid,
        name=name,
        kind="workflow",
        module="flows",
        file=None,
        qualname=name,
        inputs=json.dumps({"created": created}),
        inputs_ref=None,
        storage="unused",
        status=status,
        result_ref=None,
        error_type=None,
        error_message=None,
        traceback=None,
        failed_node=None,
        created=created,
        started=created,
        ended=None if running else created + 0.5,
        driver_pid=pid,
        driver_host=hostname(),
        driver_token=process_token(pid) if driver else "a driver long gone",
    )


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """A home with COUNT executions (newest first in the returned list)."""
    home = tmp_path_factory.mktemp("many") / "home"
    records = Records(home)
    expected = []
    for i in range(COUNT):
        stored, alive = KINDS[i % len(KINDS)]
        eid = hashlib.sha256(str(i).encode()).hexdigest()[:12]
        name = NAMES[i % len(NAMES)]
        driver = os.getpid() if alive else None
        records.create_execution(execution_record(eid, name, stored, 1_700_000_000.0 + i, driver))
        expected.append({"id": eid, "name": name, "status": _effective(i)})
    return home, expected[::-1]


@pytest.fixture(scope="module")
def many_server(many):
    with serving(many[0]) as server:
        yield server


def page(server: UiServer, query: str = "") -> tuple[list[dict], int, dict]:
    response = get(f"{base_url(server)}/api/executions{query}")
    assert response.status == 200, response.body
    counts = json.loads(response.headers["X-Status-Counts"])
    return response.json(), int(response.headers["X-Total-Count"]), counts


def ids(rows: list[dict]) -> list[str]:
    return [r["id"] for r in rows]


def test_the_list_is_paged_newest_first_50_by_default(many, many_server):
    _, expected = many
    rows, total, counts = page(many_server)
    assert total == COUNT and ids(rows) == ids(expected[:50])
    assert counts == dict(Counter(e["status"] for e in expected))
    assert [r["status"] for r in rows] == [e["status"] for e in expected[:50]]
    got = []
    for offset in range(0, COUNT + 40, 40):
        rows, total, _ = page(many_server, f"?limit=40&offset={offset}")
        assert total == COUNT
        got += rows
    assert ids(got) == ids(expected)
    assert page(many_server, f"?offset={COUNT}")[0] == []


@pytest.mark.parametrize("status", ["running", "interrupted", "failed", "succeeded", "aborted"])
def test_a_status_filter_pages_through_that_status_only(many, many_server, status):
    _, expected = many
    want = [e for e in expected if e["status"] == status]
    got = []
    for offset in range(0, len(want) + 7, 7):
        rows, total, counts = page(many_server, f"?status={status}&limit=7&offset={offset}")
        assert total == len(want) and counts[status] == len(want)
        got += rows
    assert ids(got) == ids(want)


def _search(expected: list[dict], q: str) -> list[dict]:
    q = q.lower()
    return [
        e for e in expected if e["id"].startswith(q) or q in e["name"].lower() or e["status"] == q
    ]


@pytest.mark.parametrize(
    "q",
    [
        "ETL",  # a part of the name, ignoring case
        "Report 100",
        "%",  # LIKE's wildcards are plain characters here
        "l_d",
        "_",
        "interrupted",  # a status
        "running",
        "failed",
        "nothing like it",
    ],
)
def test_a_search_matches_names_and_statuses(many, many_server, q):
    _, expected = many
    want = _search(expected, q)
    rows, total, counts = page(many_server, f"?q={quote(q)}&limit=1000")
    assert ids(rows) == ids(want) and total == len(want)
    assert counts == dict(Counter(e["status"] for e in want))


def test_a_search_matches_an_id_prefix_and_combines_with_a_status(many, many_server):
    _, expected = many
    target = expected[17]
    rows, total, _ = page(many_server, f"?q={target['id'][:5].upper()}")
    assert target["id"] in ids(rows) and all(r["id"].startswith(target["id"][:5]) for r in rows)
    assert total == len(rows)
    want = [e for e in _search(expected, "train") if e["status"] == "failed"]
    rows, total, counts = page(many_server, "?q=train&status=failed&limit=3&offset=3")
    assert ids(rows) == ids(want[3:6]) and total == len(want)
    assert counts == dict(Counter(e["status"] for e in _search(expected, "train")))


@pytest.mark.parametrize(
    "query",
    ["?offset=-1", "?offset=x", "?limit=0", "?limit=1001", "?status=nope", "?q=" + "x" * 201],
)
def test_bad_list_parameters_are_400(many_server, query):
    response = get(f"{base_url(many_server)}/api/executions{query}")
    assert response.status == 400 and "error" in response.json()


@pytest.mark.parametrize(
    "query",
    [
        ExecutionQuery(),
        ExecutionQuery(status="failed"),
        ExecutionQuery(status="interrupted"),
        ExecutionQuery(q="etl"),
        ExecutionQuery(q="running"),
        ExecutionQuery(status="succeeded", q="train"),
    ],
)
def test_a_page_walks_the_index_on_created(many, query):
    records = ReadOnlyRecords(many[0] / "taskpoint.db")
    try:
        sql, params, _ = records.page_sql(query, 50, 50)
        plan = " | ".join(row[-1] for row in records.db.query(f"EXPLAIN QUERY PLAN {sql}", params))
    finally:
        records.db.close()  # type: ignore[attr-defined]
    # A status filter walks (status, created); the others walk created: either way in order,
    # never a sort of every matching row.
    index = "executions_status" if query.status else "executions_created"
    assert f"USING INDEX {index}" in plan and "TEMP B-TREE" not in plan, plan


def test_pages_of_the_real_home_are_those_of_taskpoint_list(ui_home, ui_server):
    every = subprocess.run(
        cli_command("--home", ui_home.path, "list", "--json"),
        capture_output=True,
        text=True,
        env=tp_env(),
        timeout=60,
        check=True,
    ).stdout
    cli_ids = [r["id"] for r in json.loads(every)]
    got = []
    for offset in range(0, len(cli_ids), 2):
        rows, total, _ = page(ui_server, f"?limit=2&offset={offset}")
        assert total == len(cli_ids)
        got += ids(rows)
    assert got == cli_ids


def test_the_counts_follow_new_executions_and_drivers_that_die(tmp_path):
    """Counts are kept while the database is unchanged: a new row shows at once, and so does
    a driver that died (which writes nothing)."""
    home = tmp_path / "home"
    records = Records(home)
    records.create_execution(execution_record("aaaaaaaaaaaa", "first", "succeeded", 1.0))
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with serving(home) as server:
            assert page(server)[1:] == (1, {"succeeded": 1})
            assert page(server)[1:] == (1, {"succeeded": 1})  # counted once, reused
            running = execution_record("bbbbbbbbbbbb", "second", "running", 2.0, driver.pid)
            records.create_execution(running)
            rows, total, counts = page(server)
            assert ids(rows) == ["bbbbbbbbbbbb", "aaaaaaaaaaaa"]
            assert (total, counts) == (2, {"running": 1, "succeeded": 1})
            driver.kill()
            driver.wait()
            rows, total, counts = page(server)
            assert [r["status"] for r in rows] == ["interrupted", "succeeded"]
            assert (total, counts) == (2, {"succeeded": 1, "interrupted": 1})
    finally:
        driver.kill()
        driver.wait()
