"""Exact resume across ranks: a DDP run interrupted mid-epoch and resumed from the latest
committed sharded version ends with parameters bitwise equal to an uninterrupted run of the same
world size (per-rank RNG states, a rank-aware `ResumableSampler`, async saves)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.checkpoint")

from sharded_ranks import FAULT_EXIT, launch  # noqa: E402

pytestmark = pytest.mark.slow


def _run(tmp_path, name: str, attempt: int, **fault: object) -> list[int]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    args = {"url": str(tmp_path / name), "out": str(out / name), "attempt": attempt,
            "epochs": 2, **fault}  # fmt: skip
    (out / name).mkdir(exist_ok=True)
    return launch("train", 2, args, grace=3)


def _final(tmp_path, name: str, attempt: int) -> dict:
    return torch.load(tmp_path / "out" / name / f"final-{attempt}.pt")


def _resumed(tmp_path, name: str, attempt: int) -> list[int]:
    return [
        json.loads((tmp_path / "out" / name / f"resumed-{attempt}-{r}.json").read_text())
        for r in (0, 1)
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run's final parameters (saving blocking or not changes no weight)."""
    tmp_path = tmp_path_factory.mktemp("reference")
    assert _run(tmp_path, "reference", 1) == [0, 0]
    return _final(tmp_path, "reference", 1)


@pytest.mark.parametrize(
    ("fault", "code"), [("kill", -9), ("raise", FAULT_EXIT)], ids=["sigkill", "recoverable"]
)
def test_ddp_run_interrupted_mid_epoch_resumes_bitwise(tmp_path, reference, fault, code):
    codes = _run(tmp_path, "faulty", 1, fault=fault, fault_rank=1, fault_step=11)
    assert codes[1] == code and codes[0] != 0  # rank 0 was ended with the group
    assert _run(tmp_path, "faulty", 2) == [0, 0]  # the whole group restarts, next attempt
    resumed = _resumed(tmp_path, "faulty", 2)
    assert resumed[0] == resumed[1] and 3 <= resumed[0] < 11  # the same version on both ranks
    assert resumed[0] % 3 == 0
    final = _final(tmp_path, "faulty", 2)
    assert final.keys() == reference.keys()
    for name in reference:
        assert torch.equal(final[name], reference[name]), name


def test_blocking_saves_resume_bitwise_too(tmp_path, reference):
    codes = _run(tmp_path, "faulty", 1, blocking=True, fault="raise", fault_rank=0, fault_step=7)
    assert codes[0] == FAULT_EXIT
    assert _run(tmp_path, "faulty", 2, blocking=True) == [0, 0]
    assert _resumed(tmp_path, "faulty", 2) == [6, 6]
    final = _final(tmp_path, "faulty", 2)
    for name in reference:
        assert torch.equal(final[name], reference[name]), name
