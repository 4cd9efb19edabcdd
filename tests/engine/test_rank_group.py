"""Rank groups (``@task(nproc=2)``, backends/ranks.py): two gloo ranks on CPU are one attempt.

The tasks live in workflows/ranks_flow.py; each rank announces itself in the test's folder at
the point where the test kills, stops or signals it. torch is imported here, as a training
driver has it, so the ranks come from the fork server with torch imported once.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import taskpoint
from support.polling import wait_for_file, wait_until
from taskpoint import Engine, task
from taskpoint._process import process_alive
from taskpoint.backends import ranks
from taskpoint.backends._rank_child import rank_environ, rank_info
from taskpoint.engine.events import AttemptInfo
from taskpoint.engine.loader import load_file

pytest.importorskip("torch")

flow = load_file(Path(__file__).parent / "workflows" / "ranks_flow.py")
pytestmark = pytest.mark.timeout(180)


def seen(out: Path, name: str, timeout: float = 60) -> dict[str, Any]:
    return json.loads(wait_for_file(out / name, timeout))


def when_ready(
    out: Path, names: list[str], act: Callable[[dict[str, Any]], None]
) -> threading.Thread:
    """Once every rank named wrote its announcement, ``act({name: what it wrote})``."""

    def run() -> None:
        try:
            act({name: seen(out, name) for name in names})
        except AssertionError:
            return  # nobody announced itself: the test's own asserts tell

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def statuses(execution: Any) -> list[str]:
    return [attempt.status for attempt in execution.nodes[0].attempts]


def test_ranks_have_torchruns_environment_and_rank_0_returns_the_output(tmp_path):
    execution = taskpoint.run(flow.reduce_and_describe, out=str(tmp_path))

    assert execution.status == "succeeded", execution.error
    assert execution.result == {"rank": 0, "total": 3.0}  # the all-reduce of 1 + 2
    zero, one = seen(tmp_path, "rank0"), seen(tmp_path, "rank1")
    for rank, what in enumerate((zero, one)):
        env = what["env"]
        assert env["RANK"] == env["LOCAL_RANK"] == str(rank)
        assert env["WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == "2"
        assert env["MASTER_ADDR"] == "127.0.0.1"
        assert int(env["OMP_NUM_THREADS"]) >= 1
        assert (what["rank"], what["world_size"], what["dist"]) == (rank, 2, [rank, 2])
    assert zero["env"]["MASTER_PORT"] == one["env"]["MASTER_PORT"]
    same = ("execution", "node", "attempt", "scope")
    assert [zero[key] for key in same] == [one[key] for key in same]
    assert (zero["execution"], zero["attempt"]) == (execution.id, 1)
    assert len({zero["pid"], one["pid"], os.getpid()}) == 3
    assert execution.nodes[0].attempts[0].pid == zero["pid"]


def test_a_killed_rank_ends_the_group_as_lost_and_the_group_resumes(tmp_path):
    killer = when_ready(
        tmp_path,
        ["ready-r0", "ready-r1"],
        lambda ready: os.kill(ready["ready-r1"]["pid"], signal.SIGKILL),
    )
    execution = taskpoint.run(flow.count, out=str(tmp_path), total=5)
    killer.join(5)

    assert execution.status == "succeeded", execution.error
    assert execution.result == {"rank": 0, "start": 3, "attempt": 2}
    first, second = execution.nodes[0].attempts
    assert first.status == "lost"
    assert "rank 1 of 2" in first.error and "SIGKILL" in first.error
    assert first.checkpoint_at_end == second.checkpoint_at_start == "0001-000003"
    # Rank 0 was waiting for rank 1 in a collective: the engine ended it.
    assert not process_alive(seen(tmp_path, "ready-r0")["pid"])


def test_ranks_that_die_together_are_logged_and_the_attempt_is_lost(tmp_path, caplog):
    """Both ranks gone in one wake-up of the driver (as when a rank's death makes its peer crash
    at once): the death is still said, and the attempt is lost, not failed."""

    def kill_both(ready: dict[str, Any]) -> None:
        for name in ("ready-r1", "ready-r0"):
            os.kill(ready[name]["pid"], signal.SIGKILL)

    killer = when_ready(tmp_path, ["ready-r0", "ready-r1"], kill_both)
    with caplog.at_level("WARNING", logger="taskpoint"):
        execution = taskpoint.run(flow.count, out=str(tmp_path), total=5)
    killer.join(5)

    assert execution.status == "succeeded", execution.error
    assert statuses(execution) == ["lost", "succeeded"]
    deaths = [r.getMessage() for r in caplog.records if "ended without reporting" in r.getMessage()]
    assert deaths and all("attempt 1" in death for death in deaths), deaths


def test_a_recoverable_error_in_one_rank_retries_the_group(tmp_path):
    execution = taskpoint.run(flow.recover, out=str(tmp_path))

    assert execution.status == "succeeded", execution.error
    assert execution.result == {"rank": 0, "attempt": 2}
    first, _ = execution.nodes[0].attempts
    assert statuses(execution) == ["recoverable", "succeeded"]
    assert "rank 1" in first.error and "asks for another attempt" in first.error
    assert first.budget == "retries"
    assert not process_alive(seen(tmp_path, "a1-r0")["pid"])


@pytest.mark.parametrize("targets", ["every rank", "rank 1"])
def test_sigterm_preempts_every_rank_they_save_together_and_the_group_resumes(tmp_path, targets):
    """SIGTERM to each rank (a machine shutting down), or to one: the driver sends it on."""

    def terminate(ready: dict[str, Any]) -> None:
        chosen = ["ready-r0", "ready-r1"] if targets == "every rank" else ["ready-r1"]
        for name in chosen:
            os.kill(ready[name]["pid"], signal.SIGTERM)

    signaller = when_ready(tmp_path, ["ready-r0", "ready-r1"], terminate)
    execution = taskpoint.run(flow.preemptible, out=str(tmp_path), total=6)
    signaller.join(5)

    assert execution.status == "succeeded", execution.error
    # Step 4, saved together after SIGTERM, is where the next attempt started.
    assert execution.result == {"rank": 0, "start": 4, "attempt": 2}
    first, second = execution.nodes[0].attempts
    assert statuses(execution) == ["preempted", "succeeded"]
    assert first.budget == "system_retries"
    assert second.checkpoint_at_start == "0001-000004"
    for rank in (0, 1):
        assert (tmp_path / f"preempted-a1-r{rank}").exists()


def test_a_rank_that_cannot_exit_is_killed_and_the_next_attempt_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(ranks, "EXIT_WAIT", 0.5)
    execution = taskpoint.run(flow.hang_at_exit, out=str(tmp_path))

    assert execution.status == "succeeded", execution.error
    assert statuses(execution) == ["recoverable", "succeeded"]
    assert not process_alive(seen(tmp_path, "a1-r1")["pid"])


def test_a_rank_hung_after_its_peers_returned_is_killed_and_the_attempt_lost(tmp_path, monkeypatch):
    """As when gloo's teardown hangs in destroy_process_group(): the group never finishes."""
    monkeypatch.setattr(ranks, "PEER_FINISH_WAIT", 1.0)
    execution = taskpoint.run(flow.hang_in_teardown, out=str(tmp_path))

    assert execution.status == "succeeded", execution.error
    assert statuses(execution) == ["lost", "succeeded"]
    first = execution.nodes[0].attempts[0]
    assert "rank 1 of 2 had not returned" in first.error
    assert not process_alive(seen(tmp_path, "a1-r1")["pid"])


def test_a_frozen_rank_ends_the_group_as_lost(tmp_path):
    stopper = when_ready(
        tmp_path,
        ["ready-r0", "ready-r1"],
        lambda ready: os.kill(ready["ready-r1"]["pid"], signal.SIGSTOP),
    )
    execution = taskpoint.run(flow.count_watched, out=str(tmp_path), total=4)
    stopper.join(5)

    assert execution.status == "succeeded", execution.error
    assert execution.result == {"rank": 0, "start": 2, "attempt": 2}
    first = execution.nodes[0].attempts[0]
    assert first.status == "lost"
    assert "rank 1 of 2" in first.error and "heartbeat" in first.error
    stopped = seen(tmp_path, "ready-r1")["pid"]
    wait_until(lambda: not process_alive(stopped), 10, "the stopped rank to be killed")


def test_inline_attempts_refuse_several_ranks():
    def train() -> int:
        return 1

    with pytest.raises(ValueError, match=r'nproc=2 .* needs isolation="process"'):
        task(nproc=2)(train)
    with pytest.raises(ValueError, match="nproc must be an integer >= 1"):
        task(isolation="process", nproc=0)(train)

    execution = Engine(backend="inline").run(flow.reduce_and_describe, out="unused")
    assert execution.status == "failed"
    assert "nproc=2" in execution.error and "inline backend" in execution.error
    assert statuses(execution) == ["failed"]  # a configuration error: not retried


def test_each_rank_has_its_own_log_and_torchruns_variables():
    info = AttemptInfo(
        "e", "train#1", "train", 3, 4, "file:///scope", log_url="file:///n/logs/attempt-0003.log"
    )
    zero, one = (rank_info(info, rank, 2, 29500) for rank in (0, 1))
    assert zero.log_url == info.log_url  # rank 0's is the attempt's log
    assert one.log_url == "file:///n/logs/attempt-0003.rank1.log"
    assert rank_environ(one) == {
        "RANK": "1",
        "LOCAL_RANK": "1",
        "GROUP_RANK": "0",
        "ROLE_RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "ROLE_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }
    assert (info.rank, info.world_size) == (0, 1)  # the attempt's own description is unchanged
