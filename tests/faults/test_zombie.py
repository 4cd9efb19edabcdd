"""Fault 5: zombie attempts. A writer frozen with SIGSTOP while its successor starts, then woken
with SIGCONT and left writing, must never shadow the successor's work.

- Checkpoint level, two real processes: attempt 1 writes in a loop and is frozen at a random
  moment (often in the middle of a write); attempt 2 starts on the same scope and writes; then
  attempt 1 wakes up and goes on writing. While both write, the latest version is always
  attempt 2's and never goes back, and readers never get attempt 1's content; afterwards an
  attempt 3 reads attempt 2's last commit.
- Engine level (``isolation="process"``): the attempt's child is frozen and its driver
  SIGKILLed, so ``taskpoint resume`` starts attempt 2 while attempt 1 still exists. Woken up,
  attempt 1 finds its driver gone (the kernel's parent-death SIGTERM): it commits its step
  in progress under its own attempt number and stops. Attempt 2's latest never regresses, and
  attempt 3, after attempt 2 is killed too, resumes from attempt 2's last commit.

The engine itself has no heartbeat or timeout for a process attempt: a frozen child whose
driver is alive blocks that driver until the child ends, so the successor here comes from a
resume after the driver's death (as after a lost machine), not from the same driver.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import faults_zombie_writer as writer
import pytest
from faults_procs import DEADLINE, Driver, Proc, log_lines
from faults_stats import env_seed, record

from support.polling import wait_until
from taskpoint import Checkpoint

pytestmark = pytest.mark.slow  # kills processes, starts a JVM or a browser

SEED = env_seed(20261126)
KEEP = 2
SIZE = 256 * 1024


def _writer(url: Path, attempt: int, log: Path, stop: Path) -> subprocess.Popen[bytes]:
    args = [str(url), str(attempt), str(KEEP), str(log), str(SIZE), "0", str(stop)]
    with open(log.with_name(f"writer-{attempt}.err"), "wb") as err:
        proc = subprocess.Popen([sys.executable, writer.__file__, *args], stdout=subprocess.PIPE,
                                stderr=err)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def _commits(log: Path, attempt: int) -> list[tuple[str, int]]:
    return [(f[0], int(f[2])) for f in log_lines(log) if int(f[1]) == attempt]


class LatestWatch:
    """Reads the scope's latest version over and over, as a restarted attempt would."""

    def __init__(self, url: Path) -> None:
        self.cp = Checkpoint.open(url, attempt=1, keep=KEEP)  # reads only: never sweeps
        self.last: tuple[int, int] | None = None
        self.looks = 0

    def look(self, successor: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            latest = self.cp.latest()
            assert latest is not None and latest.attempt == successor, latest
            assert self.last is None or latest.order >= self.last, (self.last, latest.order)
            self.last = latest.order
            data = self.cp.read()
        assert data is not None
        head = data[: data.index(b">") + 1].decode()
        assert head.startswith(f"<attempt {successor} "), f"a reader got {head}"
        self.looks += 1


def test_a_frozen_writer_woken_after_its_successor_never_shadows_it(tmp_path):
    rng = random.Random(SEED)
    url, log = tmp_path / "scope", tmp_path / "commits.log"
    first = _writer(url, 1, log, tmp_path / "stop-1")
    second = None
    try:
        wait_until(lambda: len(_commits(log, 1)) >= 5, DEADLINE, "attempt 1 to commit")
        time.sleep(rng.uniform(0, 0.02))
        first.send_signal(signal.SIGSTOP)  # often in the middle of a write
        record("sigstops")
        frozen_at = len(_commits(log, 1))

        second = _writer(url, 2, log, tmp_path / "stop-2")
        wait_until(lambda: len(_commits(log, 2)) >= 4, DEADLINE, "attempt 2 to commit")
        watch = LatestWatch(url)
        watch.look(2)
        first.send_signal(signal.SIGCONT)  # the zombie wakes up and goes on writing
        deadline = time.monotonic() + DEADLINE
        while len(_commits(log, 1)) < frozen_at + 10 and first.poll() is None:
            watch.look(2)
            assert time.monotonic() < deadline, "the zombie wrote nothing after waking"
        (tmp_path / "stop-1").touch()
        zombie_code = first.wait(DEADLINE)
        woke_commits = len(_commits(log, 1)) - frozen_at
        watch.look(2)
        (tmp_path / "stop-2").touch()
        assert second.wait(DEADLINE) == 0
        watch.cp.close()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()
    # The successor sweeps what the zombie was writing when it froze, so the zombie's write
    # may fail: then with a CheckpointError that says so, and the successor is unharmed.
    if zombie_code != 0:
        err = (tmp_path / "writer-1.err").read_text()
        assert "CheckpointError" in err and "later attempt" in err, err[-2000:]
    last_id, last_n = _commits(log, 2)[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = Checkpoint.open(url, attempt=3, keep=KEEP)
        latest = third.latest()
        assert latest is not None and latest.id == last_id
        assert third.read() == writer.content(2, last_n, SIZE)
        third.close()
    record("commits_checked", watch.looks)
    print(f"\nzombie: {woke_commits} writes after waking, exit {zombie_code}; {watch.looks} reads")


STEPS = 8
INTERVAL = 0.5  # seconds between checkpoints: room to freeze an attempt between two


def _clean() -> str:
    import hashlib

    state = bytes(32)
    for s in range(1, STEPS + 1):
        state = hashlib.sha256(state + s.to_bytes(8, "little")).digest()
    return state.hex()


def test_engine_zombie_attempt_never_shadows_its_successor(tmp_path, workflow_copy):
    work, home = tmp_path / "work", tmp_path / "home"
    workflow_copy("zflow.py", into=work)  # it logs next to itself
    zlog = work / "zombie.log"

    def lines(kind: str, attempt: int) -> list[list[str]]:
        return [f for f in log_lines(zlog) if f[0] == kind and int(f[1]) == attempt]

    first = Driver(home, work, "run", "zflow.py", "zombies", "--steps", str(STEPS),
                   "--interval", str(INTERVAL), "--json")  # fmt: skip
    drivers = [first]
    zombie = None
    try:
        # Right after a commit (the next write is INTERVAL away) the driver dies and its
        # attempt freezes. (Frozen first, it would die: a stopped process in a group orphaned by
        # its driver's death gets SIGHUP from the kernel.)
        wait_until(lambda: len(lines("commit", 1)) >= 2, DEADLINE, "attempt 1 to commit")
        zombie = Proc(int(lines("start", 1)[0][2]), parent=first.pid)
        first.kill_driver()
        zombie.signal(signal.SIGSTOP)
        record("sigstops")
        assert not lines("final", 1), "the attempt stopped before it could be frozen"
        execution_id = lines("start", 1)[0][4]

        second = Driver(home, work, "resume", execution_id, "--json")
        drivers.append(second)
        wait_until(lambda: len(lines("commit", 2)) >= 2, DEADLINE, "attempt 2 to commit")
        scope = home / "blobs" / execution_id / "nodes" / "chain-1" / "checkpoints"
        watch = Checkpoint.open(scope, attempt=1)  # reads only
        best = watch.latest()
        assert best is not None and best.attempt == 2
        zombie.signal(signal.SIGCONT)  # wakes up to the SIGTERM of its dead driver
        while not zombie.gone():
            latest = watch.latest()
            assert latest is not None and latest.attempt == 2 and latest.order >= best.order
            best = latest
        (zombie_final,) = lines("final", 1)  # it committed its step in progress, then stopped
        latest = watch.latest()
        assert latest is not None and latest.attempt == 2 and latest.order >= best.order
        versions = [v.id for v in watch.versions()]
        watch.close()

        done = len(lines("commit", 2))
        wait_until(lambda: len(lines("commit", 2)) > done, DEADLINE, "attempt 2 to go on")
        second.kill_group()  # attempt 2 dies hard, with its driver
        last2 = int(lines("commit", 2)[-1][2])
        third = Driver(home, work, "resume", execution_id, "--json")
        drivers.append(third)
        assert third.wait(DEADLINE) == 0, third.output()[1][-3000:]
        data = json.loads(third.output()[0])
        assert data["status"] == "succeeded" and data["result"] == _clean()
        attempts = data["nodes"][0]["attempts"]
        assert [a["n"] for a in attempts] == [1, 2, 3]
        assert attempts[2]["checkpoint_at_start"].startswith("0002-"), attempts[2]
        (start3,) = lines("start", 3)
        assert int(start3[3]) == last2, "attempt 3 did not resume from attempt 2's last commit"
        record("executions")
        print(f"\nzombie committed step {zombie_final[2]} after waking; kept {versions}")
    finally:
        if zombie is not None:
            zombie.signal(signal.SIGCONT)
            zombie.signal(signal.SIGKILL)
            zombie.close()
        for driver in drivers:
            driver.close()
