"""A task's failure history, as the checkpoint interval needs it (``checkpoint/interval.py``).

Two bounded, indexed reads of the attempts table: the node's own attempts in this execution (its
primary key), and the attempts of the same task in the newest earlier executions (the
``executions_created`` index, then primary keys), so a home with 100,000 executions costs no
more than one with 100. The second is read once per execution and task by a driver.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from taskpoint.checkpoint.interval import FailureHistory
from taskpoint.records.status import AttemptStatus

# Attempts that lose the work done since their last commit. A preemption does not: the next
# save after SIGTERM commits before the attempt stops. A failed attempt ends its node (a bug,
# not the machine), an aborted one is the user's Ctrl-C.
LOSING = (AttemptStatus.LOST, AttemptStatus.RECOVERABLE)  # (and in PRIOR_QUERY)
OWN_ATTEMPTS = 500  # the node's newest attempts read
PRIOR_EXECUTIONS = 20  # earlier executions looked at for the same task
PRIOR_ATTEMPTS = 100
# Earlier executions count once they hold this many finished attempts of the task: one or two
# short runs (a test, a run stopped at once) say little about how often it fails.
MIN_PRIOR_ATTEMPTS = 3
_CACHED = 64
# The newest earlier executions (the executions_created index), their nodes of the task and
# those nodes' attempts (primary keys): parameters execution id, executions, task, attempts.
# Summed in SQL (a driver asks once per execution and task, on the engine's hot path).
PRIOR_QUERY = (
    "SELECT count(*), total(max(0, ended - started)), total(status IN ('lost', 'recoverable')) "
    "FROM (SELECT a.status, a.started, a.ended "
    "FROM (SELECT id FROM executions WHERE id != ? ORDER BY created DESC LIMIT ?) AS e "
    "JOIN nodes AS nd ON nd.execution_id = e.id AND nd.task = ? "
    "JOIN attempts AS a ON a.execution_id = nd.execution_id AND a.node_key = nd.key "
    "WHERE a.ended IS NOT NULL LIMIT ?)"
)

_prior: OrderedDict[tuple[str, str, str], FailureHistory] = OrderedDict()
_lock = threading.Lock()


def failure_history(
    records: Any, execution_id: str, node_key: str, task: str, *, own: bool = True
) -> FailureHistory:
    """The node's finished attempts in this execution (read only when ``own``: a node's first
    attempt has none) plus, when there are enough of them, the task's attempts in earlier
    executions."""
    history = prior_history(records, execution_id, task)
    if own:
        rows = records.db.query(
            "SELECT node_key, n, status, started, ended, run FROM attempts "
            "WHERE execution_id=? AND node_key=? AND ended IS NOT NULL "
            "ORDER BY n DESC LIMIT ?",
            (execution_id, node_key, OWN_ATTEMPTS),
        )
        history = summarize(rows) + history
    return history


def prior_history(records: Any, execution_id: str, task: str) -> FailureHistory:
    """The task's finished attempts in the newest earlier executions (their time and failures;
    restart gaps come from the node's own attempts); empty when fewer than
    `MIN_PRIOR_ATTEMPTS`. Cached per execution and task (they do not change while it runs)."""
    key = (str(records.path), execution_id, task)
    with _lock:
        if key in _prior:
            _prior.move_to_end(key)
            return _prior[key]
    ((attempts, run_s, failures),) = records.db.query(
        PRIOR_QUERY, (execution_id, PRIOR_EXECUTIONS, task, PRIOR_ATTEMPTS)
    )
    enough = attempts >= MIN_PRIOR_ATTEMPTS
    history = FailureHistory(run_s, int(failures), attempts) if enough else FailureHistory()
    with _lock:
        _prior[key] = history
        while len(_prior) > _CACHED:
            _prior.popitem(last=False)
    return history


def summarize(rows: list[tuple]) -> FailureHistory:
    """``(node, n, status, started, ended, run)`` rows -> time run, failures and the median gap
    from a failure to the next attempt of its node in the same driver run."""
    by_node: dict[Any, dict[int, tuple]] = {}
    run_s, failures = 0.0, 0
    for node, n, status, started, ended, run in rows:
        run_s += max(0.0, ended - started)
        failures += status in LOSING
        by_node.setdefault(node, {})[n] = (status, started, ended, run)
    gaps = [
        attempts[n + 1][1] - ended
        for attempts in by_node.values()
        for n, (status, _, ended, run) in attempts.items()
        if status in LOSING and n + 1 in attempts and attempts[n + 1][3] == run
    ]
    gaps = [gap for gap in gaps if gap >= 0]
    gaps.sort()
    restart = (gaps[(len(gaps) - 1) // 2] + gaps[len(gaps) // 2]) / 2 if gaps else None
    return FailureHistory(run_s, failures, len(rows), restart)
