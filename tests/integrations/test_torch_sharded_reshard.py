"""Resharding: a sharded version written by N ranks restores into M ranks (DDP and FSDP2)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.checkpoint")

from sharded_ranks import launch  # noqa: E402

pytestmark = pytest.mark.slow


def _save_then_load(tmp_path, save_world, save_wrap, load_world, load_wrap, **save) -> dict:
    url, out = tmp_path / "scope", tmp_path / "out"
    out.mkdir()
    args = {"url": str(url), "out": str(out), "wrap": save_wrap, "saves": 2, **save}
    assert launch("save", save_world, args) == [0] * save_world
    load = {"url": str(url), "out": str(out), "wrap": load_wrap}
    assert launch("load", load_world, load) == [0] * load_world
    steps = [json.loads((out / f"loaded-step-{r}.json").read_text()) for r in range(load_world)]
    assert steps == [2] * load_world
    saved, loaded = torch.load(out / "saved.pt"), torch.load(out / "loaded.pt")
    assert saved.keys() == loaded.keys()
    for name in saved:
        assert torch.equal(saved[name], loaded[name]), name
    return saved


def test_two_ddp_ranks_to_one_process(tmp_path):
    _save_then_load(tmp_path, 2, "ddp", 1, "plain")


def test_one_process_to_two_ddp_ranks(tmp_path):
    _save_then_load(tmp_path, 1, "plain", 2, "ddp", sharded=True)


def test_fsdp2_shards_restore_into_fsdp2_and_into_ddp(tmp_path):
    _save_then_load(tmp_path, 2, "fsdp", 2, "fsdp")
    (tmp_path / "out" / "loaded.pt").unlink()
    load = {"url": str(tmp_path / "scope"), "out": str(tmp_path / "out"), "wrap": "ddp"}
    assert launch("load", 2, load) == [0, 0]
    saved = torch.load(tmp_path / "out" / "saved.pt")
    loaded = torch.load(tmp_path / "out" / "loaded.pt")
    for name in saved:
        assert torch.equal(saved[name], loaded[name]), name


def test_two_ddp_ranks_to_four(tmp_path):
    _save_then_load(tmp_path, 2, "ddp", 4, "ddp")
