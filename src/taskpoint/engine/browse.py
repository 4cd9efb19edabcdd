"""Look at the checkpoints of an execution's nodes (``taskpoint checkpoints``, ``show --json``)."""

from __future__ import annotations

from typing import Any

from taskpoint.checkpoint import Checkpoint
from taskpoint.engine import blobs
from taskpoint.engine.config import Engine
from taskpoint.engine.execution import Execution
from taskpoint.errors import TaskpointError


def open_node_checkpoint(engine: Engine, execution: Execution, key: str) -> Checkpoint:
    """The node's checkpoint scope, opened read-only (it creates, sweeps and writes nothing),
    with the engine's options for the execution's recorded storage."""
    url = blobs.checkpoint_url(execution.storage, execution.id, key)
    return Checkpoint.open(
        url, readonly=True, storage_options=engine.storage_options_for(url) or None
    )


def node_checkpoints(engine: Engine, execution: Execution, key: str) -> list[Any]:
    cp = open_node_checkpoint(engine, execution, key)
    try:
        return cp.versions()
    finally:
        cp.close()


def all_checkpoints(engine: Engine, execution: Execution) -> dict[str, list[Any]]:
    return {node.key: node_checkpoints(engine, execution, node.key) for node in execution.nodes}


def find_node(execution: Execution, name: str) -> str:
    """A node key from a key (``train#2``) or a task name with one node (``train``)."""
    keys = [n.key for n in execution.nodes]
    if name in keys:
        return name
    matches = [k for k in keys if k.split("#", 1)[0] == name]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(keys) or "none"
    if matches:
        raise TaskpointError(
            f"task {name!r} has several nodes in {execution.id}: give one of {known}"
        )
    raise TaskpointError(f"execution {execution.id} has no node {name!r} (its nodes: {known})")
