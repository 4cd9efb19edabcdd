"""Batched traffic between the Dask backend and the scheduler.

Each attempt is one Dask task. Sent one by one, every attempt costs the scheduler one graph
update (``client.submit``) and one fetch of its result (``future.result()``), each a round trip
through the client's event loop: with hundreds of attempts of a ``map`` in flight, that traffic,
not the attempts, limits the map (and slows every other client of the scheduler, the workers'
own calls included). The dispatcher's thread sends every attempt queued since its last pass as
one ``client.map`` and fetches every result that arrived since as one ``client.gather``.

Nothing waits to fill a batch: a lone attempt goes out at once, and batches form only while
attempts arrive faster than one pass takes. A result that cannot be fetched with the others (the
task erred, was cancelled, or its worker left before the fetch) is left to the attempt's handle,
which asks its own future and reads the error from it.

The same thread wakes the handles of a driver that got SIGTERM (it looks at their guards every
``POLL`` seconds), so the hundreds of handles of a big map wait without polling.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_NOT_FETCHED = object()
POLL = 0.1  # seconds between looks at the driver's guards while attempts are out


class Ticket:
    """One attempt in the dispatcher: its Dask future once sent, its result once fetched."""

    def __init__(
        self, key: str, args: tuple[Any, ...], resources: dict[str, int] | None, guard: Any
    ) -> None:
        self.key = key
        self.args = args
        self.resources = resources
        self.future: Any = None  # set by the dispatcher's thread when sent
        self.send_error: BaseException | None = None  # the send itself failed
        self.value: Any = _NOT_FETCHED
        self.guard = guard  # the driver's PreemptionGuard (its ``preempted`` flag)
        self.cancelled = False
        self.ready = False  # fetched, failed, or for the handle to ask its future
        self.wake = threading.Event()  # ready, or the driver was preempted

    def set_ready(self) -> None:
        self.ready = True
        self.wake.set()

    @property
    def fetched(self) -> bool:
        return self.value is not _NOT_FETCHED

    def cancel(self) -> None:
        # Flag first, then look at the future: the sender sets the future, then looks at the
        # flag, so one of the two cancels a future sent while this runs.
        self.cancelled = True
        if self.future is not None:
            self.future.cancel()
        else:
            self.set_ready()


class Dispatcher:
    """Sends `Ticket` s to the cluster and fetches their results, a batch per pass."""

    def __init__(
        self,
        client: Any,
        function: Callable[..., Any],
        annotations: dict[str, Any] | None = None,
    ) -> None:
        self._client = client
        self._function = function
        self._annotations = annotations or {}  # given to every task sent (``_dask_fence``)
        self._cond = threading.Condition()
        self._outbox: list[Ticket] = []
        self._arrived: list[Ticket] = []
        self._out: set[Ticket] = set()  # queued or sent, not ready yet
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="taskpoint-dask-dispatch", daemon=True
        )
        self._thread.start()

    def submit(
        self, key: str, *args: Any, resources: dict[str, int] | None = None, guard: Any = None
    ) -> Ticket:
        ticket = Ticket(key, args, resources, guard)
        with self._cond:
            if self._closed:
                raise RuntimeError("the Dask backend was closed")
            self._outbox.append(ticket)
            self._out.add(ticket)
            self._cond.notify()
        return ticket

    def close(self) -> None:
        """Stop the thread once it sent what was queued (results not fetched yet are left to
        their handles)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    # ------------------------------------------------------------------ the dispatcher's thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._outbox or self._arrived or self._closed):
                    if not self._cond.wait(POLL if self._out else None):
                        self._wake_preempted()
                outbox, self._outbox = self._outbox, []
                arrived, self._arrived = self._arrived, []
                self._out.difference_update(arrived)
                closed = self._closed
            if outbox:
                self._send(outbox)
            if arrived:
                self._fetch(arrived)
            if closed:
                with self._cond:
                    left, self._out = self._out | set(self._arrived), set()
                    self._arrived = []
                for ticket in left:
                    ticket.set_ready()  # each handle asks its own future
                return

    def _wake_preempted(self) -> None:
        """(Under the lock.) Wake the handles whose driver got SIGTERM: they record it."""
        for ticket in self._out:
            if ticket.guard is not None and ticket.guard.preempted:
                ticket.wake.set()

    def _send(self, tickets: list[Ticket]) -> None:
        import dask  # here: this module is imported where dask may be missing (the hint says)

        # One client.map per set of resources (a rank group asks for nproc units).
        # A ticket that never reaches Dask gets no done-callback, so it leaves the set of
        # outstanding tickets here (else the preemption check would look at it until close).
        groups: dict[tuple[tuple[str, int], ...], list[Ticket]] = {}
        cancelled: list[Ticket] = []  # their handles already answer "aborted"
        for ticket in tickets:
            if ticket.cancelled:
                cancelled.append(ticket)
            else:
                key = tuple(sorted((ticket.resources or {}).items()))
                groups.setdefault(key, []).append(ticket)
        if cancelled:
            self._forget(cancelled)
        for resources, group in groups.items():
            try:
                with dask.annotate(**self._annotations):
                    futures = self._client.map(
                        self._function,
                        *zip(*(t.args for t in group), strict=True),
                        key=[t.key for t in group],
                        pure=False,
                        retries=0,
                        resources=dict(resources) or None,
                    )
            except Exception as exc:  # e.g. the scheduler went away: each attempt reports it
                self._forget(group)
                for ticket in group:
                    ticket.send_error = exc
                    ticket.set_ready()
                continue
            for ticket, future in zip(group, futures, strict=True):
                ticket.future = future
                future.add_done_callback(lambda _, t=ticket: self._on_done(t))
                if ticket.cancelled:
                    future.cancel()

    def _forget(self, tickets: list[Ticket]) -> None:
        with self._cond:
            self._out.difference_update(tickets)

    def _on_done(self, ticket: Ticket) -> None:
        with self._cond:
            self._arrived.append(ticket)
            self._cond.notify()

    def _fetch(self, tickets: list[Ticket]) -> None:
        finished = [t for t in tickets if t.future.status == "finished" and not t.cancelled]
        if finished:
            try:
                values = self._client.gather([t.future for t in finished], errors="raise")
            except Exception:  # e.g. a worker holding one left: each handle asks its own
                values = None
            if values is not None:
                for ticket, value in zip(finished, values, strict=True):
                    ticket.value = value
        for ticket in tickets:
            ticket.set_ready()
