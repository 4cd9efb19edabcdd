"""Fault 1: random workloads SIGKILLed at random moments, then resumed until they finish.

Hypothesis draws a workload (bytes / file / directory checkpoints, sync or async writes, 1 B to
32 MiB, inline or ``isolation="process"``, ``keep`` 1..3) and a kill plan. Each workload is a
real ``taskpoint run`` process (faults_workload.py) in its own session; each kill is one of

- ``group``: SIGKILL every process of the driver's session (the machine dies);
- ``driver``: SIGKILL only the driver; an attempt child gets SIGTERM from the kernel
  (PDEATHSIG), commits its next checkpoint and exits, and the test waits for it;
- ``attempt``: SIGKILL only the attempt's child (process isolation) while the driver is frozen
  with SIGSTOP; the driver then retries it as a lost attempt.

Each kill lands after a drawn number of new commits plus a drawn delay. After every kill, with
nothing running, the test checks what a restarted attempt will see:

- every committed version is exactly what the task wrote for its step (no torn version);
- every version the task logged as committed before the kill is still there, unless ``keep``
  newer versions replaced it (versions lost are counted, and must be 0);
- the latest version is at least the newest logged one, and the next attempt resumes from
  exactly that version (so no torn read, and no work lost beyond the uncommitted step);
- committed versions kept never exceed ``keep`` + 1 (the one whose retention the kill cut);
- leftovers of killed writes (uncommitted payloads, manifest temps, staging) stay bounded.

Then ``taskpoint resume`` runs until the execution succeeds, and its result must equal the
failure-free result. The randomness is seeded (``TASKPOINT_FAULTS_SEED``; printed on failure)
and the number of examples is bounded so the whole suite stays within CI's budget.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import faults_workload as workload
import pytest
from faults_procs import (
    DEADLINE,
    Driver,
    Proc,
    cli_command,
    log_lines,
    session_gone,
    tp_env,
)
from faults_stats import env_seed, record
from hypothesis import HealthCheck, Phase, example, given, note, seed, settings
from hypothesis import strategies as st

from support.polling import wait_until
from taskpoint import Checkpoint
from taskpoint.checkpoint.version import parse_version_id
from taskpoint.checkpoint.writer import LAZY_CHORES

pytestmark = pytest.mark.slow  # kills processes, starts a JVM or a browser

SEED = env_seed(20261126)
MAX_EXAMPLES = int(os.environ.get("TASKPOINT_FAULTS_EXAMPLES", "16"))
MiB = 1 << 20
WORKLOAD_FILE = Path(workload.__file__)


def _size(tier: int) -> st.SearchStrategy[int]:
    if tier < 6:
        return st.integers(1, 4096)
    if tier < 9:
        return st.integers(4097, MiB)
    return st.integers(MiB + 1, 32 * MiB)


sizes = st.integers(0, 9).flatmap(_size)


@st.composite
def workloads(draw: st.DrawFn) -> dict:
    size = draw(sizes)
    return {
        "kind": draw(st.sampled_from(["bytes", "file", "dir"])),
        "async": draw(st.booleans()),
        "isolation": draw(st.sampled_from(["inline", "process"])),
        "size": size,
        "keep": draw(st.integers(1, 3)),
        "steps": draw(st.integers(3, 6) if size > MiB else st.integers(8, 30)),
        # a step of work between checkpoints, so that kills land at every stage of a run
        "pause": draw(st.sampled_from([0.0, 0.005, 0.01, 0.02])),
    }


@st.composite
def kill_plans(draw: st.DrawFn, isolation: str) -> list[tuple[str, int, int]]:
    targets = ["group"] if isolation == "inline" else ["group", "driver", "attempt"]
    kill = st.tuples(st.sampled_from(targets), st.integers(0, 3), st.integers(0, 60))
    return draw(st.lists(kill, min_size=1, max_size=5))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict, list[tuple[str, int, int]]]:
    w = draw(workloads())
    return w, draw(kill_plans(w["isolation"]))


@dataclass
class Run:
    """One example: a private home and working directory, the driver, what was checked."""

    work: Path
    cfg: dict
    driver: Driver | None = None
    execution: str | None = None
    kills: int = 0
    expect_resume_at: list[tuple[int, int]] = field(default_factory=list)  # (attempts seen, step)
    worst: dict[str, int] = field(default_factory=lambda: {"payloads": 0, "temps": 0, "staging": 0})

    @property
    def home(self) -> Path:
        return self.work / "home"

    def commits(self) -> list[tuple[str, int]]:
        return [(f[0], int(f[1])) for f in log_lines(self.work / "commits.log") if len(f) == 2]

    def attempts(self) -> list[list[str]]:
        return log_lines(self.work / "attempts.log")

    def scope(self) -> Path | None:
        if self.execution is None:
            for fields in self.attempts():
                if fields[0] == "start":
                    self.execution = fields[1]
        if self.execution is None:
            return None
        return self.home / "blobs" / self.execution / "nodes" / "grind-1" / "checkpoints"

    def start(self) -> None:
        self.scope()
        args = ["resume", self.execution] if self.execution else ["run", "faults_workload.py"]
        if not self.execution:
            args += ["pipeline", "--steps", str(self.cfg["steps"])]
        self.driver = Driver(self.home, self.work, *args, "--json")


def _start_work(base: Path, cfg: dict) -> Run:
    work = Path(tempfile.mkdtemp(prefix="example-", dir=base))
    shutil.copy(WORKLOAD_FILE, work / "faults_workload.py")
    (work / "workload.json").write_text(json.dumps(cfg))
    return Run(work, cfg)


def _wait_for_commits(run: Run, target: int) -> None:
    assert run.driver is not None
    wait_until(
        lambda: len(run.commits()) >= target or not run.driver.alive(),
        DEADLINE,
        f"{target} commits",
    )


def _kill(run: Run, target: str) -> bool:
    """Inject one kill; return False if the driver finished before it could be killed."""
    driver = run.driver
    assert driver is not None
    if target == "attempt":
        starts = [f for f in run.attempts() if f[0] == "start"]
        child = Proc(int(starts[-1][3]), parent=driver.pid) if starts else None
        if child is not None and not child.gone():
            os.kill(driver.pid, signal.SIGSTOP)  # freeze the driver: the scope stays still
            try:
                if child.signal(signal.SIGKILL):
                    record("kills")
                    run.kills += 1
                child.wait_gone()
                _check_scope(run)
            finally:
                child.close()
                os.kill(driver.pid, signal.SIGCONT)
            return driver.alive() or driver.wait() == 0
        target = "group"  # no attempt child right now: kill everything instead
    if not driver.alive():
        return False
    if target == "group":
        driver.kill_group()
    else:
        driver.kill_driver()  # its attempt child, if any, stops at its next write
    run.kills += 1
    wait_until(lambda: session_gone(driver.pid), DEADLINE, "the killed driver's processes")
    _check_scope(run)
    return True


def _versions(cp: Checkpoint) -> list:
    return cp.versions()


def _check_scope(run: Run) -> None:
    """What a restarted attempt will see, checked with nothing running."""
    scope = run.scope()
    logged = run.commits()
    if scope is None or not (scope / "v").exists():
        assert not logged, "commits were logged but the scope is missing"
        run.expect_resume_at.append((len(run.attempts()), 0))
        return
    keep, kind, size = run.cfg["keep"], run.cfg["kind"], run.cfg["size"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CheckpointWarning: a committed version is torn
        cp = Checkpoint.open(scope, attempt=1, keep=keep)  # reads only: never sweeps
        versions = _versions(cp)
        by_id = {v.id: v for v in versions}
        assert len(versions) <= keep + 1, f"{len(versions)} versions kept with keep={keep}"
        scratch = run.work / "scratch"
        for v in versions:
            out = cp.restore(scratch / v.id, version=v.id)
            assert out is not None
            got = {
                p.relative_to(out).as_posix(): p.read_bytes()
                for p in sorted(out.rglob("*"))
                if p.is_file()
            }
            assert got == workload.expected(v.step, kind, size), f"version {v.id} is torn"
            shutil.rmtree(out)
        record("commits_checked", len(versions))
        lost = []
        for vid, step in logged:
            if vid in by_id:
                assert by_id[vid].step == step
                continue
            newer = [v for v in versions if v.order > parse_version_id(vid)]
            if len(newer) < keep:
                lost.append(vid)
        record("versions_lost", len(lost))
        assert not lost, f"committed versions lost: {lost}; kept: {sorted(by_id)}"
        latest = versions[-1] if versions else None
        if logged:
            newest = max(parse_version_id(vid) for vid, _ in logged)
            assert latest is not None and latest.order >= newest
        run.expect_resume_at.append((len(run.attempts()), latest.step if latest else 0))
        cp.close()
    left = _leftovers(scope)
    for name, entries in left.items():
        run.worst[name] = max(run.worst[name], len(entries))
        # One per killed write at most, and each attempt's first commit sweeps them; a killed
        # writer also leaves the retired small manifests whose deletes it had let wait.
        lazy = LAZY_CHORES * run.kills if name == "temps" else 0
        assert len(entries) <= 2 * run.kills + 1 + lazy, left


def _leftovers(scope: Path) -> dict[str, list[str]]:
    names = os.listdir(scope / "v")
    manifests = {n.removesuffix(".manifest.json") for n in names if n.endswith(".json")}
    staging = scope / ".staging"
    return {
        "payloads": sorted(n for n in names if parse_version_id(n) and n not in manifests),
        "temps": sorted(n for n in names if n.startswith(".")),
        "staging": sorted(os.listdir(staging)) if staging.exists() else [],
    }


def _check_resumes(run: Run) -> None:
    """Each attempt after a kill resumed from exactly the latest version at that kill."""
    attempts = run.attempts()
    resumes = [(i, int(f[2])) for i, f in enumerate(attempts) if f[0] == "resume"]
    for seen, step in run.expect_resume_at:
        later = [s for i, s in resumes if i >= seen]
        if later:
            assert later[0] == step, (
                f"an attempt after a kill resumed from step {later[0]}, the latest was {step}"
            )


def _finish(run: Run) -> dict:
    """Let the last driver finish, or resume once more; the execution must succeed."""
    if run.driver is None or (not run.driver.alive() and run.driver.wait() != 0):
        run.start()
    assert run.driver is not None
    code = run.driver.wait(DEADLINE * 2)
    out, err = run.driver.output()
    torn = run.work / "torn.log"
    record("torn_reads", len(log_lines(torn)))
    assert not torn.exists(), torn.read_text()
    assert code == 0, f"driver exited {code}: {err[-3000:]}"
    return json.loads(out)


def _execute(base: Path, cfg: dict, plan: list[tuple[str, int, int]]) -> None:
    run = _start_work(base, cfg)
    note(f"seed={SEED} workload={cfg} kills={plan} work={run.work}")
    try:
        for target, commits, delay_ms in plan:
            if run.driver is None or not run.driver.alive():
                if run.driver is not None and run.driver.wait() == 0:
                    break  # finished before this kill
                run.start()
            _wait_for_commits(run, len(run.commits()) + commits)
            time.sleep(delay_ms / 1000)
            if not _kill(run, target):
                break
        data = _finish(run)
        _check_resumes(run)
        assert data["status"] == "succeeded"
        assert data["result"] == workload.final(cfg["steps"]), "result differs from a clean run"
        _check_scope(run)
        scope = run.scope()
        assert scope is not None
        if any(f[0] == "resume" and int(f[2]) < cfg["steps"] for f in run.attempts()[-1:]):
            # the last attempt committed: its sweeps removed everything killed writes left
            assert _leftovers(scope) == {"payloads": [], "temps": [], "staging": []}
        record("executions")
        print(f"example: {cfg} plan={plan} kills={run.kills} leftovers(worst)={run.worst}")
    finally:
        if run.driver is not None:
            run.driver.close()
    shutil.rmtree(run.work, ignore_errors=True)


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("random-kills")


BIG = 32 * MiB


@seed(SEED)
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each example is seconds of work
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
@given(scenario=scenarios())
@example(
    scenario=(
        {"kind": "dir", "async": True, "isolation": "process", "size": BIG, "keep": 2}
        | {"steps": 5, "pause": 0.0},
        [("driver", 1, 0), ("attempt", 1, 0)],
    )
)
@example(
    scenario=(
        {"kind": "bytes", "async": False, "isolation": "inline", "size": BIG, "keep": 1}
        | {"steps": 4, "pause": 0.0},
        [("group", 1, 40), ("group", 0, 5)],
    )
)
@example(
    scenario=(
        {"kind": "file", "async": True, "isolation": "inline", "size": 1, "keep": 3}
        | {"steps": 30, "pause": 0.0},
        [("group", 3, 0), ("group", 2, 1), ("group", 0, 0), ("group", 4, 2)],
    )
)
def test_random_kills_then_resume_until_done(examples_dir, scenario):
    cfg, plan = scenario
    _execute(examples_dir, cfg, plan)


def test_an_attempt_killed_before_its_start_was_recorded_keeps_its_place(tmp_path):
    """Inline attempts record their start with their end, or after 50 ms: a driver killed
    sooner leaves no record of an attempt that did commit. The resume must still show it."""
    work, home = tmp_path / "work", tmp_path / "home"
    quick = Path(__file__).parent / "workflows" / "quick.py"
    first = Driver(home, work, "run", str(quick), "quick", "--steps", "4", "--json")
    assert first.wait() == -signal.SIGKILL
    record("kills")
    shown = subprocess.run(
        cli_command("list", "--json"), capture_output=True, text=True, env=tp_env(home),
        timeout=DEADLINE,
    )  # fmt: skip
    listed = json.loads(shown.stdout)
    resumed = Driver(home, work, "resume", listed[0]["id"], "--json")
    assert resumed.wait() == 0, resumed.output()[1]
    data = json.loads(resumed.output()[0])
    assert data["result"] == 2  # resumed after the two commits of the killed attempt
    attempts = data["nodes"][0]["attempts"]
    assert [(a["n"], a["status"]) for a in attempts] == [(1, "lost"), (2, "succeeded")]
    assert {c["attempt"] for c in data["nodes"][0]["checkpoints"]} <= {1, 2}
