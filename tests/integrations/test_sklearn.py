"""scikit-learn: `fit_incremental` and `fit_warm_start` resumed after an interruption give the same
model (bitwise coefficients / identical predictions) as an uninterrupted run, train no batch twice
beyond the work after the last save, and refuse checkpoints holding untrusted types.

The batches of an epoch are shuffled with NumPy's *global* generator when ``batches(epoch)`` is
called and get noise from it when each batch is produced, so a resume is only exact if both RNG
states are restored. Interruptions: an exception, SIGKILL of a real child process, and, through
the engine (``isolation="process"``), ``RecoverableError``, SIGKILL and SIGTERM.

Run as a script (``python test_sklearn.py child URL LOG``) it is the SIGKILL test's child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skops")

from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import SGDClassifier

import taskpoint
from taskpoint import (
    Checkpoint,
    CheckpointError,
    RecoverableError,
    current_context,
    task,
)
from taskpoint.integrations.sklearn import fit_incremental, fit_warm_start

EPOCHS, N_BATCHES, BATCH = 3, 40, 25
SAVE_EVERY = 5
CLASSES = np.array([0, 1, 2])
FAULT_AT = (1, 12)  # the 53rd batch; the last save before it is after batch 50


@pytest.fixture(autouse=True)
def tp_home(tp_home: Path) -> Path:
    """This suite runs the engine in every test: the shared private home (tests/conftest.py)."""
    return tp_home


class Interrupt(Exception):
    pass


def dataset() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(N_BATCHES * BATCH, 10))
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1], [-0.5, 0.5])
    return X, y


X_ALL, Y_ALL = dataset()


class EpochBatches(Sequence):
    """One epoch's batches: order drawn from the global NumPy RNG when the epoch starts, noise
    drawn from it when a batch is produced; a batch produced is logged (it is trained next)."""

    def __init__(self, epoch: int, log: Path | None = None, fault: str | None = None) -> None:
        self.epoch, self.log, self.fault = epoch, log, fault
        self.order = np.random.permutation(N_BATCHES)

    def __len__(self) -> int:
        return N_BATCHES

    def __getitem__(self, i: Any) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(i, int):
            raise TypeError("one batch at a time")
        at_fault = self.fault is not None and (self.epoch, i) == FAULT_AT
        if at_fault and self.fault != "term":
            interrupt(self.fault)  # this batch is not trained
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(f"{self.epoch} {i}\n")
        if at_fault and self.fault == "term":
            interrupt(self.fault)  # preempted: this batch is trained and saved, then it stops
        rows = slice(self.order[i] * BATCH, (self.order[i] + 1) * BATCH)
        noise = np.random.normal(scale=0.05, size=(BATCH, X_ALL.shape[1]))
        return X_ALL[rows] + noise, Y_ALL[rows]


KILLED_SCOPE: list[Checkpoint] = []  # the child's scope (see interrupt)


def interrupt(fault: str) -> None:
    if fault == "raise":
        raise Interrupt(f"interrupted at {FAULT_AT}")
    if fault == "recoverable":
        raise RecoverableError(f"interrupted at {FAULT_AT}")
    if fault == "kill":
        if KILLED_SCOPE and KILLED_SCOPE[0].latest() is None:
            # On a loaded disk no async save may have committed yet; the resume must start
            # from one, so wait for the first (later ones still die with the process).
            KILLED_SCOPE[0].wait()
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "term":  # preemption: the batch is trained, saved, and the attempt stops
        os.kill(os.getpid(), signal.SIGTERM)


def train_incremental(
    checkpoint: Checkpoint | None = None, *, log: Path | None = None, fault: str | None = None
) -> SGDClassifier:
    np.random.seed(0)  # the task seeds the global generator at its start, on every attempt
    clf = SGDClassifier(random_state=0)
    return fit_incremental(
        clf,
        lambda epoch: EpochBatches(epoch, log, fault),
        epochs=EPOCHS,
        classes=CLASSES,
        every_n_steps=SAVE_EVERY,
        checkpoint=checkpoint,
    )


def read_log(log: Path) -> list[tuple[int, int]]:
    return [tuple(map(int, line.split())) for line in log.read_text().split("\n") if line]


@pytest.fixture(scope="module")
def reference() -> SGDClassifier:
    """The uninterrupted run, as a plain partial_fit loop without taskpoint."""
    np.random.seed(0)
    clf = SGDClassifier(random_state=0)
    for epoch in range(EPOCHS):
        batches = EpochBatches(epoch)
        for i in range(len(batches)):
            clf.partial_fit(*batches[i], classes=CLASSES)
    return clf


def assert_same_model(got: Any, want: Any, attributes: tuple[str, ...] = ("coef_", "intercept_")):
    for name in attributes:
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert np.array_equal(got.predict(X_ALL), want.predict(X_ALL))
    if hasattr(want, "predict_proba"):
        assert np.array_equal(got.predict_proba(X_ALL), want.predict_proba(X_ALL))


# ----------------------------------------------------------------------------- fit_incremental


def test_incremental_resume_after_an_exception_is_identical(tmp_path, reference):
    url, log = tmp_path / "cp", tmp_path / "log"
    first = Checkpoint.open(url, attempt=1)
    with pytest.raises(Interrupt):
        train_incremental(first, log=log, fault="raise")
    first.wait()
    trained_before = read_log(log)
    assert len(trained_before) == N_BATCHES + 12
    log.unlink()

    clf = train_incremental(Checkpoint.open(url, attempt=2), log=log)
    resumed = read_log(log)
    # Resumed at the first batch after the save at 50: batches 50 and 51 are the work lost
    # after the last save; nothing before is trained (or even loaded) again.
    assert resumed[0] == (1, 10) and len(resumed) == EPOCHS * N_BATCHES - 50
    assert trained_before[:50] + resumed == [(e, i) for e in range(EPOCHS) for i in range(40)]
    assert_same_model(clf, reference)
    assert clf.t_ == reference.t_


def test_incremental_sigkill_of_a_child_process_resumes_identically(tmp_path, reference):
    url, log = tmp_path / "cp", tmp_path / "log"
    child = subprocess.run(
        [sys.executable, __file__, "child", str(url), str(log)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr[-3000:]
    assert len(read_log(log)) == N_BATCHES + 12
    step = Checkpoint.open(url).latest().step
    assert step % SAVE_EVERY == 0 and 0 < step <= 50  # later async saves die with the process
    log.unlink()

    clf = train_incremental(Checkpoint.open(url, attempt=2), log=log)
    assert len(read_log(log)) == EPOCHS * N_BATCHES - step
    assert_same_model(clf, reference)


def test_incremental_accepts_a_generator_and_a_finished_run_trains_nothing(tmp_path, reference):
    def batches(epoch: int):  # an iterable, not a sequence: skipped batches are produced
        source = EpochBatches(epoch)
        for i in range(len(source)):
            if (epoch, i) == FAULT_AT and attempt[0] == 1:
                raise Interrupt("generator interrupted")
            yield source[i]

    attempt = [1]
    cp = Checkpoint.open(tmp_path / "cp", attempt=1)
    np.random.seed(0)
    with pytest.raises(Interrupt):
        fit_incremental(SGDClassifier(random_state=0), batches, epochs=EPOCHS, classes=CLASSES,
                        every_n_steps=7, checkpoint=cp)  # fmt: skip
    cp.wait()
    attempt[0] = 2
    for n in (2, 3):
        np.random.seed(0)
        clf = fit_incremental(
            SGDClassifier(random_state=0),
            batches,
            epochs=EPOCHS,
            classes=CLASSES,
            every_n_steps=7,
            checkpoint=Checkpoint.open(tmp_path / "cp", attempt=n),
        )
        assert_same_model(clf, reference)
    assert Checkpoint.open(tmp_path / "cp").latest().metadata == {
        "epoch": EPOCHS,
        "batch": 0,
        "trained": EPOCHS * N_BATCHES,
    }


def sgd_body(fault: str, log: str) -> dict:
    ctx = current_context()
    latest = ctx.checkpoint.latest()
    clf = train_incremental(log=Path(log), fault=fault if ctx.attempt == 1 else None)
    return {
        "coef": clf.coef_,
        "intercept": clf.intercept_,
        "predict": clf.predict(X_ALL),
        "resumed_at": latest.step if latest else None,
    }


# Importable by name: the engine spawns its attempts when torch is loaded in the driver (it is,
# through sklearn/skops or the other test modules), else forks.
@task(retries=1, system_retries=1, isolation="process")
def sgd_task(fault: str, log: str) -> dict:
    return sgd_body(fault, log)


def forked_sgd_task() -> Any:
    """Not importable by name: the engine forks (this test process runs no OpenMP kernels)."""

    @task(retries=1, system_retries=1, isolation="process")
    def sgd_task_forked(fault: str, log: str) -> dict:
        return sgd_body(fault, log)

    return sgd_task_forked


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("fault", "first_status", "importable"),
    [("recoverable", "recoverable", False), ("kill", "lost", True), ("term", "preempted", False)],
)
def test_engine_task_resumes_incremental_fit_identically(
    tmp_path, reference, fault, first_status, importable
):
    log = tmp_path / "log"
    target = sgd_task if importable else forked_sgd_task()
    execution = taskpoint.run(target, fault=fault, log=str(log))
    assert execution.status == "succeeded", execution.error
    assert [a.status for a in execution.nodes[0].attempts] == [first_status, "succeeded"]
    result = execution.result
    assert np.array_equal(result["coef"], reference.coef_)
    assert np.array_equal(result["intercept"], reference.intercept_)
    assert np.array_equal(result["predict"], reference.predict(X_ALL))
    trained = read_log(log)
    step = result["resumed_at"]
    attempt1 = len(trained) - (EPOCHS * N_BATCHES - step)  # attempt 2 trained from `step` on
    assert trained[:step] + trained[attempt1:] == [(e, i) for e in range(3) for i in range(40)]
    if fault == "term":  # the batch in flight is trained and saved before stopping: none redone
        assert step == attempt1 == N_BATCHES + 13
    elif fault == "recoverable":  # the engine commits the pending async save before retrying
        assert (step, attempt1) == (50, 52)
    else:  # SIGKILL: async saves still queued are lost, the batches after the committed one redo
        assert step % SAVE_EVERY == 0 and 0 < step <= 50 and attempt1 == 52


# ----------------------------------------------------------------------------- fit_warm_start


class FailingCheckpoint:
    """A checkpoint that raises right after its ``fail_after``-th committed write."""

    def __init__(self, checkpoint: Checkpoint, fail_after: int) -> None:
        self.inner, self.fail_after, self.writes = checkpoint, fail_after, 0

    def write(self, data: bytes, **options: Any) -> Any:
        result = self.inner.write(data, **{**options, "blocking": True})
        self.writes += 1
        if self.writes == self.fail_after:
            raise Interrupt(f"interrupted after write {self.writes}")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def warm_start_models() -> list[tuple[str, Any, tuple[str, ...]]]:
    return [
        ("forest", lambda: RandomForestClassifier(random_state=0), ()),
        ("forest-global-rng", lambda: RandomForestClassifier(random_state=None), ()),
        (
            "boosting",
            lambda: GradientBoostingClassifier(subsample=0.8, max_depth=2, random_state=0),
            ("train_score_",),
        ),
    ]


@pytest.mark.parametrize(("name", "make", "attributes"), warm_start_models())
def test_warm_start_resume_after_an_exception_is_identical(tmp_path, name, make, attributes):
    X, y = X_ALL[:400], Y_ALL[:400]

    def grow(checkpoint: Any) -> Any:
        np.random.seed(0)
        return fit_warm_start(make(), X, y, until=25, step=10, checkpoint=checkpoint)

    expected = make().set_params(warm_start=True)  # plain warm-start loop without taskpoint
    np.random.seed(0)
    for n in (10, 20, 25):
        expected.set_params(n_estimators=n).fit(X, y)

    url = tmp_path / "cp"
    with pytest.raises(Interrupt):
        grow(FailingCheckpoint(Checkpoint.open(url, attempt=1), fail_after=1))
    assert Checkpoint.open(url).latest().metadata == {"param": "n_estimators", "value": 10}
    model = grow(Checkpoint.open(url, attempt=2))
    assert len(model.estimators_) == 25
    assert_same_model(model, expected, attributes)


def forest_task() -> Any:
    @task(retries=1, isolation="process")
    def grow_forest(until: int) -> list:
        ctx = current_context()
        checkpoint = FailingCheckpoint(ctx.checkpoint, 2) if ctx.attempt == 1 else ctx.checkpoint
        forest = RandomForestClassifier(random_state=0)
        try:
            fit_warm_start(forest, X_ALL[:400], Y_ALL[:400], until=until, step=4,
                           checkpoint=checkpoint)  # fmt: skip
        except Interrupt as exc:
            raise RecoverableError(str(exc)) from exc
        return forest.predict_proba(X_ALL).tolist()

    return grow_forest


@pytest.mark.timeout(120)
def test_engine_task_resumes_warm_start_identically():
    execution = taskpoint.run(forest_task(), until=12)
    assert execution.status == "succeeded", execution.error
    assert [a.status for a in execution.nodes[0].attempts] == ["recoverable", "succeeded"]
    expected = RandomForestClassifier(random_state=0, warm_start=True)
    for n in (4, 8, 12):
        expected.set_params(n_estimators=n).fit(X_ALL[:400], Y_ALL[:400])
    assert np.array_equal(np.array(execution.result), expected.predict_proba(X_ALL))


# ----------------------------------------------------------------------------- hostile input


EVIL = """
import os
open(os.environ["TASKPOINT_EVIL_MARK"], "a").write("imported\\n")

class Payload:
    def __setstate__(self, state):
        open(os.environ["TASKPOINT_EVIL_MARK"], "a").write("setstate\\n")
        self.__dict__.update(state)
"""


def test_a_checkpoint_with_an_untrusted_type_is_refused_and_nothing_runs(tmp_path, monkeypatch):
    import skops.io

    module = f"tp_evil_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(EVIL))
    mark = tmp_path / "mark"
    monkeypatch.setenv("TASKPOINT_EVIL_MARK", str(mark))
    monkeypatch.syspath_prepend(str(tmp_path))
    evil = __import__(module)

    url = tmp_path / "cp"
    poisoned = SGDClassifier(random_state=0)
    poisoned.payload_ = evil.Payload()  # whoever can write the storage can put this there
    fit_incremental(poisoned, [(X_ALL[:50], Y_ALL[:50])], classes=CLASSES, checkpoint=url_cp(url))
    del sys.modules[module]
    mark.unlink()

    calls = []
    victim = SGDClassifier(random_state=0)
    with pytest.raises(CheckpointError, match=rf"not trusted: {module}\.Payload") as error:
        fit_incremental(
            victim, lambda: calls.append(1) or [], classes=CLASSES, checkpoint=url_cp(url, 2)
        )
    assert "Nothing was loaded" in str(error.value)
    assert module not in sys.modules and not mark.exists()  # not imported, not constructed
    assert calls == [] and not hasattr(victim, "coef_")  # and no training ran

    # The payload is really hostile: trusting the type imports the module.
    _, payload = split_blob(Checkpoint.open(url).read())
    skops.io.loads(payload, trusted=[f"{module}.Payload"])
    assert mark.read_text().startswith("imported")


def test_a_tampered_tree_is_refused(tmp_path):
    import skops.io

    url = tmp_path / "cp"
    X, y = X_ALL[:200], Y_ALL[:200]
    fit_warm_start(
        RandomForestClassifier(random_state=0), X, y, until=3, step=3, checkpoint=url_cp(url)
    )
    meta, payload = split_blob(Checkpoint.open(url).read())
    forest = skops.io.loads(payload, trusted=["sklearn.tree._tree.Tree"])
    forest.estimators_[1].tree_.children_left[0] = 10**6  # a node index far out of range
    url_cp(url, 2).write(join_blob(meta, skops.io.dumps(forest)))

    with pytest.raises(CheckpointError, match="malformed"):
        fit_warm_start(RandomForestClassifier(random_state=0), X, y, until=6, step=3,
                       checkpoint=url_cp(url, 3))  # fmt: skip


def test_foreign_and_mismatched_checkpoints_are_refused(tmp_path):
    X, y = X_ALL[:100], Y_ALL[:100]
    foreign = url_cp(tmp_path / "a")
    foreign.write(b"PK\x03\x04 a zip, but not ours")
    with pytest.raises(CheckpointError, match="not an estimator state"):
        fit_warm_start(RandomForestClassifier(), X, y, until=2, step=2, checkpoint=foreign)

    forest_cp = url_cp(tmp_path / "b")
    fit_warm_start(RandomForestClassifier(), X, y, until=2, step=2, checkpoint=forest_cp)
    with pytest.raises(CheckpointError, match="RandomForestClassifier"):
        fit_warm_start(GradientBoostingClassifier(), X, y, until=2, step=2, checkpoint=forest_cp)
    with pytest.raises(CheckpointError, match=r"not one of fit_incremental\(\)"):
        fit_incremental(SGDClassifier(), [(X, y)], classes=CLASSES, checkpoint=forest_cp)


def test_arguments_are_checked(tmp_path):
    cp = url_cp(tmp_path / "cp")
    with pytest.raises(TypeError, match="partial_fit"):
        fit_incremental(RandomForestClassifier(), [], checkpoint=cp)
    with pytest.raises(TypeError, match="warm_start"):
        fit_warm_start(SGDClassifier(), X_ALL, Y_ALL, until=2, checkpoint=cp)
    with pytest.raises(ValueError, match="every_n_steps"):
        fit_incremental(SGDClassifier(), [], every_n_steps=0, checkpoint=cp)
    with pytest.raises(taskpoint.TaskpointError, match="outside a task"):
        fit_incremental(SGDClassifier(), [])


def test_missing_sklearn_names_the_extra_to_install():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "try:\n    import taskpoint.integrations.sklearn\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "TaskpointError" in out.stdout and "pip install 'taskpoint[sklearn]'" in out.stdout


# ----------------------------------------------------------------------------- helpers


def url_cp(url: Path, attempt: int = 1) -> Checkpoint:
    return Checkpoint.open(url, attempt=attempt)


def split_blob(blob: bytes) -> tuple[dict, bytes]:
    size = int.from_bytes(blob[8:16], "little")
    return json.loads(blob[16 : 16 + size]), blob[16 + size :]


def join_blob(meta: dict, payload: bytes) -> bytes:
    header = json.dumps(meta).encode()
    return b"TPSKLRN1" + len(header).to_bytes(8, "little") + header + payload


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    KILLED_SCOPE.append(Checkpoint.open(sys.argv[2], attempt=1))
    train_incremental(KILLED_SCOPE[0], log=Path(sys.argv[3]), fault="kill")
    print("not killed")
