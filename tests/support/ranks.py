"""What the rank-group test tasks share (tests/engine/workflows/ranks_flow.py on the process
backend, tests/dask/dask_rank_tasks.py on Dask): two gloo ranks on CPU that announce themselves
in a folder the test watches, and a step counter committed by rank 0."""

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from taskpoint import current_context

WAIT = 60.0  # seconds a rank waits to be killed or signalled before it gives up


def announce(out: str, name: str, **fields: Any) -> None:
    """``<out>/<name>``: JSON with this rank's pid and its parent's, written whole and renamed
    into place (a watcher never reads half of it)."""
    path = Path(out) / name
    partial = path.with_name(f".{name}.partial")
    partial.write_text(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), **fields}))
    partial.replace(path)


def rendezvous() -> Any:
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(seconds=WAIT))
    return dist


def total_of(dist: Any, value: float) -> float:
    """An all-reduce (sum) of one number: a collective every rank must join."""
    import torch

    tensor = torch.tensor([float(value)])
    dist.all_reduce(tensor)
    return float(tensor.item())


def start_step() -> int:
    """The latest committed step, read before the rendezvous (no rank has written yet)."""
    prev = current_context().checkpoint.read()
    return int(prev) if prev else 0
