"""The JSON documents of ``/api/``: the CLI's ``--json`` shapes, plus what the pages draw.

- ``/api/executions``: one page of the rows of ``taskpoint list --json`` (built by the CLI's
  own `list_row`) plus ``kind`` and ``attempts``, newest first; how many match and how many of
  each status go with it (see `ExecutionsPage`).
- ``/api/executions/<id>``: ``taskpoint show --json`` (built by the CLI's own
  `execution_dict`) plus ``max_attempts``, ``work`` (see `work.py`) and
  ``damaged_checkpoints`` per node, and the server's ``now``.
- ``/api/executions/<id>/checkpoints`` and ``.../nodes/<key>/checkpoints``: ``taskpoint
  checkpoints EXEC [NODE] --json``, plus ``damaged_checkpoints`` per node.
- ``.../nodes/<key>/attempts/<n>/log``: a bounded piece of what that attempt printed (see
  `logview.py`).

``damaged_checkpoints`` lists the committed versions whose manifest could not be read, parsed or
used, as ``{"id", "reason"}`` (and one with ``"id": null`` when the scope itself could not be
listed): one damaged version never breaks a page. The result, the inputs and the node outputs
shown are the previews stored in the records; nothing is ever unpickled here.

Lookups are exact: an execution id must be a recorded id (no prefix matching), a node key one of
that execution's nodes, a version one listed as committed in that node's scope.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from taskpoint.cli.render import execution_dict, iso, list_row, version_dict
from taskpoint.engine import blobs
from taskpoint.engine.config import Engine
from taskpoint.engine.execution import Execution, load_execution
from taskpoint.engine.logs import log_url
from taskpoint.records import ExecutionRecord
from taskpoint.records.status import ExecutionStatus
from taskpoint.ui.logview import AttemptLogSource
from taskpoint.ui.readonly import STATUSES, ExecutionQuery, ReadOnlyRecords
from taskpoint.ui.scopes import ReadOnlyScope, ScopeListing
from taskpoint.ui.work import work_series

__all__ = ["STATUSES", "Api", "ExecutionsPage", "NotFound"]

DEFAULT_LIMIT = 50  # executions per page
MAX_LIMIT = 1000
MAX_QUERY_CHARS = 200


class NotFound(LookupError):
    """What the request names does not exist (answered with 404)."""


@dataclass
class ExecutionsPage:
    """One page of the executions list: its rows, how many executions match (``total``) and
    how many of each status match the search alone (``counts``, for the status filters)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    counts: dict[str, int] = field(default_factory=dict)


class Api:
    """Builds the documents. The engine's ``storage``, when it names one, overrides the blob
    store recorded per execution (a moved or re-mounted store); its storage options (and
    ``TASKPOINT_S3_ENDPOINT_URL``) open whichever store is read."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        storage = engine.storage
        if storage and "://" not in storage:
            storage = os.path.abspath(os.path.expanduser(storage))
        self.storage = storage

    # -- executions ------------------------------------------------------------------------------

    def executions(
        self,
        records: ReadOnlyRecords | None,
        query: ExecutionQuery | None = None,
        offset: int = 0,
        limit: int = DEFAULT_LIMIT,
    ) -> ExecutionsPage:
        """The ``limit`` executions after the first ``offset`` that ``query`` selects, newest
        first."""
        query = query or ExecutionQuery()
        if records is None:
            return ExecutionsPage()
        kept, _ = records.executions_page(query, offset, limit)
        counts = records.status_counts(query.q)
        total = counts.get(query.status, 0) if query.status else sum(counts.values())
        attempts = records.attempt_counts([e.id for e, _ in kept])
        interrupted = [e.id for e, s in kept if s == ExecutionStatus.INTERRUPTED]
        activity = records.latest_activity(interrupted)
        now = time.time()
        rows = [_list_row(e, s, attempts.get(e.id, 0), now, activity.get(e.id)) for e, s in kept]
        return ExecutionsPage(rows, total, counts)

    def execution(self, records: ReadOnlyRecords | None, execution_id: str) -> dict[str, Any]:
        execution = self._load(records, execution_id)
        now = time.time()
        listings = {n.key: self._scope(execution, n.key).listing() for n in execution.nodes}
        doc = execution_dict(execution, {k: v.versions for k, v in listings.items()}, now)
        doc["now"] = iso(now)
        for node, node_doc in zip(execution.nodes, doc["nodes"], strict=True):
            node_doc["max_attempts"] = node.max_attempts
            node_doc["damaged_checkpoints"] = _damaged(listings[node.key])
            node_doc["work"] = work_series(node.attempts, listings[node.key].versions, now)
        return doc

    def checkpoints(
        self, records: ReadOnlyRecords | None, execution_id: str, node: str | None = None
    ) -> dict[str, Any]:
        execution = self._load(records, execution_id)
        if node is None:
            keys = [n.key for n in execution.nodes]
        else:
            keys = [self.node_key(execution, node)]
        nodes = []
        for key in keys:
            listing = self._scope(execution, key).listing()
            nodes.append(
                {
                    "key": key,
                    "checkpoints": [version_dict(v) for v in listing.versions],
                    "damaged_checkpoints": _damaged(listing),
                }
            )
        return {"id": execution.id, "nodes": nodes}

    def attempt_log(self, execution: Execution, key: str, attempt: str) -> AttemptLogSource:
        """Where attempt ``attempt`` (its number, exactly as recorded) of node ``key`` keeps
        its log, opened as the other blob reads are (the storage override and its options)."""
        key = self.node_key(execution, key)
        node = next(n for n in execution.nodes if n.key == key)
        for a in node.attempts:
            if str(a.n) == attempt:
                storage = self._storage(execution)
                url = log_url(blobs.node_url(storage, execution.id, key), a.n)
                return AttemptLogSource(storage, url, self.engine.storage_options_for(url))
        raise NotFound(f"node {key} of execution {execution.id} has no attempt {attempt!r}")

    # -- lookups ---------------------------------------------------------------------------------

    def load(self, records: ReadOnlyRecords | None, execution_id: str) -> Execution:
        return self._load(records, execution_id)

    def node_key(self, execution: Execution, key: str) -> str:
        """``key`` if it is exactly one of the execution's node keys."""
        for node in execution.nodes:
            if node.key == key:
                return node.key
        raise NotFound(f"execution {execution.id} has no node {key!r}")

    def scope(self, execution: Execution, key: str) -> ReadOnlyScope:
        return self._scope(execution, self.node_key(execution, key))

    def _storage(self, execution: Execution) -> str:
        return self.storage or execution.storage

    def _scope(self, execution: Execution, key: str) -> ReadOnlyScope:
        storage = self._storage(execution)
        url = blobs.checkpoint_url(storage, execution.id, key)
        options = self.engine.storage_options_for(url)
        return ReadOnlyScope(storage, execution.id, key, storage_options=options)

    def _load(self, records: ReadOnlyRecords | None, execution_id: str) -> Execution:
        rec = records.execution_exact(execution_id) if records is not None else None
        if rec is None or records is None:
            raise NotFound(f"no execution {execution_id!r}")
        return load_execution(records, rec)  # previews only: nothing is unpickled


def _damaged(listing: ScopeListing) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"id": d.version_id, "reason": d.reason} for d in listing.damaged]
    if listing.error is not None:
        rows.append({"id": None, "reason": listing.error})
    return rows


def _list_row(
    e: ExecutionRecord, status: str, attempts: int, now: float, activity: float | None
) -> dict[str, Any]:
    # The shape of `taskpoint list --json` ... and what the executions page shows besides.
    return {**list_row(e, status, now, activity), "kind": e.kind, "attempts": attempts}
