"""One rank of a rank group (``@task(nproc=N)``, ``ranks.py``): what makes a child process a rank.

A rank is an attempt's child like any other (``process._child_main``); this module gives it its
seat in the group: its ``AttemptInfo`` (rank, world size, the rendezvous port, a log of its own),
torchrun's environment, a share of the machine's CPUs, and a preemption guard that tells the
driver the moment the rank is preempted, so the driver sends SIGTERM on to the ranks that did not
get it and the group saves and stops together.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
from typing import Any

from taskpoint.engine.events import AttemptInfo
from taskpoint.engine.preempt import PreemptionGuard

MASTER_ADDR = "127.0.0.1"  # the ranks of a group are on this machine
# Sent on the result pipe, beside the beats, when the rank is preempted.
PREEMPTED_NOTICE = "taskpoint-rank-preempted"


def free_port() -> int:
    """A TCP port nobody listens on now (rank 0's rendezvous binds it, as torchrun's does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((MASTER_ADDR, 0))
        return int(probe.getsockname()[1])


def rank_info(info: AttemptInfo, rank: int, size: int, port: int) -> AttemptInfo:
    """The attempt's description for one of its ranks: rank 0 writes the attempt's log, rank r
    ``attempt-NNNN.rank<r>.log`` beside it (one writer per file, on any store)."""
    log_url = info.log_url
    if log_url is not None and rank > 0:
        log_url = f"{log_url.removesuffix('.log')}.rank{rank}.log"
    return dataclasses.replace(info, rank=rank, world_size=size, master_port=port, log_url=log_url)


def rank_environ(info: AttemptInfo) -> dict[str, str]:
    """torchrun's variables for one rank of a group on one machine."""
    rank, size = str(info.rank), str(info.world_size)
    return {
        "RANK": rank,
        "LOCAL_RANK": rank,
        "GROUP_RANK": "0",
        "ROLE_RANK": rank,
        "WORLD_SIZE": size,
        "LOCAL_WORLD_SIZE": size,
        "ROLE_WORLD_SIZE": size,
        "MASTER_ADDR": MASTER_ADDR,
        "MASTER_PORT": str(info.master_port),
    }


def enter_rank(info: AttemptInfo, grace: float, sender: Any) -> PreemptionGuard:
    """In a rank's process, before the task runs: torchrun's environment, the machine's CPUs
    shared among the ranks (each would otherwise run a thread per CPU) unless
    ``OMP_NUM_THREADS`` says otherwise; returns the rank's preemption guard."""
    os.environ.update(rank_environ(info))
    if "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // info.world_size)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch = sys.modules.get("torch")  # imported already (a fork server's child): tell it
        if torch is not None:
            torch.set_num_threads(threads)
    return RankGuard(grace, sender)


class RankGuard(PreemptionGuard):
    """A rank's guard: preempted (SIGTERM, or ``preempt_deadline`` set), it also tells the
    driver, which sends SIGTERM on to the other ranks: a signal that reached one rank reaches
    the group, and the ranks save together."""

    def __init__(self, grace: float, sender: Any) -> None:
        super().__init__(grace)
        self._sender = sender

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        first = not self.preempted
        super()._on_sigterm(signum, frame)
        if first:
            self._notify()

    def set_deadline(self, deadline: float) -> None:
        first = not self.preempted
        super().set_deadline(deadline)
        if first:
            self._notify()

    def _notify(self) -> None:
        # From a thread: the signal handler may have interrupted the main thread while it held
        # the result pipe's lock (sending its outcome).
        threading.Thread(target=self._send, name="taskpoint-rank-preempted", daemon=True).start()

    def _send(self) -> None:
        try:
            self._sender.send(PREEMPTED_NOTICE)
        except (OSError, ValueError):  # the driver is gone: nobody to tell
            pass
