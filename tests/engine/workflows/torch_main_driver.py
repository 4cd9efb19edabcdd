"""``python torch_main_driver.py OUT`` (tests/engine/test_engine_process.py): a script that ran
torch's thread pool in the driver, then runs a process-isolated task defined in itself. A fork
of this driver could hang in its first matrix product, so the attempts must come from the fork
server, which loads this file as ``__mp_main__``; the task survives a SIGKILL and returns an
object of a class defined here."""

import json
import os
import signal
import sys
from dataclasses import dataclass

import torch

import taskpoint
from taskpoint import current_context, task

torch.set_num_threads(2)
torch.ones(256, 256) @ torch.ones(256, 256)  # the intra-op thread pool now runs


@dataclass
class Report:
    start: int
    attempt: int
    ppid: int
    total: float


@task(isolation="process", system_retries=2)
def train(steps: int) -> Report:
    ctx = current_context()
    prev = ctx.checkpoint.read()
    start = int(prev) if prev else 0
    total = 0.0
    for i in range(start, steps):
        total += float((torch.ones(128, 128) @ torch.ones(128, 128)).sum())
        ctx.checkpoint.write(str(i + 1).encode(), step=i + 1)
        if ctx.attempt == 1 and i == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    return Report(start, ctx.attempt, os.getppid(), total)


if __name__ == "__main__":
    from taskpoint.backends.process import start_method

    method = start_method(train)
    execution = taskpoint.run(train, steps=4)
    report = execution.result
    with open(sys.argv[1], "w") as out:
        json.dump(
            {
                "method": method,
                "status": execution.status,
                "is_report": isinstance(report, Report),
                "start": report.start,
                "attempt": report.attempt,
                "ppid": report.ppid,
                "driver": os.getpid(),
                "statuses": [a.status for a in execution.nodes[0].attempts],
            },
            out,
        )
