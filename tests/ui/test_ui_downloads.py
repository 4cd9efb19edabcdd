"""Downloads: a version as a tar stream, verified, in bounded memory; the view writes nothing."""

from __future__ import annotations

import base64
import http.client
import io
import json
import shutil
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from ui_support import SEED, base_url, get, serving, tree_state

from taskpoint.engine import blobs


def tar_of(response) -> tarfile.TarFile:
    assert response.status == 200, response.body
    assert response.headers["Content-Type"] == "application/x-tar"
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "attachment" in response.headers["Content-Disposition"]
    return tarfile.open(fileobj=io.BytesIO(response.body))


def test_seed_version_downloads_as_a_tar_of_its_payload(ui_home, ui_server):
    seed = ui_home.ids["seed"]
    url = f"{base_url(ui_server)}/api/executions/{seed}/nodes/use_checkpoint%231/checkpoints"
    with tar_of(get(f"{url}/0003-000004.tar")) as tar:
        assert tar.getnames() == ["0003-000004", "0003-000004/data"]
        assert tar.extractfile("0003-000004/data").read() == b"12"
    with tar_of(get(f"{url}/0003-000003.tar")) as tar:
        assert tar.extractfile("0003-000003/data").read() == b"11"


def test_directory_version_keeps_tree_empty_dirs_and_links(ui_home, ui_server):
    eid = ui_home.ids["pipeline"]
    url = f"{base_url(ui_server)}/api/executions/{eid}/nodes/prepare%231/checkpoints"
    url += "/0001-000002.tar"
    with tar_of(get(url)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        root = "0001-000002"
        assert members[f"{root}/empty"].isdir()
        assert members[f"{root}/latest"].issym()
        assert members[f"{root}/latest"].linkname == "shards/part-0.bin"
        part = tar.extractfile(f"{root}/shards/part-0.bin").read()
        assert part == bytes(range(256)) * 40
        assert tar.extractfile(f"{root}/meta.json").read() == b'{"rows": 100}'


def test_large_version_streams_without_holding_it_in_memory(ui_home, ui_server):
    eid = ui_home.ids["big"]
    conn = http.client.HTTPConnection("127.0.0.1", ui_server.port, timeout=30)
    tracemalloc.start()
    try:
        conn.request("GET", f"/api/executions/{eid}/nodes/big%231/checkpoints/0001-000001.tar")
        response = conn.getresponse()
        assert response.status == 200
        total, head = 0, b""
        while chunk := response.read(256 * 1024):
            head = head or chunk[:1024]
            total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        conn.close()
    assert total >= 16 << 20
    assert head[:11] == b"0001-000001"  # the first member's name in its tar header
    assert peak < 6 << 20, f"the 16 MiB download peaked at {peak / 2**20:.1f} MiB of Python memory"


def test_corrupt_payload_is_refused_before_any_byte_is_sent(ui_home, tmp_path):
    # A copy of the store, read through --storage (so the shared home stays intact).
    storage = tmp_path / "blobs"
    shutil.copytree(ui_home.path / "blobs", storage)
    seed = ui_home.ids["seed"]
    scope = Path(blobs.checkpoint_url(str(storage), seed, "use_checkpoint#1"))
    # the version is inline (its bytes in its manifest): same size, wrong checksum
    manifest = scope / "v" / "0003-000004.manifest.json"
    doc = json.loads(manifest.read_bytes())
    doc["inline"] = base64.b64encode(b"99").decode()
    manifest.write_text(json.dumps(doc))
    with serving(ui_home.path, storage=str(storage)) as server:
        url = f"{base_url(server)}/api/executions/{seed}/nodes/use_checkpoint%231/checkpoints"
        # Its only file fails verification before the response starts: an error, no tar.
        refused = get(f"{url}/0003-000004.tar")
        assert refused.status == 502
        assert "does not match its manifest checksum" in refused.json()["error"]
        # An intact version of the same copy still downloads.
        with tar_of(get(f"{url}/0003-000003.tar")) as tar:
            assert tar.extractfile("0003-000003/data").read() == b"11"


def test_corrupt_later_file_aborts_the_download_instead_of_serving_wrong_bytes(ui_home, tmp_path):
    storage = tmp_path / "blobs"
    shutil.copytree(ui_home.path / "blobs", storage)
    eid = ui_home.ids["pipeline"]
    scope = Path(blobs.checkpoint_url(str(storage), eid, "prepare#1"))
    manifest = json.loads((scope / "v" / "0001-000002.manifest.json").read_bytes())
    first, *_, last = [f["path"] for f in manifest["files"]]
    damaged = scope / "v" / "0001-000002" / last
    size = damaged.stat().st_size
    damaged.write_bytes((b"LEAK" * size)[:size])  # same size, wrong checksum
    with serving(ui_home.path, storage=str(storage)) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", f"/api/executions/{eid}/nodes/prepare%231/checkpoints/0001-000002.tar")
        response = conn.getresponse()
        assert response.status == 200  # the first file was intact: the archive started
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        conn.close()
    assert b"LEAK" not in cut.value.partial  # nothing of the damaged file was sent
    assert f"0001-000002/{first}".encode() in cut.value.partial


def test_the_view_writes_nothing_to_the_records_or_the_store(ui_home, ui_server):
    before = tree_state(ui_home.path)
    db_bytes = (ui_home.path / "taskpoint.db").read_bytes()
    base = base_url(ui_server)
    for eid in ui_home.ids.values():
        assert get(f"{base}/api/executions/{eid}").status == 200
        assert get(f"{base}/api/executions/{eid}/checkpoints").status == 200
        assert get(f"{base}/executions/{eid}").status == 200
    get(f"{base}/api/executions")
    seed = ui_home.ids["seed"]
    get(f"{base}/api/executions/{seed}/nodes/use_checkpoint%231/checkpoints/0003-000004.tar")
    assert tree_state(ui_home.path) == before
    assert (ui_home.path / "taskpoint.db").read_bytes() == db_bytes


def test_a_home_without_records_is_shown_empty_and_left_uncreated(tmp_path):
    home = tmp_path / "nothing-here"
    with serving(home) as server:
        response = get(f"{base_url(server)}/api/executions")
        assert response.status == 200 and response.json() == []
        assert get(f"{base_url(server)}/api/executions/abc").status == 404
    assert not home.exists()


def test_executions_on_an_fsspec_store_are_listed_and_downloaded(tmp_path):
    """The non-local store path (fsspec: listing, manifests, streamed files) over memory://."""
    import importlib.util
    import uuid

    from taskpoint.engine import Engine

    spec = importlib.util.spec_from_file_location("ui_seed_in_process", SEED)
    seed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed)
    engine = Engine(home=str(tmp_path / "home"), storage=f"memory://ui-{uuid.uuid4().hex}")
    execution = engine.run(seed.example, n_iterations=12)
    assert execution.status == "succeeded" and execution.storage.startswith("memory://")

    with serving(tmp_path / "home") as server:
        base = f"{base_url(server)}/api/executions/{execution.id}"
        doc = get(base).json()
        (node,) = doc["nodes"]
        assert [c["id"] for c in node["checkpoints"]] == ["0003-000003", "0003-000004"]
        with tar_of(get(f"{base}/nodes/use_checkpoint%231/checkpoints/0003-000004.tar")) as tar:
            assert tar.extractfile("0003-000004/data").read() == b"12"
