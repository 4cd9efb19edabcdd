"""Fault 2: a preemption storm. SIGTERM lands on a checkpointing task's attempt process
(``isolation="process"``) every few hundred milliseconds until the task is done.

The task (a real ``taskpoint run`` process) does one step of work per checkpoint interval and
commits a checkpoint after each step, sync or async. It logs the step in progress when SIGTERM
arrives (``on_preempt``), every commit, and the step each attempt starts from. Then:

- the execution succeeds within its system budget, with the failure-free result, and every
  attempt but the last is recorded ``preempted`` (never ``lost`` or ``failed``);
- each preempted attempt committed a final checkpoint of its own (``checkpoint_at_end``), and
  that checkpoint holds the step that was in progress when SIGTERM arrived;
- the next attempt starts exactly there: no completed step is lost, so the work lost per
  preemption is less than one checkpoint interval.
"""

from __future__ import annotations

import json
import random
import signal
import threading
from pathlib import Path

import pytest
from faults_procs import DEADLINE, Driver, Proc, log_lines
from faults_stats import env_seed, record

pytestmark = pytest.mark.slow  # kills processes, starts a JVM or a browser

SEED = env_seed(20261126)
STEPS = 60
INTERVAL = 0.03  # seconds of work per checkpoint


def _clean_result() -> str:
    import hashlib

    state = bytes(32)
    for s in range(1, STEPS + 1):
        state = hashlib.sha256(state + s.to_bytes(8, "little")).digest()
    return state.hex()


class Storm(threading.Thread):
    """SIGTERM to the running attempt's process every 200-400 ms (seeded)."""

    def __init__(self, log: Path, driver: Driver, seed: int) -> None:
        super().__init__(daemon=True)
        self.log, self.driver, self.rng = log, driver, random.Random(seed)
        self.sent: list[int] = []  # attempts signalled
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.wait(self.rng.uniform(0.2, 0.4)) and self.driver.alive():
                starts = [f for f in log_lines(self.log) if f[0] == "start"]
                if not starts or int(starts[-1][1]) in self.sent:
                    continue  # the next attempt has not started its task yet
                attempt, pid = int(starts[-1][1]), int(starts[-1][2])
                child = Proc(pid, parent=self.driver.pid)
                try:
                    if child.signal(signal.SIGTERM):
                        self.sent.append(attempt)
                        record("sigterms")
                finally:
                    child.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


@pytest.mark.parametrize("blocking", [True, False], ids=["sync", "async"])
def test_sigterm_storm_completes_and_loses_at_most_one_interval(blocking, tmp_path, workflow_copy):
    work = tmp_path / "work"
    workflow_copy("stormflow.py", into=work)  # it logs next to itself
    home = tmp_path / "home"
    flag = "--blocking" if blocking else "--no-blocking"
    driver = Driver(home, work, "run", "stormflow.py", "storm", "--steps", str(STEPS),
                    "--interval", str(INTERVAL), flag, "--json")  # fmt: skip
    storm = Storm(work / "storm.log", driver, SEED + blocking)
    storm.start()
    try:
        code = driver.wait(DEADLINE * 2)
    finally:
        storm.stop.set()
        storm.join()
        driver.close()
    assert storm.error is None, storm.error
    out, err = driver.output()
    assert code == 0, err[-3000:]
    data = json.loads(out)
    assert data["status"] == "succeeded"
    assert data["result"] == _clean_result()

    attempts = data["nodes"][0]["attempts"]
    statuses = [a["status"] for a in attempts]
    assert statuses[-1] == "succeeded"
    assert set(statuses[:-1]) <= {"preempted"}, statuses
    preempted = [a for a in attempts if a["status"] == "preempted"]
    assert len(preempted) >= 3, f"only {len(preempted)} preemptions: not a storm"
    # a SIGTERM that lands after the last write cannot stop the attempt: at most one such
    assert len(storm.sent) - 1 <= len(preempted) <= len(storm.sent)

    log = log_lines(work / "storm.log")
    starts = {int(f[1]): int(f[3]) for f in log if f[0] == "start"}
    terms = {int(f[1]): int(f[2]) for f in log if f[0] == "term"}
    finals = {int(f[1]): int(f[2]) for f in log if f[0] == "final"}
    lost_steps = 0
    for a in preempted:
        n = a["n"]
        end = a["checkpoint_at_end"]
        assert end is not None and end.startswith(f"{n:04d}-"), (
            f"preempted attempt {n} committed no final checkpoint of its own ({end})"
        )
        # the step in progress at SIGTERM was finished and committed (or the next one, when
        # SIGTERM came just after a write), and the next attempt started from that commit
        assert terms[n] <= finals[n] <= terms[n] + 1, (n, terms[n], finals[n])
        assert starts[n + 1] == finals[n], (n, finals[n], starts[n + 1])
        lost_steps += max(0, terms[n] - starts[n + 1])
    record("executions")
    assert lost_steps == 0
    print(f"\n{len(storm.sent)} SIGTERMs, {len(preempted)} preemptions, no step lost")
