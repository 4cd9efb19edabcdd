"""Sharded `TorchCheckpointer` versions: written by every rank, committed once, read by all.

Ranks are real processes (gloo on CPU), started by ``sharded_ranks.launch`` as torchrun would.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.checkpoint")

from sharded_ranks import launch  # noqa: E402

from taskpoint.checkpoint import Checkpoint, CheckpointWarning  # noqa: E402
from taskpoint.integrations.torch import TorchCheckpointer  # noqa: E402

pytestmark = pytest.mark.slow


def _manifest(url: Path, vid: str) -> dict:
    return json.loads((url / "v" / f"{vid}.manifest.json").read_text())


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(32, 1)
    )


@pytest.mark.parametrize("blocking", [True, False])
def test_two_ranks_commit_one_version_listing_every_rank_s_files(tmp_path, blocking):
    url, out = tmp_path / "scope", tmp_path / "out"
    out.mkdir()
    codes = launch("save", 2, {"url": str(url), "out": str(out), "wrap": "ddp", "saves": 3,
                               "blocking": blocking})  # fmt: skip
    assert codes == [0, 0]
    versions = json.loads((out / "versions.json").read_text())
    assert versions == ["0001-000002", "0001-000003"]  # keep=2: one version per save
    manifest = _manifest(url, versions[-1])
    assert manifest["kind"] == "dir" and manifest["step"] == 3
    assert manifest["metadata"] == {"format": "taskpoint.torch.sharded/1", "world_size": 2}
    paths = {f["path"] for f in manifest["files"]}
    assert paths == {"dcp/r00000.bin", "dcp/r00001.bin", "dcp/index.json", "ranks/00000.tpt",
                     "ranks/00001.tpt"}  # fmt: skip
    assert all(isinstance(f["crc32c"], int) for f in manifest["files"])
    # DDP replicas are deduplicated: each rank wrote a share of the state, not all of it.
    sizes = {f["path"]: f["size"] for f in manifest["files"]}
    assert sizes["dcp/r00000.bin"] > 0 and sizes["dcp/r00001.bin"] > 0
    # Nothing but the committed versions is left (retention swept the first one's files).
    assert sorted(os.listdir(url / "v")) == sorted(
        [*versions, *(f"{v}.manifest.json" for v in versions)]
    )


def test_a_rank_killed_before_the_commit_leaves_garbage_that_is_swept(tmp_path):
    url, out = tmp_path / "scope", tmp_path / "out"
    out.mkdir()
    args = {"url": str(url), "out": str(out), "wrap": "ddp", "saves": 2, "die_at": 2,
            "die_rank": 1}  # fmt: skip
    codes = launch("save", 2, args, grace=3)
    assert codes[1] == -9 and codes[0] != 0  # rank 0 waited at the commit: ended by the launcher
    entries = sorted(os.listdir(url / "v"))
    # Rank 1 wrote its files of 0001-000002 but it never committed: no manifest for it.
    assert "0001-000001.manifest.json" in entries and "0001-000002.manifest.json" not in entries
    assert (url / "v" / "0001-000002" / "dcp" / "r00001.bin").exists()
    with Checkpoint.open(url, readonly=True) as cp:
        assert [v.id for v in cp.versions()] == ["0001-000001"]
    # The next attempt's first save sweeps the dead attempt's prefix.
    args = {"url": str(url), "out": str(out), "wrap": "ddp", "saves": 1, "attempt": 2}
    assert launch("save", 2, args) == [0, 0]
    entries = sorted(os.listdir(url / "v"))
    assert "0001-000002" not in entries
    assert json.loads((out / "versions.json").read_text()) == ["0001-000001", "0002-000001"]


def test_all_ranks_fall_back_together_past_a_damaged_shard(tmp_path):
    url, out = tmp_path / "scope", tmp_path / "out"
    out.mkdir()
    args = {"url": str(url), "out": str(out), "wrap": "ddp", "saves": 2}
    assert launch("save", 2, args) == [0, 0]
    version = url / "v" / "0001-000002"
    index = json.loads((version / "dcp" / "index.json").read_text())
    # A tensor of rank 1's file: [fqn, chunk offsets, file, offset, nbytes, crc32c, dtype, shape]
    item = next(i for i in index["items"] if i[2] == "dcp/r00001.bin" and i[4] > 0 and i[6])
    shard = version / "dcp" / "r00001.bin"
    raw = bytearray(shard.read_bytes())
    raw[item[3]] ^= 0xFF
    shard.write_bytes(bytes(raw))
    assert launch("load", 2, {"url": str(url), "out": str(out), "wrap": "ddp"}) == [0, 0]
    steps = [json.loads((out / f"loaded-step-{r}.json").read_text()) for r in (0, 1)]
    assert steps == [1, 1]  # both ranks resumed from the older version, the same one


def test_one_process_restores_a_sharded_version_into_a_plain_model(tmp_path):
    url, out = tmp_path / "scope", tmp_path / "out"
    out.mkdir()
    args = {"url": str(url), "out": str(out), "wrap": "ddp", "saves": 2}
    assert launch("save", 2, args) == [0, 0]
    saved = torch.load(out / "saved.pt")
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    with Checkpoint.open(url, attempt=2) as cp:
        ckpt = TorchCheckpointer(checkpoint=cp, model=model, optimizer=opt)
        with warnings.catch_warnings():
            warnings.simplefilter("error", CheckpointWarning)
            assert ckpt.restore() == 2
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert opt.state_dict()["state"][0]["exp_avg"].abs().sum() > 0  # the optimizer came too


def test_a_sharded_version_s_index_is_json_and_nothing_is_pickled(tmp_path):
    url, out = tmp_path / "scope", tmp_path / "out"
    out.mkdir()
    assert launch("save", 2, {"url": str(url), "out": str(out), "wrap": "ddp", "saves": 1}) == [
        0,
        0,
    ]
    version = url / "v" / "0001-000001"
    index = json.loads((version / "dcp" / "index.json").read_text())
    assert index["world_size"] == 2 and index["items"]
    for path in version.rglob("*"):
        if path.is_file():
            assert b"\x80\x04\x95" not in path.read_bytes()[:16], path  # no pickle stream
