"""The web view over a store someone else can write to (DESIGN.md, trust boundaries).

- Downloads never send a byte that was not verified: a payload replaced by a link to a file
  outside the store (its size set to match, or under-claimed), a FIFO, a directory, a file longer
  than its manifest says, or a file that changes between verification and sending.
- One damaged manifest among good versions never breaks a page: the execution, its checkpoint
  lists and the page answer 200, the good versions are listed as usual and the damaged one is
  listed with the reason.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import tarfile
from pathlib import Path

import crc32c
import pytest
from ui_support import base_url, get, serving

import taskpoint
from taskpoint import current_context, task, workflow
from taskpoint.checkpoint.manifest import FileEntry, Manifest
from taskpoint.engine import blobs
from taskpoint.ui import tarstream

# These tests damage payload files: every write here has one (no inline versions).
pytestmark = pytest.mark.usefixtures("payload_files")

SECRET = b"root:$6$very-secret-password-hash:19000:0:99999:7:::\n" * 3


@task(keep=20, keep_checkpoints_on_success="all")
def stepper(steps: int) -> int:
    cp = current_context().checkpoint
    for i in range(steps):
        cp.write(f"state {i + 1}".encode(), step=i + 1, metadata={"i": i})
    return steps


@workflow
def stepping(steps: int) -> int:
    return stepper(steps=steps)


@pytest.fixture
def store(tp_home: Path) -> tuple[str, Path]:
    """A real execution with versions 0001-000001..0001-000005; its id and its ``v/``."""
    execution = taskpoint.run(stepping, steps=5)
    assert execution.status == "succeeded"
    scope = Path(blobs.checkpoint_url(execution.storage, execution.id, "stepper#1"))
    return execution.id, scope / "v"


def _manifest(vdir: Path, vid: str) -> dict:
    return json.loads((vdir / f"{vid}.manifest.json").read_bytes())


def _write_manifest(vdir: Path, vid: str, doc: dict | bytes) -> None:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    path = vdir / f"{vid}.manifest.json"
    path.unlink()
    path.write_bytes(raw)


def _download(server, eid: str, vid: str) -> tuple[int, bytes, bool]:
    """(status, every body byte received, whether the body was complete)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        conn.request("GET", f"/api/executions/{eid}/nodes/stepper%231/checkpoints/{vid}.tar")
        response = conn.getresponse()
        try:
            return response.status, response.read(), True
        except http.client.IncompleteRead as cut:
            return response.status, cut.partial, False
    finally:
        conn.close()


# -- downloads -----------------------------------------------------------------------------------


def _plant_payload(vdir: Path, vid: str, make) -> None:
    payload = vdir / vid / "data"
    payload.unlink()
    make(payload)


@pytest.mark.parametrize(
    "claimed",
    [len(SECRET), 16, 0],
    ids=["size-matches-the-secret", "under-claimed", "zero"],
)
def test_a_payload_linked_to_a_file_outside_the_store_sends_nothing_of_it(
    tp_home, store, tmp_path, claimed
):
    eid, vdir = store
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)
    _plant_payload(vdir, "0001-000003", lambda p: p.symlink_to(secret))
    doc = _manifest(vdir, "0001-000003")
    doc["files"][0]["size"] = claimed  # as an attacker who knows (or guesses) the size would
    _write_manifest(vdir, "0001-000003", doc)
    with serving(tp_home) as server:
        status, body, _ = _download(server, eid, "0001-000003")
        assert SECRET[:8] not in body and b"very-secret" not in body
        assert status == 502, body
        assert "link" in json.loads(body)["error"]
        assert _download(server, eid, "0001-000002")[0] == 200  # the others still download


@pytest.mark.parametrize("claimed", ["intact-prefix", "zero"])
def test_a_longer_file_than_its_manifest_says_sends_nothing(tp_home, store, claimed):
    eid, vdir = store
    payload = vdir / "0001-000003" / "data"
    payload.write_bytes(b"state 3" + b" and then LEAKED bytes")  # the claimed prefix is intact
    if claimed == "zero":
        doc = _manifest(vdir, "0001-000003")
        doc["files"][0].update(size=0, crc32c=0)  # an empty file, as far as the manifest says
        _write_manifest(vdir, "0001-000003", doc)
    with serving(tp_home) as server:
        status, body, _ = _download(server, eid, "0001-000003")
    assert status == 502 and b"state 3" not in body and b"LEAKED" not in body
    assert "longer than its manifest" in json.loads(body)["error"]


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_a_payload_that_is_not_a_regular_file_is_refused_at_once(tp_home, store, kind):
    eid, vdir = store
    if kind == "fifo":
        make = os.mkfifo  # opening it for reading would block forever
    elif kind == "directory":
        make = os.mkdir
    else:
        make = lambda p: p.symlink_to("/dev/zero")  # noqa: E731
    _plant_payload(vdir, "0001-000003", make)
    with serving(tp_home) as server:
        status, body, _ = _download(server, eid, "0001-000003")
    assert status == 502, body
    assert "not a regular file" in json.loads(body)["error"] or "link" in json.loads(body)["error"]


def test_a_file_changed_after_verification_is_cut_before_the_changed_chunk(monkeypatch):
    """Pass 1 verifies the file; pass 2 (same handle, after seek(0)) sees other bytes from the
    second chunk on: nothing of that chunk reaches the output."""
    monkeypatch.setattr(tarstream, "CHUNK", 1024)
    good = bytes(range(256)) * 12  # 3 chunks of 1024
    changed = good[:1024] + b"X" * (len(good) - 1024)

    class Swapping(io.BytesIO):
        def seek(self, offset: int, whence: int = 0) -> int:
            self.__init__(changed)  # the file is rewritten once it was verified
            return super().seek(offset, whence)

    entry = FileEntry("data", len(good), crc32c.crc32c(good))
    manifest = Manifest(id="0001-000001", attempt=1, seq=1, kind="bytes", files=[entry])
    out = io.BytesIO()
    with pytest.raises(tarstream.CorruptPayload, match="changed after it was verified"):
        tarstream.VersionTar(manifest, lambda vid, e: Swapping(good)).write(out)
    assert b"X" * 64 not in out.getvalue()  # nothing of the changed chunks went out


def test_a_verified_version_round_trips_through_the_two_passes(monkeypatch):
    monkeypatch.setattr(tarstream, "CHUNK", 1000)  # not a multiple of tar's blocks: re-slicing
    files = {"a": os.urandom(2500), "d/b": b"", "d/c": os.urandom(1000)}
    entries = [FileEntry(p, len(d), crc32c.crc32c(d)) for p, d in files.items()]
    manifest = Manifest(id="0001-000001", attempt=1, seq=1, kind="dir", files=entries)
    manifest.dirs = ["d"]
    out = io.BytesIO()
    started = []
    tarstream.VersionTar(manifest, lambda vid, e: io.BytesIO(files[e.path])).write(
        out, lambda: started.append(len(out.getvalue()))
    )
    assert started == [0]
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        for path, data in files.items():
            assert tar.extractfile(f"0001-000001/{path}").read() == data


# -- damaged manifests ---------------------------------------------------------------------------


def _nested(doc: dict, depth: int) -> bytes:
    raw = json.dumps({**doc, "metadata": {}}).encode()
    return raw.replace(
        b'"metadata": {}', b'"metadata": {"x": ' + b"[" * depth + b"]" * depth + b"}"
    )


DAMAGE = {
    "file-below-a-file": lambda d: {
        **d,
        "kind": "dir",
        "files": [
            {"path": "a", "size": 1, "crc32c": 0},
            {"path": "a/b", "size": 1, "crc32c": 0},
        ],
    },
    "created-out-of-range": lambda d: {**d, "created": "0001-01-01T00:00:00+14:00"},
    "metadata-100000-deep": lambda d: _nested(d, 100_000),
    "name-of-300-chars": lambda d: {
        **d,
        "kind": "dir",
        "files": [{"path": "x" * 300, "size": 1, "crc32c": 0}],
    },
    "not-json": lambda d: b'{"taskpoint_manifest": 1, "id": ',
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_one_damaged_manifest_is_shown_damaged_and_everything_else_as_usual(tp_home, store, damage):
    eid, vdir = store
    _write_manifest(vdir, "0001-000003", DAMAGE[damage](_manifest(vdir, "0001-000003")))
    good = ["0001-000001", "0001-000002", "0001-000004", "0001-000005"]
    with serving(tp_home) as server:
        _check_pages(server, eid, good, "0001-000003")


def test_a_manifest_replaced_by_a_link_or_a_fifo_is_shown_damaged(tp_home, store, tmp_path):
    eid, vdir = store
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes((vdir / "0001-000002.manifest.json").read_bytes())
    (vdir / "0001-000002.manifest.json").unlink()
    (vdir / "0001-000002.manifest.json").symlink_to(elsewhere)
    (vdir / "0001-000004.manifest.json").unlink()
    os.mkfifo(vdir / "0001-000004.manifest.json")  # reading it would block forever
    with serving(tp_home) as server:
        doc = _check_pages(server, eid, ["0001-000001", "0001-000003", "0001-000005"], None)
    damaged = {d["id"]: d["reason"] for d in doc["damaged_checkpoints"]}
    assert set(damaged) == {"0001-000002", "0001-000004"}
    assert all("link" in r or "regular file" in r for r in damaged.values()), damaged


def test_any_exception_while_reading_a_version_is_that_versions_damage(tp_home, store, monkeypatch):
    """Whatever the parser raises (not only ManifestError) stays with the version."""
    from taskpoint.ui import scopes

    real = scopes.parse_manifest

    def parse(raw: bytes, vid: str):
        if vid == "0001-000004":
            raise RecursionError("maximum recursion depth exceeded")
        return real(raw, vid)

    monkeypatch.setattr(scopes, "parse_manifest", parse)
    eid, _ = store
    with serving(tp_home) as server:
        doc = _check_pages(
            server, eid, ["0001-000001", "0001-000002", "0001-000003", "0001-000005"], None
        )
    assert doc["damaged_checkpoints"] == [
        {"id": "0001-000004", "reason": "RecursionError: maximum recursion depth exceeded"}
    ]


def _check_pages(server, eid: str, good: list[str], damaged: str | None) -> dict:
    """Every page and endpoint answers 200; ``good`` are listed as usual and ``damaged`` (if
    given) is listed as damaged with a reason. Returns the node's document."""
    base = base_url(server)
    execution = get(f"{base}/api/executions/{eid}")
    assert execution.status == 200, execution.body
    (node,) = execution.json()["nodes"]
    assert [c["id"] for c in node["checkpoints"]] == good
    assert [p["version"] for p in node["work"]["points"] if p["kind"] == "commit"] == good
    for url in (f"{base}/api/executions/{eid}/checkpoints",
                f"{base}/api/executions/{eid}/nodes/stepper%231/checkpoints"):  # fmt: skip
        listing = get(url)
        assert listing.status == 200, listing.body
        (listed,) = listing.json()["nodes"]
        assert [c["id"] for c in listed["checkpoints"]] == good
        assert listed["damaged_checkpoints"] == node["damaged_checkpoints"]
    assert get(f"{base}/executions/{eid}").status == 200
    assert get(f"{base}/api/executions").status == 200
    if damaged is not None:
        (row,) = node["damaged_checkpoints"]
        assert row["id"] == damaged and row["reason"]
        refused = get(f"{base}/api/executions/{eid}/nodes/stepper%231/checkpoints/{damaged}.tar")
        assert refused.status == 502 and "damaged" in refused.json()["error"]
    for vid in good:
        assert _download(server, eid, vid)[0] == 200
    return node


def test_an_object_store_payload_is_verified_before_it_is_sent(tp_home):
    """The fsspec path (memory://): an object longer than its manifest says sends nothing."""
    import uuid

    import fsspec

    from taskpoint.engine import Engine

    engine = Engine(storage=f"memory://ui-hostile-{uuid.uuid4().hex}")
    execution = engine.run(stepping, steps=3)
    assert execution.status == "succeeded"
    fs = fsspec.filesystem("memory")
    vdir = blobs.checkpoint_url(execution.storage, execution.id, "stepper#1") + "/v"
    fs.pipe_file(f"{vdir}/0001-000002/data", b"state 2 and then LEAKED bytes")
    with serving(tp_home) as server:
        status, body, _ = _download(server, execution.id, "0001-000002")
        assert status == 502 and b"LEAKED" not in body and b"state 2" not in body
        assert "longer than its manifest" in json.loads(body)["error"]
        assert _download(server, execution.id, "0001-000003")[0] == 200


def test_the_page_shows_the_damaged_version_and_the_stored_previews(tp_home, store, tmp_path):
    """In headless Chromium (skipped without it): the damaged version is listed with its reason
    next to the usable ones, and the result and output shown are the stored previews."""
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("/usr/bin/chromium is absent (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    eid, vdir = store
    _write_manifest(vdir, "0001-000003", DAMAGE["not-json"]({}))
    problems: list[str] = []
    with serving(tp_home) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-proxy-server"],
        )
        try:
            page = browser.new_page()
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.goto(f"{base_url(server)}/executions/{eid}")
            damaged = page.wait_for_selector('ul.damaged li[data-version="0001-000003"]')
            assert "damaged: manifest" in damaged.inner_text()
            rows = page.locator("table.checkpoints tbody tr")
            assert [rows.nth(i).get_attribute("data-version") for i in range(rows.count())] == [
                "0001-000001",
                "0001-000002",
                "0001-000004",
                "0001-000005",
            ]
            assert page.locator(".summary .result").inner_text() == "result: 5"
            assert page.locator("section.node .result").inner_text() == "output: 5"
        finally:
            browser.close()
    assert not problems, problems
