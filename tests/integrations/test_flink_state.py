"""Flink checkpoint directories as task checkpoint payloads (pure file logic: no PyFlink, no JVM).

``_metadata`` bytes are built the way Flink writes paths: Java ``writeUTF`` (a two-byte length,
then the text).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# The module needs no PyFlink, but its package does (importing it names the missing extra).
pytest.importorskip("pyflink", reason="needs the flink extra (.ci/run runs it in its own venv)")

from taskpoint.errors import CheckpointError
from taskpoint.integrations.flink import _state as fs

pytestmark = pytest.mark.slow  # kills processes, starts a JVM or a browser


def utf(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def checkpoint_dir(root: Path, number: int, metadata: bytes, files: dict[str, str]) -> Path:
    chk = root / f"chk-{number}"
    chk.mkdir(parents=True)
    for name, text in files.items():
        (chk / name).write_text(text)
    (chk / "_metadata").write_bytes(metadata)
    return chk


def test_newest_completed_checkpoint_is_found(tmp_path: Path) -> None:
    job = tmp_path / "job"
    assert fs.newest_checkpoint(job, None) is None
    checkpoint_dir(job, 3, b"m", {})
    checkpoint_dir(job, 12, b"m", {})
    (job / "chk-13").mkdir()  # in progress: no _metadata yet
    (job / "shared").mkdir()
    assert fs.newest_checkpoint(job, None) == (12, job / "chk-12")
    assert fs.newest_checkpoint(job, 12) is None
    assert fs.newest_checkpoint(job, 4) == (12, job / "chk-12")


def test_relative_and_inlined_state_is_copied_with_its_description(tmp_path: Path) -> None:
    job = tmp_path / "job"
    inline_name = f"file:{job}/chk-2/0b9f-inline"  # a name only: small state lives in _metadata
    meta = b"\x49\x60\x67\x2d" + utf(inline_name) + utf("7c1e-state-file") + b"\x00rest"
    chk = checkpoint_dir(job, 2, meta, {"7c1e-state-file": "state bytes"})
    dest = tmp_path / "payload"
    assert fs.take(chk, dest, {"kind": "checkpoint", "id": 2})
    assert (dest / fs.STATE_DIR / "7c1e-state-file").read_text() == "state bytes"
    assert (dest / fs.STATE_DIR / "_metadata").read_bytes() == meta
    assert json.loads((dest / fs.META_FILE).read_text()) == {
        "format": fs.FORMAT,
        "kind": "checkpoint",
        "id": 2,
    }
    assert fs.read_meta(dest)["id"] == 2


def test_state_referenced_by_absolute_path_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "job" / "shared" / "sst-000042"
    shared.parent.mkdir(parents=True)
    shared.write_text("incremental RocksDB file")
    meta = b"\x01" + utf(f"file:{shared}") + b"\x7fnext-field"
    chk = checkpoint_dir(tmp_path / "job", 5, meta, {})
    with pytest.raises(CheckpointError, match="absolute path"):
        fs.take(chk, tmp_path / "payload", {"kind": "checkpoint", "id": 5})
    assert fs.absolute_references(meta) == [str(shared)]


def test_a_checkpoint_deleted_while_copied_is_skipped(tmp_path: Path) -> None:
    assert not fs.take(tmp_path / "job" / "chk-9", tmp_path / "payload", {"kind": "checkpoint"})


def test_restored_payload_without_description_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="not Flink state"):
        fs.read_meta(tmp_path)
