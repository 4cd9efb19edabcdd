"""The work-over-time series of a node: how far its latest committed checkpoint got, when.

The level of a checkpoint version is its ``step`` when the task passes one (``write(...,
step=)``). Many tasks do not (the seed example writes bare bytes), so without steps the level is
the number of **checkpoint commits along the resume chain**: the version ``<attempt>-<seq>`` is
the ``seq``-th commit of its attempt, which started from the version its record names as
``checkpoint_at_start``; so ``level(v) = level(start of v's attempt) + seq``. Both come from the
records and manifests; checkpoint contents are never read. (For the seed example that count is
exactly its iteration counter.)

Retention deletes all but the newest versions, so the series is built from what is still known:
each attempt's start and end (time from the records, level from the version ids they name, and
the steps of those versions, which the records keep), when the attempt committed its last version
(``last_commit``, recorded at its end, or filled in when the next attempt reconciles one whose
driver died) and the retained versions (exact commit time). Between two known points, commits
whose versions were pruned are counted in ``pruned_before``: the chart draws that stretch as an
interpolation, not as if the commits had happened at a known time. An attempt's last commit,
when pruned but its time is recorded, is a point of its own (``"pruned": true``).
"""

from __future__ import annotations

from typing import Any

from taskpoint.checkpoint.version import parse_version_id
from taskpoint.engine.execution import Attempt
from taskpoint.records.status import AttemptStatus, ExecutionStatus

FINAL_FAILURES = (
    AttemptStatus.FAILED,
    AttemptStatus.RECOVERABLE,
    AttemptStatus.PREEMPTED,
    AttemptStatus.LOST,
    AttemptStatus.ABORTED,
    ExecutionStatus.INTERRUPTED,
)


def work_series(
    attempts: list[Attempt], versions: list[Any], now: float, by_step: bool | None = None
) -> dict[str, Any]:
    """Points and failures of one node (times in UNIX seconds), for the work-over-time chart."""
    steps = {**_recorded_steps(attempts), **{v.id: v.step for v in versions}}
    if by_step is None:
        by_step = bool(steps) and all(step is not None for step in steps.values())
    starts = {a.n: a.checkpoint_at_start for a in attempts}

    def level(vid: str | None, depth: int = 0) -> float | None:
        if vid is None:
            return 0
        if by_step:
            return steps.get(vid)
        parsed = parse_version_id(vid)
        if parsed is None or depth > 10_000:
            return None
        attempt, seq = parsed
        start = starts.get(attempt)
        if start is not None and (parse_version_id(start) or (attempt,))[0] >= attempt:
            return None  # an attempt starts from an earlier attempt's version, never its own
        if attempt not in starts:
            return None  # that attempt's record is gone: the chain is unknown
        base = level(start, depth + 1)
        return None if base is None else base + seq

    points: list[dict[str, Any]] = []
    for a in attempts:
        points.extend(_attempt_points(a, versions, level, now))
    return {
        "unit": "step" if by_step else "commits",
        "points": points,
        "failures": _failures(attempts, points, level),
    }


def _attempt_points(a: Attempt, versions: list[Any], level: Any, now: float) -> list[dict]:
    pts = [_point(a, "start", a.started, a.checkpoint_at_start, level(a.checkpoint_at_start))]
    last_seq = 0
    for v in sorted((v for v in versions if v.attempt == a.n), key=lambda v: v.seq):
        point = _point(a, "commit", v.created.timestamp(), v.id, level(v.id))
        point["pruned_before"] = max(0, v.seq - last_seq - 1)
        point.update(step=v.step, size=v.size)
        pts.append(point)
        last_seq = v.seq
    end_id = a.checkpoint_at_end
    # Running: up to now; an attempt whose driver died (not resumed yet): up to its last sign
    # of life, its driver's last heartbeat or its last retained commit.
    end_time = (
        a.ended
        if a.ended is not None
        else now
        if a.status == AttemptStatus.RUNNING
        else max(pts[-1]["t"], a.until(now))
    )
    if end_id is None:
        # Still running, or its end was never recorded (its driver died): the level stays
        # where the attempt's last known point left it.
        end = _point(a, "end", end_time, pts[-1]["version"], pts[-1]["level"])
        end["pruned_before"] = 0
    else:
        end = _point(a, "end", end_time, end_id, level(end_id))
        end_seq = _own_seq(end_id, a.n)
        pruned = max(0, end_seq - last_seq) if end_seq is not None else 0
        end["pruned_before"] = pruned
        if pruned and a.last_commit is not None:
            # Its last commit was pruned, but the records say when it happened: a point of its
            # own (the stretch up to it interpolated), then flat to the attempt's end.
            commit = _point(a, "commit", a.last_commit, end_id, level(end_id))
            commit.update(pruned_before=pruned, pruned=True, step=a.step_at_end, size=None)
            pts.append(commit)
            end["pruned_before"] = 0
    end["status"] = a.status
    pts.append(end)
    return pts


def _recorded_steps(attempts: list[Attempt]) -> dict[str, int]:
    """Steps of the versions the attempts started from and ended with, as the records kept
    them (None in older records, or when the version had no step: then left out)."""
    steps: dict[str, int] = {}
    for a in attempts:
        for vid, step in (
            (a.checkpoint_at_start, a.step_at_start),
            (a.checkpoint_at_end, a.step_at_end),
        ):
            if vid is not None and step is not None:
                steps[vid] = step
    return steps


def _point(a: Attempt, kind: str, t: float, version: str | None, lvl: float | None) -> dict:
    return {"attempt": a.n, "kind": kind, "t": t, "version": version, "level": lvl}


def _own_seq(vid: str | None, attempt: int) -> int | None:
    parsed = parse_version_id(vid) if vid else None
    return parsed[1] if parsed and parsed[0] == attempt else None


def _failures(attempts: list[Attempt], points: list[dict], level: Any) -> list[dict]:
    """What each attempt that did not succeed cost: time since its last commit, the wait until
    the next attempt, and committed work the next attempt did not resume from."""
    out = []
    ever_checkpointed = any(p["version"] for p in points)
    for i, a in enumerate(attempts):
        if a.status not in FINAL_FAILURES or a.ended is None:
            continue
        nxt = attempts[i + 1] if i + 1 < len(attempts) else None
        own = [p for p in points if p["attempt"] == a.n]
        commits = [p for p in own if p["kind"] == "commit"]
        end = own[-1]
        uncommitted, uncommitted_max = _uncommitted(a, commits, ever_checkpointed)
        end_level = end["level"]
        resumed = level(nxt.checkpoint_at_start) if nxt else None
        lost = None
        if end_level is not None and resumed is not None:
            lost = max(0, end_level - resumed)
        out.append(
            {
                "attempt": a.n,
                "status": a.status,
                "t": a.ended,
                "level": end_level,
                "uncommitted_s": uncommitted,
                "uncommitted_max_s": uncommitted_max,
                "next_attempt": nxt.n if nxt else None,
                "resumed_at": nxt.started if nxt else None,
                "resumed_level": resumed,
                "lost_level": lost,
            }
        )
    return out


def _uncommitted(
    a: Attempt, commits: list[dict], ever_checkpointed: bool
) -> tuple[float | None, float | None]:
    """Seconds the attempt ran after its last commit: ``(exact, bound)``; exact is ``None``
    when only the bound is known (its last commit was pruned, or its end was not recorded)."""
    assert a.ended is not None
    end_id, start_id = a.checkpoint_at_end, a.checkpoint_at_start
    if commits and end_id is not None and commits[-1]["version"] == end_id:
        exact: float | None = a.ended - commits[-1]["t"]  # its last commit is retained
    elif not commits and end_id is not None and end_id == start_id:
        exact = a.ended - a.started  # it committed nothing
    elif not ever_checkpointed:
        exact = a.ended - a.started  # nothing was ever committed in this node
    else:
        exact = None
    bound = a.ended - (commits[-1]["t"] if commits else a.started)
    return exact, exact if exact is not None else bound
