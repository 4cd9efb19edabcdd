"""Restart after a SIGKILL, taken apart (part of ``benchmarks.goodput``, ``--only restart``).

The goodput job (torch and scikit-learn imported at its top) runs with process isolation
through ``taskpoint run`` and through the Python API (a script that calls the workflow). Each
attempt is killed ``every`` s after its checkpoint was restored, ``kills`` times; for each kill:

- detect: kill -> the driver recorded the attempt as lost (the records' end time);
- start: -> the new attempt's process started (the driver's retry, the fork; from /proc);
- setup: -> the task's first line (in the child: anything it imports, the task's lookup, the
  context), of which "import" is the job module's own top level, when it ran in that child;
- restore: -> the checkpoint read into the model;
- first step: -> the first step done.

Target: kill -> first line <= 0.3 x the time a fresh interpreter takes to import torch and
scikit-learn (measured in the same run, median of 3), on both paths.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from benchmarks.common import Row
from benchmarks.goodput import _alive, _attempt_pid, _stop, taskpoint_argv

API_DRIVER = """
import sys
import goodput_job

if __name__ == "__main__":
    steps, mms, state_mib, ckpt_every, progress = sys.argv[1:6]
    goodput_job.goodput(steps=int(steps), mms=int(mms), state_mib=int(state_mib),
                        ckpt_every=float(ckpt_every), use_ckpt=True, progress=progress)
"""

FRESH_IMPORT = """
import time
start = time.perf_counter()
import torch
try:
    import sklearn.linear_model
except ImportError:
    pass
print(time.perf_counter() - start)
"""

TARGET = 0.3


@dataclass
class Restart:
    """One kill and the attempt after it (seconds; NaN where a mark is missing)."""

    first_line: float  # kill -> the next attempt's first line
    detect: float
    start: float
    setup: float
    imported: float  # of setup: the job module's top level run in the new attempt
    restore: float
    first_step: float


def fresh_import_s(repeats: int = 3) -> float:
    """Median time a fresh interpreter takes to import what the job imports."""
    samples = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", FRESH_IMPORT], capture_output=True, text=True, check=True
        )
        samples.append(float(out.stdout.split()[-1]))
    return statistics.median(samples)


def run(
    workdir: str,
    job: str,
    mms: int,
    step_s: float,
    state_mib: int,
    grace: float,
    kills: int = 4,
    every: float = 3.0,
) -> list[Row]:
    """Rows for the CLI and the API path, against the fresh import measured here."""
    baseline = fresh_import_s()
    print(f"  fresh interpreter: import torch, sklearn in {baseline:.2f} s (median of 3)")
    api = os.path.join(workdir, "goodput_api.py")
    with open(api, "w") as handle:
        handle.write(API_DRIVER)
    ckpt_every = every / 3  # a save or two before each kill: there is something to restore
    steps = max(10, round((kills + 2) * (every + 3.0) / step_s))  # ends soon after the kills
    rows = []
    for path in ("taskpoint run", "Python API"):
        tag = "cli" if path == "taskpoint run" else "api"
        progress = os.path.join(workdir, f"restart-{tag}.progress")
        home = os.path.join(workdir, f"home-restart-{tag}")
        env = dict(os.environ, TASKPOINT_HOME=home)
        env["PYTHONPATH"] = os.pathsep.join([workdir, env.get("PYTHONPATH", "")])
        if tag == "cli":
            argv = taskpoint_argv(job, steps, mms, state_mib, ckpt_every, True, progress, grace)
        else:
            params = [str(steps), str(mms), str(state_mib), str(ckpt_every), progress]
            argv = [sys.executable, api, *params]
        started = time.time()
        times, note = _kill_attempts(argv, env, progress, kills, every)
        restarts = _restarts(times, progress, home)
        enters = _lines(f"{progress}.enter")
        first = float(enters[0][0]) - started if enters else float("nan")
        rows.append(_row(path, restarts, baseline, note, first))
        print(f"  restart, {path}: {rows[-1].note}")
    return rows


def _kill_attempts(
    argv: list[str], env: dict[str, str], progress: str, kills: int, every: float
) -> tuple[list[float], str]:
    """Run the job; SIGKILL each attempt ``every`` s after its restore, ``kills`` times.
    The kill times (time.time()), and what went wrong if the job did not finish."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done: list[float] = []
    deadline = time.time() + 600
    while proc.poll() is None:
        if time.time() > deadline:
            _stop(proc)  # type: ignore[arg-type]
            return done, "not finished after 600 s"
        restored = _last_restore(progress)
        pid = _attempt_pid(progress)
        # Due: this attempt restored (a later restore than the last kill) ``every`` s ago.
        due = restored is not None and time.time() >= restored + every
        due = due and (not done or restored > done[-1])
        if len(done) < kills and due and pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)
            done.append(time.time())
        time.sleep(0.02)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    tail = [line for line in err.splitlines() if line.strip()][-1:] or [""]
    return done, "" if proc.returncode == 0 else f"exit {proc.returncode}: {tail[0][:160]}"


def _last_restore(progress: str) -> float | None:
    last = None
    for parts in _lines(progress):
        if parts[2:] == ["start"]:
            last = float(parts[0])
    return last


def _lines(path: str) -> list[list[str]]:
    try:
        with open(path) as handle:
            return [line.split() for line in handle if len(line.split()) >= 2]
    except FileNotFoundError:
        return []


def _restarts(kills: list[float], progress: str, home: str) -> list[Restart]:
    enters = [[float(x) for x in p] for p in _lines(f"{progress}.enter")]
    lost = sorted(a.ended for a in _attempts(home) if a.status == "lost" and a.ended)
    lines = _lines(progress)
    nan = float("nan")
    out = []
    for kill in kills:
        enter = next((e for e in enters if e[0] > kill), None)
        if enter is None:
            continue
        entered, _pid, forked, imported = enter
        noticed = next((t for t in lost if t >= kill - 0.01), nan)
        restored = next(
            (float(p[0]) for p in lines if p[2:] == ["start"] and float(p[0]) >= entered), nan
        )
        stepped = next((float(p[0]) for p in lines if len(p) == 2 and float(p[0]) >= restored), nan)
        out.append(
            Restart(
                entered - kill,
                noticed - kill,
                forked - noticed,
                entered - forked,
                imported,
                restored - entered,
                stepped - restored,
            )
        )
    return out


def _attempts(home: str) -> list:
    from taskpoint.records import Records

    records = Records(home)
    return [a for e in records.list_executions() for a in records.attempts(e.id)]


def _row(path: str, restarts: list[Restart], baseline: float, note: str, first: float) -> Row:
    def ms(field: str) -> str:
        values = [getattr(r, field) for r in restarts]
        return f"{statistics.median(values) * 1e3:.0f}" if values else "nan"

    if not restarts:
        value = float("nan")
        note = note or "no kill landed"
    else:
        value = statistics.median(r.first_line for r in restarts)
        parts = (
            f"detect {ms('detect')}, start {ms('start')}, setup {ms('setup')} (of which the "
            f"job module's import {ms('imported')}), restore {ms('restore')}, first step "
            f"{ms('first_step')} ms"
        )
        note = (
            f"{len(restarts)} SIGKILLs, medians: {parts}; the first attempt's first line came "
            f"{first:.1f} s after the driver started" + (f"; {note}" if note else "")
        )
    ratio = value / baseline if baseline else None
    return Row(
        f"restart after SIGKILL, {path}: kill -> first line (vs fresh import torch+sklearn)",
        value,
        baseline,
        "s",
        ratio,
        f"<= {TARGET} x",
        ratio is not None and ratio <= TARGET and not note.startswith(("exit", "not", "no ")),
        note,
    )
