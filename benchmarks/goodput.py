"""Target 6: goodput under preemption, as real taskpoint executions against the same job run
without checkpoints and under flytekit's local execution.

    python -m benchmarks.goodput [--job-s 120] [--every 20] [--state-mib 256] [--ckpt-every 5]
                                 [--rounds 1] [--flytekit-python PY] [--quick]

The job (it imports torch and scikit-learn): ``--job-s`` seconds of steps (~0.1 s of torch
matrix products each) over a state of ``--state-mib`` (4 fp32 tensors), with an async
`TorchCheckpointer` save every ``--ckpt-every`` s, run by ``taskpoint run`` as a task with
``isolation="process"``. Contenders, one after the other (each a few minutes, so by default
each runs once; ``--rounds N`` repeats failure-free,
SIGTERM and SIGKILL N times in turn and reports the median of each round's ratio, which the
machine's load drifting between two single runs moves less):

- failure-free: the baseline time;
- SIGTERM every ``--every`` s to the running attempt (a preemption: it saves at its next step,
  commits and stops; the engine retries it from that checkpoint);
- SIGKILL every ``--every`` s to the running attempt (a lost worker: the retry starts from the
  last committed save);
- retries without checkpoints: the same job and SIGKILLs, restarting from step 0, stopped at
  ``--cap`` x the failure-free time if it has not finished;
- flytekit local execution (when ``--flytekit-python`` names an interpreter with flytekit): the
  same steps (busy-waits: that interpreter has no torch) and the same first SIGTERM;
- auto (``--only auto``): the job with ``every_n_steps="auto"`` (it saves when
  ``Checkpoint.due()`` says: the interval taskpoint chooses from the measured save cost and the
  failures it saw, logged to ``<progress>.interval``) failure-free, under SIGTERM and under
  SIGKILL every ``--every`` s, and the job without checkpoints, failure-free (what the auto
  failure-free run is measured against). Targets: failure-free <= 1.02 x the run without
  checkpoints; SIGTERM <= 1.05 x and SIGKILL <= 1.12 x the auto failure-free run;
- restart (``benchmarks/restart.py``): SIGKILLs of a shorter run of the job through
  ``taskpoint run`` and through the Python API, each restart taken apart (detect, start,
  setup and import in the new attempt, restore, first step) and compared with the time a fresh
  interpreter takes to import torch and scikit-learn (target: kill -> first line <= 0.3 x).

Target: each preempted taskpoint run finishes in <= 1.15 x the failure-free time. Each job logs
its progress (wall time, step) to a file: the plot shows progress over time for all of them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field

from benchmarks.common import Row, print_table, save_json, workdir_root

JOB = """
import os, time
_T0 = time.time()
import torch
try:
    import sklearn.linear_model  # noqa: F401  (a job that imports torch and scikit-learn)
except ImportError:
    pass
_IMPORTED = (os.getpid(), _T0, time.time())  # who ran this module's top level, and how long
from taskpoint import task, workflow
from taskpoint.integrations.torch import TorchCheckpointer


def _log(path, text):
    with open(path, "a") as handle:
        handle.write(text + "\\n")


def _started_at():
    # When this process started (its fork), as a time.time() value, from /proc.
    try:
        with open("/proc/self/stat") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        alive = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - alive
    except (OSError, ValueError, AttributeError):
        return float("nan")


def _log_interval(progress, estimate, saved, shown):
    # The interval due() chose: at every save, and whenever it moved by more than 2 %.
    if estimate is None or not (saved or abs(estimate.interval - shown) > 0.02 * shown):
        return shown
    _log(progress + ".interval", f"{time.time():.3f} {estimate.interval:.3f} "
         f"{estimate.cost:.4f} {estimate.mtbf or 0:.2f} {estimate.failures} {int(saved)} "
         f"{int(estimate.measured)} {estimate.basis}")
    return estimate.interval


@task(isolation="process", system_retries=10000)
def job(steps: int, mms: int, state_mib: int, ckpt_every: float, use_ckpt: bool,
        progress: str, auto: bool) -> int:
    entered, pid = time.time(), os.getpid()
    imported = _IMPORTED[2] - _IMPORTED[1] if _IMPORTED[0] == pid else 0.0
    _log(progress + ".enter", f"{entered:.3f} {pid} {_started_at():.3f} {imported:.3f}")
    _log(progress + ".pid", str(pid))
    torch.set_num_threads(1)
    numel = state_mib * (1 << 20) // 16
    model = torch.nn.ParameterDict(
        {f"w{i}": torch.nn.Parameter(torch.zeros(numel)) for i in range(4)}
    )
    a, b, out = torch.rand(384, 384), torch.rand(384, 384), torch.empty(384, 384)
    cadence = "auto" if auto else None  # auto: saves when checkpoint.due() says
    ckpt = TorchCheckpointer(model=model, rng=False, every_n_steps=cadence) if use_ckpt else None
    start = (ckpt.restore() or 0) if ckpt is not None else 0
    _log(progress, f"{time.time():.3f} {start} start")
    last, shown = time.monotonic(), 0.0
    for step in range(start, steps):
        for _ in range(mms):
            torch.mm(a, b, out=out)
        with torch.no_grad():
            model["w0"][step % 4096] += 1.0
        done = step + 1
        if ckpt is not None and auto:
            try:
                saved = ckpt.maybe_save(done) is not None
            except BaseException:  # Preempted, after the save on SIGTERM committed
                _log_interval(progress, ckpt.checkpoint.pacer.last, True, shown)
                raise
            shown = _log_interval(progress, ckpt.checkpoint.pacer.last, saved, shown)
        elif ckpt is not None and (time.monotonic() - last >= ckpt_every or ckpt.preempted):
            ckpt.save(done)
            last = time.monotonic()
        _log(progress, f"{time.time():.3f} {done}")
    if ckpt is not None:
        ckpt.wait()
    return steps


@workflow
def goodput(steps: int, mms: int, state_mib: int, ckpt_every: float, use_ckpt: bool,
            progress: str, auto: bool = False) -> int:
    return job(steps=steps, mms=mms, state_mib=state_mib, ckpt_every=ckpt_every,
               use_ckpt=use_ckpt, progress=progress, auto=auto)
"""

FLYTE_JOB = """
import logging, os, sys, time
logging.disable(logging.WARNING)
from flytekit import task, workflow


def _log(path, text):
    with open(path, "a") as handle:
        handle.write(text + "\\n")


@task(retries=3)
def job(steps: int, step_s: float, progress: str) -> int:
    _log(progress + ".pid", str(os.getpid()))
    _log(progress, f"{time.time():.3f} 0 start")
    for step in range(steps):
        end = time.perf_counter() + step_s
        while time.perf_counter() < end:
            pass
        _log(progress, f"{time.time():.3f} {step + 1}")
    return steps


@workflow
def goodput(steps: int, step_s: float, progress: str) -> int:
    return job(steps=steps, step_s=step_s, progress=progress)


if __name__ == "__main__":
    goodput(steps=int(sys.argv[1]), step_s=float(sys.argv[2]), progress=sys.argv[3])
"""


ALL = frozenset({"term", "kill", "nock", "flyte", "restart", "auto"})
NEEDS_T0 = frozenset({"term", "kill", "nock", "flyte"})  # against the failure-free run


@dataclass
class Outcome:
    name: str
    finished: bool
    elapsed: float
    kills: list[float] = field(default_factory=list)
    progress: list[tuple[float, int]] = field(default_factory=list)
    note: str = ""

    starts: list[tuple[float, int]] = field(default_factory=list)
    # auto contenders: (time since start, interval chosen, save cost, MTBF (0: none seen),
    # failures seen, 1 if it saved then)
    intervals: list[tuple[float, float, float, float, int, int]] = field(default_factory=list)

    def final_step(self) -> int:
        return max((s for _, s in self.progress), default=0)

    def per_kill(self, step_s: float) -> tuple[float, float]:
        """Medians over kills of (work lost in s, restart in s: kill -> next attempt's start)."""
        lost, restart = [], []
        for k in self.kills:
            before = max((s for t, s in self.progress if t <= k), default=0)
            after = [(t, s) for t, s in self.starts if t > k]
            if after:
                lost.append(max(0, before - after[0][1]) * step_s)
                restart.append(after[0][0] - k)
        if not lost:
            return float("nan"), float("nan")
        return statistics.median(lost), statistics.median(restart)


def calibrate(step_s: float) -> tuple[int, float]:
    """Matrix products per step for ``step_s`` seconds with one torch thread; the real time."""
    import torch

    torch.set_num_threads(1)
    a, b, out = torch.rand(384, 384), torch.rand(384, 384), torch.empty(384, 384)
    samples = []
    for _ in range(30):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        samples.append(time.perf_counter() - start)
    mms = max(1, round(step_s / statistics.median(samples)))
    timed = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(mms):
            torch.mm(a, b, out=out)
        timed.append(time.perf_counter() - start)
    return mms, statistics.median(timed)


def run_contender(
    name: str,
    argv: list[str],
    env: dict[str, str],
    progress: str,
    every: float,
    sig: int | None,
    cap: float | None,
    grace: float,
) -> Outcome:
    """Start ``argv``; every ``every`` s send ``sig`` to the attempt named in the pid file."""
    start = time.time()
    kills: list[float] = []
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    next_kill = start + every
    stopped_at_cap = False
    while proc.poll() is None:
        now = time.time()
        if cap is not None and now - start > cap:
            _stop(proc)
            stopped_at_cap = True
            break
        if sig is not None and now >= next_kill:
            pid = _attempt_pid(progress)
            if pid is not None and _signal(pid, sig):
                kills.append(now - start)
                next_kill += every
                if sig == signal.SIGTERM:
                    _kill_after(pid, grace)
        time.sleep(0.05)
    elapsed = time.time() - start
    err = proc.stderr.read() if proc.stderr else ""
    finished = proc.returncode == 0 and not stopped_at_cap
    note = "" if finished else _failure_note(proc.returncode, stopped_at_cap, cap, err)
    points, starts = _read_progress(progress, start)
    intervals = _read_intervals(progress + ".interval", start)
    return Outcome(name, finished, elapsed, kills, points, note, starts, intervals)


def _kill_after(pid: int, grace: float) -> None:
    """The machine goes away at the end of the grace period: SIGKILL if still alive."""
    deadline = time.time() + grace
    while time.time() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    _signal(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by the driver) is gone for our purpose
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _signal(pid: int, sig: int) -> bool:
    if not _alive(pid):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _attempt_pid(progress: str) -> int | None:
    try:
        with open(progress + ".pid") as handle:
            lines = handle.read().split()
    except FileNotFoundError:
        return None
    return int(lines[-1]) if lines else None


def _read_progress(
    progress: str, start: float
) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    """(time since start, step) of every step logged, and of every attempt's start."""
    points, starts = [], []
    try:
        with open(progress) as handle:
            for line in handle:
                parts = line.split()
                try:
                    point = (float(parts[0]) - start, int(parts[1]))
                except (ValueError, IndexError):
                    continue  # a line cut short by a kill
                points.append(point)
                if parts[2:] == ["start"]:
                    starts.append(point)
    except FileNotFoundError:
        pass
    return points, starts


def _read_intervals(path: str, start: float) -> list[tuple[float, float, float, float, int, int]]:
    rows = []
    try:
        with open(path) as handle:
            for line in handle:
                p = line.split()
                try:
                    rows.append(
                        (float(p[0]) - start, float(p[1]), float(p[2]), float(p[3]), int(p[4]),
                         int(p[5]))
                    )  # fmt: skip
                except (ValueError, IndexError):
                    continue
    except FileNotFoundError:
        pass
    return rows


def _failure_note(code: int | None, at_cap: bool, cap: float | None, err: str) -> str:
    if at_cap:
        return f"not finished after {cap:.0f} s (stopped)"
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    last = [line for line in err.strip().splitlines() if line.strip()][-1:] or [""]
    return f"exit {code}: {last[0][:160]}"


def taskpoint_argv(
    job: str,
    steps: int,
    mms: int,
    state_mib: int,
    ckpt_every: float,
    use_ckpt: bool,
    progress: str,
    grace: float,
    auto: bool = False,
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "taskpoint.cli",
        "--grace",
        str(grace),
        "run",
        job,
        "goodput",
        "--steps",
        str(steps),
        "--mms",
        str(mms),
        "--state-mib",
        str(state_mib),
        "--ckpt-every",
        str(ckpt_every),
        "--use-ckpt" if use_ckpt else "--no-use-ckpt",
        "--progress",
        progress,
        "--auto" if auto else "--no-auto",
    ]


def run(
    job_s: float,
    every: float,
    state_mib: int,
    ckpt_every: float,
    step_s: float,
    cap_x: float,
    grace: float,
    flytekit_python: str | None,
    root: str | None,
    which: frozenset[str] = ALL,
    rounds: int = 1,
) -> tuple[list[Row], list[Outcome]]:
    workdir = tempfile.mkdtemp(prefix="taskpoint-bench-", dir=workdir_root(root))
    try:
        job = os.path.join(workdir, "goodput_job.py")
        with open(job, "w") as handle:
            handle.write(textwrap.dedent(JOB))
        mms, real_step = calibrate(step_s)
        steps = max(10, round(job_s / real_step))
        outcomes: list[Outcome] = []

        def contender(
            name: str, sig: int | None, use_ckpt: bool, cap: float | None, auto: bool = False
        ) -> Outcome:
            tag = name.split()[0].replace("/", "-")
            progress = os.path.join(workdir, f"{tag}-{len(outcomes)}.progress")
            env = dict(os.environ, TASKPOINT_HOME=os.path.join(workdir, f"home-{len(outcomes)}"))
            env["PYTHONPATH"] = os.pathsep.join([workdir, env.get("PYTHONPATH", "")])
            argv = taskpoint_argv(
                job, steps, mms, state_mib, ckpt_every, use_ckpt, progress, grace, auto
            )
            out = run_contender(name, argv, env, progress, every, sig, cap, grace)
            outcomes.append(out)
            _report(out)
            return out

        signals = [
            (k, s) for k, s in (("term", signal.SIGTERM), ("kill", signal.SIGKILL)) if k in which
        ]
        outs: dict[str, list[Outcome]] = {"free": [], "term": [], "kill": []}
        outs.update({"bare": [], "auto": [], "auto-term": [], "auto-kill": []})
        extra: list[Row] = []
        if "restart" in which:
            from benchmarks import restart

            extra = restart.run(workdir, job, mms, real_step, state_mib, grace)
        if not which & (NEEDS_T0 | {"auto"}):
            return extra, outcomes
        for _ in range(rounds):
            if which & NEEDS_T0:
                outs["free"].append(contender("failure-free", None, True, None))
                for key, sig in signals:
                    outs[key].append(contender(f"{sig.name} every {every:g} s", sig, True, None))
            if "auto" in which:  # the run without checkpoints first: the load drifts
                outs["bare"].append(contender("no checkpoints, failure-free", None, False, None))
                outs["auto"].append(contender("auto, failure-free", None, True, None, True))
                for key, sig in (("kill", signal.SIGKILL), ("term", signal.SIGTERM)):
                    name = f"auto, {sig.name} every {every:g} s"
                    outs[f"auto-{key}"].append(contender(name, sig, True, None, True))
        if not outs["free"]:
            return _auto_rows(outs, every, steps, real_step) + extra, outcomes
        t0 = statistics.median(o.elapsed for o in outs["free"])
        if "nock" in which:
            outs["nock"] = [
                contender(
                    f"no checkpoints, SIGKILL every {every:g} s", signal.SIGKILL, False, cap_x * t0
                )
            ]
        if "flyte" in which and flytekit_python:
            flyte = _flytekit(flytekit_python, workdir, steps, real_step, every, grace, t0)
            if flyte is not None:
                outs["flyte"] = [flyte]
                outcomes.append(flyte)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = _rows(outs, every, ckpt_every, steps, real_step)
    return rows + _auto_rows(outs, every, steps, real_step) + extra, outcomes


def _flytekit(
    python: str | None,
    workdir: str,
    steps: int,
    step_s: float,
    every: float,
    grace: float,
    t0: float,
) -> Outcome | None:
    if not python:
        return None
    ok = subprocess.run([python, "-c", "import flytekit"], capture_output=True).returncode == 0
    if not ok:
        return Outcome("flytekit local", False, 0.0, note=f"skipped: no flytekit in {python}")
    job = os.path.join(workdir, "flyte_job.py")
    with open(job, "w") as handle:
        handle.write(textwrap.dedent(FLYTE_JOB))
    progress = os.path.join(workdir, "flytekit.progress")
    argv = [python, job, str(steps), str(step_s), progress]
    out = run_contender(
        "flytekit local, SIGTERM",
        argv,
        dict(os.environ),
        progress,
        every,
        signal.SIGTERM,
        2 * t0,
        grace,
    )
    _report(out)
    return out


def _report(out: Outcome) -> None:
    state = "finished" if out.finished else "NOT finished"
    print(f"  {out.name}: {state} in {out.elapsed:.1f} s, {len(out.kills)} kills {out.note}")


def _rows(
    outs: dict[str, list[Outcome]], every: float, ckpt_every: float, steps: int, step_s: float
) -> list[Row]:
    frees = outs["free"]
    t0 = statistics.median(o.elapsed for o in frees)
    what = f"{steps} steps of {step_s * 1e3:.0f} ms, async save every {ckpt_every:g} s"
    if len(frees) > 1:
        what += f"; median of {len(frees)}: " + ", ".join(f"{o.elapsed:.1f}" for o in frees)
    rows = [Row("goodput: failure-free job", t0, None, "s", None, "(baseline)", None, what)]
    for key, label in (("term", "SIGTERM"), ("kill", "SIGKILL")):
        runs = outs.get(key) or []
        if not runs:
            continue
        # Each run against the failure-free run of its own round (the load drifts over time).
        ratios = [out.elapsed / free.elapsed for out, free in zip(runs, frees, strict=False)]
        ratio = statistics.median(ratios)
        median_round = ratios.index(sorted(ratios)[(len(ratios) - 1) // 2])
        out, own_t0 = runs[median_round], frees[median_round].elapsed  # the median run
        lost, restart = out.per_kill(step_s)
        note = (
            f"{len(out.kills)} {label}s; per kill: {lost:.2f} s of work lost, "
            f"{restart:.2f} s from kill to the next attempt's first step"
        )
        if key == "kill":
            note += "; " + _kill_expectation(len(out.kills), every, ckpt_every, restart, own_t0)
        if len(runs) > 1:
            note += "; ratios of the rounds: " + ", ".join(f"{r:.3f}" for r in ratios)
        finished = all(r.finished for r in runs)
        rows.append(
            Row(
                f"goodput: {label} every {every:g} s (vs failure-free)",
                statistics.median(r.elapsed for r in runs),
                t0,
                "s",
                ratio,
                "<= 1.15 x baseline",
                finished and ratio <= 1.15,
                note if finished else f"{out.note}; {note}",
            )
        )
    if "nock" in outs:
        nock = outs["nock"][0]
        done = nock.final_step() / steps
        what = "finished" if nock.finished else f"{nock.note}; best attempt reached {done:.0%}"
        rows.append(
            Row(
                "  retries, no checkpoints, SIGKILL (vs failure-free)",
                nock.elapsed,
                t0,
                "s",
                nock.elapsed / t0,
                "(info)",
                None,
                f"{len(nock.kills)} kills, {what}",
            )
        )
    flyte = outs["flyte"][0] if "flyte" in outs else None
    if flyte is None:
        rows.append(
            Row(
                "  flytekit local, SIGTERM",
                float("nan"),
                t0,
                "s",
                None,
                "(info)",
                None,
                "skipped: no --flytekit-python",
            )
        )
    elif not flyte.elapsed:
        rows.append(
            Row(
                "  flytekit local, SIGTERM", float("nan"), t0, "s", None, "(info)", None, flyte.note
            )
        )
    else:
        reached = flyte.final_step() / steps
        what = (
            "finished"
            if flyte.finished
            else f"{flyte.note} at {flyte.kills[0] if flyte.kills else 0:.0f} s, {reached:.0%} "
            "done; local execution has no retries and nothing resumes it"
        )
        rows.append(
            Row(
                "  flytekit local, SIGTERM (vs failure-free)",
                flyte.elapsed,
                t0,
                "s",
                flyte.elapsed / t0,
                "(info)",
                None,
                what,
            )
        )
    return rows


def _auto_rows(
    outs: dict[str, list[Outcome]], every: float, steps: int, step_s: float
) -> list[Row]:
    """The auto contenders: failure-free against the run without checkpoints, SIGTERM and
    SIGKILL against the auto failure-free run, each ratio within its own round."""
    bare, auto = outs.get("bare") or [], outs.get("auto") or []
    if not bare or not auto:
        return []
    t_bare = statistics.median(o.elapsed for o in bare)
    what = f"{steps} steps of {step_s * 1e3:.0f} ms, no checkpoint"
    if len(bare) > 1:
        what += f"; median of {len(bare)}: " + ", ".join(f"{o.elapsed:.1f}" for o in bare)
    rows = [Row("goodput: no checkpoints, failure-free job", t_bare, None, "s", None,
                "(baseline)", None, what)]  # fmt: skip
    contenders = (
        ("auto", auto, bare, "failure-free (vs no checkpoints)", 1.02),
        ("auto-term", outs.get("auto-term") or [], auto, f"SIGTERM every {every:g} s", 1.05),
        ("auto-kill", outs.get("auto-kill") or [], auto, f"SIGKILL every {every:g} s", 1.12),
    )
    for key, runs, bases, label, target in contenders:
        if not runs:
            continue
        ratios = [r.elapsed / b.elapsed for r, b in zip(runs, bases, strict=False)]
        ratio = statistics.median(ratios)
        out = runs[ratios.index(sorted(ratios)[(len(ratios) - 1) // 2])]
        note = _interval_note(out)
        if key != "auto":
            lost, restart = out.per_kill(step_s)
            vs_bare = statistics.median(
                r.elapsed / b.elapsed for r, b in zip(runs, bare, strict=False)
            )
            note += (
                f"; {len(out.kills)} signals, per signal {lost:.2f} s of work lost and "
                f"{restart:.2f} s to the next attempt's first step; {vs_bare:.3f} x the run "
                "without checkpoints"
            )
            label += " (vs auto failure-free)"
        if len(runs) > 1:
            note += "; ratios of the rounds: " + ", ".join(f"{r:.3f}" for r in ratios)
        finished = all(r.finished for r in runs)
        rows.append(
            Row(
                f"goodput auto: {label}",
                statistics.median(r.elapsed for r in runs),
                statistics.median(b.elapsed for b in bases),
                "s",
                ratio,
                f"<= {target:g} x baseline",
                finished and ratio <= target,
                note if finished else f"{out.note}; {note}",
            )
        )
    return rows


def _interval_note(out: Outcome) -> str:
    """How many saves the run made and the intervals ``due()`` chose for them."""
    saved = [row for row in out.intervals if row[5]]
    if not saved:
        return "no save logged"
    calm = [row[1] for row in saved if row[4] == 0]
    failing = [row for row in saved if row[4] > 0]
    parts = [f"{len(saved)} saves"]
    if calm:
        parts.append(f"interval {statistics.median(calm):.2f} s while no failure was seen")
    if failing:
        parts.append(
            f"{statistics.median(r[1] for r in failing):.2f} s once failures were (MTBF "
            f"~{statistics.median(r[3] for r in failing):.0f} s)"
        )
    parts.append(f"save cost to the loop {statistics.median(r[2] for r in saved) * 1e3:.0f} ms")
    return ", ".join(parts)


def _kill_expectation(
    kills: int, every: float, ckpt_every: float, restart: float, t0: float
) -> str:
    """What any checkpointer that saves every ``ckpt_every`` s of an attempt can expect.

    A kill loses the work since the last save. With kills every ``every`` s, a multiple of
    the save interval, every kill lands at the same point of the save cycle: an attempt that
    starts ``restart`` s after a kill saves at restart + k x interval, so it loses
    (every - restart) mod interval of work, and work lost plus restart is about one interval
    whatever the restart takes. With kills at random points of the cycle it would be half an
    interval on average, plus the restart; half an interval alone is the lower bound."""
    cycles = every / ckpt_every
    text = ""
    if abs(cycles - round(cycles)) < 1e-9 and restart < ckpt_every:
        text = (
            f"kills every {every:g} s, a multiple of the {ckpt_every:g} s save interval, each "
            f"cost about one interval (work lost + restart): expected ~"
            f"{1 + kills * ckpt_every / t0:.2f} x; "
        )
    half = ckpt_every / 2
    return text + (
        f"at random points of the save cycle {half:g} s + restart per kill: "
        f"{1 + kills * (half + restart) / t0:.2f} x, and {1 + kills * half / t0:.2f} x "
        "with no restart at all"
    )


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job-s", type=float, default=120.0, help="failure-free job length")
    parser.add_argument("--every", type=float, default=20.0, help="seconds between kills")
    parser.add_argument("--state-mib", type=int, default=256)
    parser.add_argument("--ckpt-every", type=float, default=5.0)
    parser.add_argument("--step-s", type=float, default=0.1, help="seconds per step")
    parser.add_argument("--cap", type=float, default=1.5, help="no-checkpoint run: stop at x t0")
    parser.add_argument("--grace", type=float, default=5.0, help="SIGTERM -> SIGKILL seconds")
    parser.add_argument("--flytekit-python", default=os.environ.get("FLYTEKIT_PYTHON"))
    parser.add_argument("--dir", default=None)
    parser.add_argument("--quick", action="store_true", help="a ~4 s job: a smoke test only")
    parser.add_argument(
        "--only",
        default=",".join(sorted(ALL)),
        help="contenders besides failure-free: term,kill,nock,flyte,restart,auto (restart and "
        "auto alone skip the fixed-interval failure-free run)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="failure-free, SIGTERM, SIGKILL repeated N times"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.job_s, args.every, args.state_mib, args.ckpt_every = 4.0, 3.0, 8, 0.5
        args.step_s, args.grace = 0.05, 2.0
    which = frozenset(args.only.split(",")) & ALL
    rows, outcomes = run(
        args.job_s,
        args.every,
        args.state_mib,
        args.ckpt_every,
        args.step_s,
        args.cap,
        args.grace,
        args.flytekit_python,
        args.dir,
        which,
        args.rounds,
    )
    runs = "one run each" if args.rounds == 1 else f"medians of {args.rounds} rounds"
    print_table(f"goodput under preemption ({runs}; wall time)", rows)
    trace = [vars(o) for o in outcomes]
    print(f"\nresults: {save_json('goodput', rows, vars(args), outcomes=trace)}")
    _plot(trace)
    return rows


def _plot(trace: list[dict]) -> None:
    """Progress over time and the intervals chosen, beside the JSON results."""
    try:
        from benchmarks import plots
        from benchmarks.common import RESULTS

        steps = max((s for o in trace for _, s in o["progress"]), default=0)
        made = [
            plots.goodput(trace, steps, RESULTS, "goodput_run.png") if steps else None,
            plots.interval(trace, RESULTS),
        ]
    except ImportError as exc:
        print(f"plots skipped: {exc} (pip install matplotlib)")
        return
    for path in made:
        if path is not None:
            print(f"plot: {path}")


if __name__ == "__main__":
    main()
