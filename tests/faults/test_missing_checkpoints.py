"""Checkpoints the records say were committed, missing from the storage (issue 14, class 1).

A task commits steps 1..3 of 6 and fails; then its checkpoint scope disappears (deleted, a
lifecycle rule expired its manifests, or the resuming driver's storage settings lead to another
store). Starting from zero would silently redo the work: the resume must fail with
`CheckpointMissingError` naming the node, the execution, the missing version and where it looked,
and the task's body must never run. ``taskpoint resume --from-scratch`` and
``@task(on_missing_checkpoints="restart")`` restart it from zero on purpose, and say so. The same
holds within one run: attempt 1 commits and fails recoverably, the scope is deleted, attempt 2
fails with the error instead of starting from zero (no retry is spent on it).

Every run is a real ``taskpoint`` process; the task appends ``<attempt> <step it started from>``
to ``starts.log`` (fsynced) as soon as it read its checkpoint.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from faults_procs import DEADLINE, cli_command, tp_env
from faults_stats import record

import taskpoint
from taskpoint.engine import configure
from taskpoint.engine.events import Listener
from taskpoint.errors import CheckpointMissingError

WORKFLOWS = Path(__file__).parent / "workflows"
STEPS, FAIL_AT = 6, 3
LATEST = "0001-000003"  # the version the failed attempt committed last (keep=2: also 000002)


class Work:
    """A directory holding the workflow file, its logs, and the CLI runs made on it."""

    def __init__(self, root: Path, home: Path, env: dict[str, str] | None = None) -> None:
        self.dir = root / "work"
        self.dir.mkdir()
        shutil.copyfile(WORKFLOWS / "mflow.py", self.dir / "mflow.py")  # logs next to itself
        self.home = home
        self.env = env or tp_env(home)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            cli_command(*args), capture_output=True, text=True, cwd=self.dir,
            env=env or self.env, timeout=DEADLINE,
        )  # fmt: skip

    def starts(self) -> list[tuple[int, int]]:
        path = self.dir / "starts.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(int(a), int(s)) for a, s in (line.split() for line in lines)]

    def first_run(self, *options: str, restart: bool = False) -> dict:
        """A run that commits steps 1..3 and fails; returns its ``--json`` description."""
        (self.dir / "fail-once").touch()
        extra = ["--restart"] if restart else []
        done = self.cli(
            *options, "run", "mflow.py", "flow", "--steps", str(STEPS), "--fail-at",
            str(FAIL_AT), *extra, "--json",
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        execution = json.loads(done.stdout)
        assert execution["status"] == "failed"
        [node] = execution["nodes"]
        assert node["attempts"][-1]["checkpoint_at_end"] == LATEST
        assert self.starts() == [(1, 0)]
        record("executions")
        return execution

    def scope(self, execution: dict) -> Path:
        [node] = execution["nodes"]
        [scope] = (Path(execution["storage"]) / execution["id"] / "nodes").glob("*/checkpoints")
        assert (scope / "v" / f"{LATEST}.manifest.json").exists(), node
        return scope


def delete_scope(scope: Path) -> None:
    shutil.rmtree(scope)


def expire_manifests(scope: Path) -> None:
    """What a lifecycle rule on small or old objects leaves: payloads without manifests."""
    for manifest in (scope / "v").glob("*.manifest.json"):
        manifest.unlink()


LOSSES = [delete_scope, expire_manifests]


@pytest.fixture
def work(tmp_path: Path, tp_home: Path) -> Work:
    return Work(tmp_path, tp_home)


def _assert_names_the_loss(text: str, execution: dict, scope: Path) -> None:
    assert "CheckpointMissingError" in text, text
    for part in (LATEST, execution["id"], "tally#1", str(scope), "--from-scratch"):
        assert part in text, f"{part!r} not in: {text}"
    assert "deleted" in text and "lifecycle" in text and "storage" in text


@pytest.mark.parametrize("loss", LOSSES, ids=[f.__name__ for f in LOSSES])
def test_resume_fails_naming_the_missing_version_and_never_restarts_from_zero(
    work: Work, loss: Callable[[Path], None]
) -> None:
    execution = work.first_run()
    scope = work.scope(execution)
    loss(scope)
    record("corruptions")

    resumed = work.cli("resume", execution["id"])

    assert resumed.returncode == 1, (resumed.stdout, resumed.stderr)
    _assert_names_the_loss(resumed.stderr, execution, scope)
    assert work.starts() == [(1, 0)], "the task ran again (from zero)"
    shown = work.cli("show", execution["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["status"] == "failed" and data["failed_node"] == "tally#1"
    [node] = data["nodes"]
    assert node["status"] == "failed"
    assert [a["status"] for a in node["attempts"]] == ["failed", "failed"]
    assert node["attempts"][-1]["error"].startswith("CheckpointMissingError:")
    assert data["error"].startswith("CheckpointMissingError:")

    again = work.cli("resume", execution["id"])  # still missing: still refused
    assert again.returncode == 1 and "CheckpointMissingError" in again.stderr
    assert work.starts() == [(1, 0)]


def test_resume_from_scratch_restarts_from_zero_on_purpose(work: Work) -> None:
    execution = work.first_run()
    scope = work.scope(execution)
    delete_scope(scope)
    refused = work.cli("resume", execution["id"])
    assert refused.returncode == 1 and "CheckpointMissingError" in refused.stderr

    resumed = work.cli("resume", execution["id"], "--from-scratch")

    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    assert "result: 6" in resumed.stdout
    assert "restarts from scratch on purpose" in resumed.stderr, resumed.stderr
    assert LATEST in resumed.stderr and "--from-scratch" in resumed.stderr
    assert work.starts() == [(1, 0), (3, 0)]  # attempt 2 was the refused one
    assert (scope / "v" / "0003-000006.manifest.json").exists()


def test_from_scratch_uses_checkpoints_that_are_still_there(work: Work) -> None:
    """The flag only allows a restart when the checkpoints are gone; it never throws work away."""
    execution = work.first_run()
    resumed = work.cli("resume", execution["id"], "--from-scratch")
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    assert "from scratch" not in resumed.stderr
    assert work.starts() == [(1, 0), (2, 3)]


def test_the_task_option_restarts_from_zero_on_purpose(work: Work) -> None:
    execution = work.first_run(restart=True)
    scope = work.scope(execution)
    delete_scope(scope)

    resumed = work.cli("resume", execution["id"])

    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    assert "restarts from scratch on purpose" in resumed.stderr, resumed.stderr
    assert 'on_missing_checkpoints="restart"' in resumed.stderr
    assert work.starts() == [(1, 0), (2, 0)]


def test_resume_with_storage_settings_that_lead_to_another_store(
    tmp_path: Path, tp_home: Path, s3_server
) -> None:
    """The storage comes from the execution's record, its endpoint from the resuming driver's
    settings: ``TASKPOINT_S3_ENDPOINT_URL`` (or ``--storage-option``) leading to another S3
    service finds no checkpoints there. The other store holds the execution's inputs (as a
    replica of small objects would), so the resume gets as far as the node."""
    pytest.importorskip("s3fs")
    other = _other_s3_service(tmp_path / "other-s3.err")  # starts while the first run runs
    try:
        here = {"TASKPOINT_S3_ENDPOINT_URL": s3_server.endpoint_url}
        work = Work(tmp_path, tp_home, env=tp_env(tp_home, **here))
        storage = s3_server.url()
        execution = work.first_run("--storage", storage)
        assert execution["storage"] == storage
        elsewhere = other.stdout.readline().strip()  # "" if it died: then its stderr says why
        assert elsewhere.startswith("http://127.0.0.1:"), (tmp_path / "other-s3.err").read_text()
        _replicate_small_objects(s3_server, elsewhere, execution["id"], storage)

        resumed = work.cli(
            "resume", execution["id"], env=tp_env(tp_home, TASKPOINT_S3_ENDPOINT_URL=elsewhere)
        )

        assert resumed.returncode == 1, (resumed.stdout, resumed.stderr)
        scope = f"{storage}/{execution['id']}/nodes/tally-1/checkpoints"
        assert "CheckpointMissingError" in resumed.stderr, resumed.stderr
        for part in (LATEST, execution["id"], scope, "TASKPOINT_S3_ENDPOINT_URL", "--from-scratch"):
            assert part in resumed.stderr, f"{part!r} not in: {resumed.stderr}"
        assert work.starts() == [(1, 0)], "the task ran again (from zero)"

        back = work.cli("resume", execution["id"])  # the right endpoint again: it continues
        assert back.returncode == 0, (back.stdout, back.stderr)
        assert work.starts() == [(1, 0), (3, 3)]
    finally:
        other.stdin.close()  # it stops when its stdin closes
        other.wait(DEADLINE)
        other.stdout.close()


def _other_s3_service(errors: Path) -> subprocess.Popen:
    """A second S3 service in its own process (moto servers in one process share their data);
    it prints its endpoint, and stops when its stdin closes."""
    with open(errors, "wb") as err:
        return subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "faults_s3_service.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip


def _replicate_small_objects(s3_server, endpoint: str, execution_id: str, storage: str) -> None:
    import boto3

    target = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )  # fmt: skip
    target.create_bucket(Bucket=s3_server.bucket)
    prefix = storage.removeprefix(f"s3://{s3_server.bucket}/")
    key = f"{prefix}/{execution_id}/inputs.pkl"
    source = s3_server.client()
    if source.list_objects_v2(Bucket=s3_server.bucket, Prefix=key).get("KeyCount"):
        body = source.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()
        target.put_object(Bucket=s3_server.bucket, Key=key, Body=body)


# -- within one run --------------------------------------------------------------------------


class _DeleteBetweenAttempts(Listener):
    """Deletes the node's scope once attempt 1 ended (recorded) and before attempt 2 starts:
    the engine calls ``retry_scheduled`` exactly there."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def retry_scheduled(self, info, delay: float) -> None:
        shutil.rmtree(info.checkpoint_url)
        self.deleted.append(info.checkpoint_url)


def _starts(log: Path) -> list[tuple[int, int]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [(int(a), int(s)) for a, s in (line.split() for line in lines)]


def _flaky(steps: int, log: str) -> int:
    """Commits steps 1..3, fails recoverably in attempt 1, then runs to the end; appends
    ``<attempt> <start step>`` to ``log`` (a file: attempts may run in a child process)."""
    ctx = taskpoint.current_context()
    prev = ctx.checkpoint.read()
    start = int(prev.decode()) if prev else 0
    with open(log, "a") as out:
        out.write(f"{ctx.attempt} {start}\n")
    for step in range(start + 1, steps + 1):
        ctx.checkpoint.write(str(step).encode(), step=step)
        if step == FAIL_AT and ctx.attempt == 1:
            raise taskpoint.RecoverableError("transient, retried")
    return steps


flaky = taskpoint.task(retries=3)(_flaky)
flaky_in_a_child = taskpoint.task(retries=3, isolation="process")(_flaky)
flaky_restarts = taskpoint.task(retries=3, on_missing_checkpoints="restart")(_flaky)

IN_RUN = {"inline": flaky, "process": flaky_in_a_child}


@pytest.fixture
def deleter(tp_home: Path) -> _DeleteBetweenAttempts:
    listener = _DeleteBetweenAttempts()
    configure(listener=listener)
    return listener


@pytest.mark.parametrize("isolation", sorted(IN_RUN))
def test_a_retry_after_the_scope_was_deleted_fails_at_once(deleter, isolation, tmp_path) -> None:
    log = tmp_path / "starts.log"
    execution = taskpoint.run(IN_RUN[isolation], steps=STEPS, log=str(log))

    assert deleter.deleted, "attempt 1 was not retried"
    assert execution.status == "failed"
    assert _starts(log) == [(1, 0)], "attempt 2 started from zero"
    [node] = execution.nodes
    assert [a.status for a in node.attempts] == ["recoverable", "failed"]  # no retry spent on it
    assert node.attempts[0].checkpoint_at_end == LATEST
    assert node.attempts[1].error.startswith("CheckpointMissingError:")
    with pytest.raises(taskpoint.ExecutionFailed) as failure:
        execution.unwrap()
    error = failure.value.__cause__
    assert isinstance(error, CheckpointMissingError)
    assert error.expected[0] == LATEST and error.node == node.key
    assert error.execution_id == execution.id and error.url == deleter.deleted[0]
    assert f"taskpoint resume {execution.id} --from-scratch" in str(error)
    record("corruptions")

    resumed = taskpoint.resume(execution.id, from_scratch=True)
    assert resumed.status == "succeeded", resumed.error
    assert _starts(log) == [(1, 0), (3, 0)]
    record("executions")


def test_a_retry_with_the_task_option_restarts_from_zero(deleter, caplog, tmp_path) -> None:
    log = tmp_path / "starts.log"
    execution = taskpoint.run(flaky_restarts, steps=STEPS, log=str(log))

    assert execution.status == "succeeded", execution.error
    assert _starts(log) == [(1, 0), (2, 0)]
    assert "restarts from scratch on purpose" in caplog.text
    assert 'on_missing_checkpoints="restart"' in caplog.text


def test_a_retry_that_finds_no_checkpoint_because_none_was_written_starts_from_zero(
    tmp_path,
) -> None:
    """Nothing recorded, nothing expected: a task that never checkpoints retries as before."""
    log = tmp_path / "starts.log"

    @taskpoint.task(retries=2)
    def no_checkpoints(log: str) -> int:
        attempt = taskpoint.current_context().attempt
        with open(log, "a") as out:
            out.write(f"{attempt} 0\n")
        if attempt < 3:
            raise taskpoint.RecoverableError("again")
        return attempt

    execution = taskpoint.run(no_checkpoints, log=str(log))
    assert execution.status == "succeeded", execution.error
    assert _starts(log) == [(1, 0), (2, 0), (3, 0)]


def test_the_task_option_is_checked() -> None:
    with pytest.raises(ValueError, match="on_missing_checkpoints must be one of"):
        taskpoint.task(on_missing_checkpoints="ignore")(_flaky)
