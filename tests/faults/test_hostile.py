"""Fault 6: corrupted and hostile checkpoints, met by a task that resumes from them.

A task commits steps 1..3 and fails; the test damages the latest version (step 3) the way disks,
bugs and attackers do; the resumed task must fall back to step 2 with a warning naming the bad
version and still compute the failure-free result. Hostile manifests (``..``, absolute paths,
links out of the tree) must not make restore write anything outside its target: the test
diffs the filesystem. A checkpoint holding a pickle that runs ``os.system`` when unpickled is
read by the task, listed, shown and restored by the CLI, and given to the framework
integrations' loaders: the marker file it would create never appears. When no version is intact
the attempt fails with `CheckpointCorruptError` instead of silently restarting from zero.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import crc32c
import pytest
from faults_procs import DEADLINE, cli_command, tp_env
from faults_stats import record

import taskpoint
from taskpoint import Checkpoint, CheckpointError, current_context, task
from taskpoint.checkpoint import CheckpointWarning

# These tests damage payload files: every write here has one (no inline versions).
pytestmark = pytest.mark.usefixtures("payload_files")

CTRL: dict = {"fail_at": None, "starts": [], "restores": None}


def _state(step: int) -> bytes:
    return f"STEP:{step}:SUM:{sum(range(step + 1))}".encode()


def _load(cp: Checkpoint, kind: str) -> tuple[int, int]:
    if kind == "bytes":
        data = cp.read()
    else:
        out = cp.restore(Path(tempfile.mkdtemp(dir=CTRL["restores"])))
        data = None if out is None else (out / "state.txt").read_bytes()
        if out is not None:
            assert (out / "sub" / "pad.bin").read_bytes() == b"p" * 4096
    if data is None:
        return 0, 0
    match = re.fullmatch(rb"STEP:(\d+):SUM:(\d+)", data)
    if match is None:
        raise ValueError(f"foreign checkpoint content ({len(data)} bytes), refusing to use it")
    return int(match[1]), int(match[2])


def _store(cp: Checkpoint, kind: str, step: int) -> None:
    if kind == "bytes":
        cp.write(_state(step), step=step)
        return
    src = Path(tempfile.mkdtemp(dir=CTRL["restores"]))
    (src / "sub").mkdir()
    (src / "state.txt").write_bytes(_state(step))
    (src / "sub" / "pad.bin").write_bytes(b"p" * 4096)
    cp.save(src, step=step)
    shutil.rmtree(src)


@task(keep=2)
def tally(steps: int, kind: str) -> int:
    ctx = current_context()
    step, total = _load(ctx.checkpoint, kind)
    CTRL["starts"].append((ctx.attempt, step))
    for s in range(step + 1, steps + 1):
        total += s
        _store(ctx.checkpoint, kind, s)
        if CTRL["fail_at"] == s:
            CTRL["fail_at"] = None
            raise ValueError("stopped on purpose")  # not retried: the test resumes
    return total


STEPS = 6
CLEAN_RESULT = sum(range(STEPS + 1))


@pytest.fixture
def ctrl(tmp_path):
    CTRL.update(fail_at=3, starts=[], restores=tmp_path / "task-tmp")
    (tmp_path / "task-tmp").mkdir()
    yield CTRL
    CTRL.update(fail_at=None, starts=[], restores=None)


def _first_run(kind: str) -> tuple[str, Path]:
    first = taskpoint.run(tally, steps=STEPS, kind=kind)
    assert first.status == "failed"
    scope = Path(first.storage) / first.id / "nodes" / "tally-1" / "checkpoints"
    assert sorted(p.name for p in (scope / "v").glob("*.json")) == [
        "0001-000002.manifest.json",
        "0001-000003.manifest.json",
    ]
    return first.id, scope


def _files(root: Path, skip: tuple[Path, ...]) -> set[str]:
    """Every path under ``root`` (links included), except under ``skip``."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if any(here == s or s in here.parents for s in skip):
            continue
        for name in dirnames + filenames:
            found.add(str(here / name))
    return found


# -- the damage --------------------------------------------------------------------------------

V = "0001-000003"


def _payload(scope: Path, kind: str) -> Path:
    return scope / "v" / V / ("data" if kind == "bytes" else "sub/pad.bin")


def _manifest(scope: Path) -> Path:
    return scope / "v" / f"{V}.manifest.json"


def _edit_manifest(scope: Path, edit: Callable[[dict], None]) -> None:
    path = _manifest(scope)
    doc = json.loads(path.read_bytes())
    edit(doc)
    path.write_text(json.dumps(doc))


def flip_bit(scope: Path, kind: str, out: Path) -> None:
    path = _payload(scope, kind)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def truncate_payload(scope: Path, kind: str, out: Path) -> None:
    path = _payload(scope, kind)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def delete_payload(scope: Path, kind: str, out: Path) -> None:
    _payload(scope, kind).unlink()


def garbage_manifest(scope: Path, kind: str, out: Path) -> None:
    _manifest(scope).write_bytes(bytes(range(256)) * 3)


def truncated_manifest(scope: Path, kind: str, out: Path) -> None:
    path = _manifest(scope)
    path.write_bytes(path.read_bytes()[:-40])


def dotdot_path(scope: Path, kind: str, out: Path) -> None:
    def edit(doc: dict) -> None:
        doc["files"][0]["path"] = "../../../../../../escaped-dotdot.txt"

    _edit_manifest(scope, edit)


def absolute_path(scope: Path, kind: str, out: Path) -> None:
    target = str(out / "escaped-absolute.txt")

    def edit(doc: dict) -> None:
        doc["files"][0]["path"] = target

    _edit_manifest(scope, edit)


def link_out_of_the_tree(scope: Path, kind: str, out: Path) -> None:
    """A link leading out, and a file written *through* it, in the manifest."""

    def edit(doc: dict) -> None:
        doc["kind"] = "dir"
        doc["links"] = {"sub2": "../" * 8 + str(out).lstrip("/")}
        doc["files"].append({"path": "sub2/escaped-through-link.txt", "size": 1, "crc32c": 0})

    _edit_manifest(scope, edit)


def payload_swapped_for_a_link(scope: Path, kind: str, out: Path) -> None:
    """The stored payload file replaced by a symlink to a file outside the store."""
    secret = out / "secret.txt"
    secret.write_bytes(b"s" * _payload(scope, kind).stat().st_size)
    path = _payload(scope, kind)
    path.unlink()
    path.symlink_to(secret)


DAMAGE = [
    flip_bit,
    truncate_payload,
    delete_payload,
    garbage_manifest,
    truncated_manifest,
    dotdot_path,
    absolute_path,
    link_out_of_the_tree,
    payload_swapped_for_a_link,
]


@pytest.mark.parametrize("kind", ["bytes", "dir"])
@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__ for d in DAMAGE])
def test_resume_falls_back_past_a_damaged_latest_version(ctrl, kind, damage, tmp_path, tp_home):
    execution_id, scope = _first_run(kind)
    outside = tmp_path / "outside"
    outside.mkdir()
    damage(scope, kind, outside)
    record("corruptions")
    watched = (tp_home, ctrl["restores"])
    before = _files(tmp_path, watched)

    with pytest.warns(CheckpointWarning, match=V):
        resumed = taskpoint.resume(execution_id)

    assert resumed.status == "succeeded", resumed.error
    assert resumed.result == CLEAN_RESULT
    assert ctrl["starts"] == [(1, 0), (2, 2)]  # resumed from step 2, the intact version
    assert _files(tmp_path, watched) == before, "something was written outside the target"
    for name in ("escaped-dotdot.txt", "escaped-absolute.txt", "escaped-through-link.txt"):
        assert not list(tmp_path.parent.rglob(name)), f"{name} was written"
    record("executions")


def test_no_intact_version_fails_the_attempt_instead_of_restarting_from_zero(ctrl, tp_home):
    execution_id, scope = _first_run("bytes")
    for vid in ("0001-000002", V):
        path = scope / "v" / vid / "data"
        path.write_bytes(path.read_bytes()[:-1] + b"#")
        record("corruptions")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        resumed = taskpoint.resume(execution_id)
    assert resumed.status == "failed"
    error = resumed.nodes[0].attempts[-1].error
    assert error.startswith("CheckpointCorruptError:"), error
    assert "0001-000002" in error and V in error
    assert ctrl["starts"] == [(1, 0)]  # the second attempt never started from zero


# -- a pickle that would run code --------------------------------------------------------------


class _Boom:
    """Unpickling this runs ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(scope: Path, kind: str, data: bytes) -> None:
    """Replace version V's content by ``data`` and fix its manifest: a valid commit."""
    rel = "data" if kind == "bytes" else "state.txt"
    (scope / "v" / V / rel).write_bytes(data)

    def edit(doc: dict) -> None:
        for entry in doc["files"]:
            if entry["path"] == rel:
                entry["size"], entry["crc32c"] = len(data), crc32c.crc32c(data)

    _edit_manifest(scope, edit)


@pytest.mark.parametrize("kind", ["bytes", "dir"])
def test_a_pickle_payload_is_never_unpickled(ctrl, kind, tmp_path, tp_home):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Boom(marker))
    execution_id, scope = _first_run(kind)
    _plant(scope, kind, evil)
    record("corruptions")

    resumed = taskpoint.resume(execution_id)  # the task gets bytes, refuses them, fails
    assert resumed.status == "failed"
    assert "foreign checkpoint content" in (resumed.error or "")
    assert not marker.exists()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli_command(*args), capture_output=True, text=True, env=tp_env(tp_home),
            timeout=DEADLINE,
        )  # fmt: skip

    shown = cli("show", execution_id, "--json")
    assert shown.returncode == 0, shown.stderr
    listed = cli("checkpoints", execution_id, "--json")
    assert listed.returncode == 0 and V in listed.stdout, listed.stderr
    out = tmp_path / "restored"
    restored = cli("checkpoints", execution_id, "tally", "--restore", str(out))
    assert restored.returncode == 0, restored.stderr
    assert (out / ("data" if kind == "bytes" else "state.txt")).read_bytes() == evil
    assert not marker.exists(), "a checkpoint's pickle was executed"


def _evil_blob(marker: Path) -> bytes:
    return pickle.dumps(_Boom(marker))


def test_integration_loaders_refuse_a_pickle(tmp_path):
    """torch, keras and sklearn loaders given pickles (raw, and as torch.save writes them)."""
    marker = tmp_path / "pwned"
    refused = 0
    torch = pytest.importorskip("torch")
    from taskpoint.integrations.torch import TorchCheckpointer

    buffer = tmp_path / "torch-save.pt"
    torch.save({"model": _Boom(marker)}, buffer)
    for blob in (_evil_blob(marker), buffer.read_bytes()):
        with Checkpoint.open(tmp_path / f"torch-{refused}") as cp:
            cp.write(blob)
            with pytest.raises(CheckpointError):
                TorchCheckpointer(checkpoint=cp, model=torch.nn.Linear(2, 2)).restore()
        refused += 1
    assert not marker.exists()

    sklearn = pytest.importorskip("sklearn.linear_model")
    pytest.importorskip("skops")
    import functools

    import skops.io

    from taskpoint.integrations.sklearn import _persist as persist
    from taskpoint.integrations.sklearn import fit_incremental

    framed = persist.encode(
        {"format": 1, "kind": "incremental", "epoch": 0, "batch": 0, "trained": 0},
        skops.io.dumps(functools.partial(os.system, f"touch {marker}")),
    )
    for blob in (_evil_blob(marker), framed):
        with Checkpoint.open(tmp_path / f"sklearn-{refused}") as cp:
            cp.write(blob)
            with pytest.raises(CheckpointError):
                fit_incremental(sklearn.SGDRegressor(), [([[0.0]], [0.0])], checkpoint=cp)
        refused += 1
    assert not marker.exists()
    record("corruptions", refused)


def test_keras_loader_refuses_a_pickle(tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    import numpy as np

    from taskpoint.integrations.keras import KerasCheckpointer

    marker = tmp_path / "pwned"
    with Checkpoint.open(tmp_path / "keras") as cp:
        cp.write(_evil_blob(marker))
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        x, y = np.zeros((4, 2), "float32"), np.zeros((4, 1), "float32")
        with pytest.raises(CheckpointError):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[KerasCheckpointer(checkpoint=cp)])
    assert not marker.exists()
    record("corruptions")
