"""The Dask dispatcher's bookkeeping, on a real in-process cluster: a ticket that never reaches
Dask (cancelled before its send, or its send failed) stops being outstanding at once, so the
preemption check does not keep looking at it until the backend closes."""

from __future__ import annotations

from collections.abc import Iterator

import distributed
import pytest

from taskpoint.backends._dask_dispatch import Dispatcher


def double(x: int) -> int:
    return 2 * x


@pytest.fixture
def client() -> Iterator[distributed.Client]:
    with (
        distributed.LocalCluster(
            n_workers=1, processes=False, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def test_a_fetched_result_leaves_nothing_outstanding(client):
    dispatcher = Dispatcher(client, double)
    try:
        ticket = dispatcher.submit("double-1", 21)
        assert ticket.wake.wait(60)
        assert ticket.ready and ticket.fetched and ticket.value == 42
        assert ticket not in dispatcher._out
    finally:
        dispatcher.close()


def test_a_ticket_cancelled_before_its_send_is_not_outstanding(client):
    dispatcher = Dispatcher(client, double)
    try:
        # Holding the dispatcher's lock keeps its thread from taking the ticket before the cancel.
        with dispatcher._cond:
            cancelled = dispatcher.submit("double-cancelled", 1)
            cancelled.cancel()
        assert cancelled.ready and cancelled.future is None
        # The thread sends in order: once a later ticket's result is back, the cancelled one
        # went through a send.
        later = dispatcher.submit("double-later", 2)
        assert later.wake.wait(60) and later.value == 4
        assert cancelled.future is None  # never sent
        assert cancelled not in dispatcher._out
        assert not dispatcher._out
    finally:
        dispatcher.close()


def test_a_failed_send_reports_its_error_and_is_not_outstanding(client):
    dispatcher = Dispatcher(client, double)
    try:
        client.close()  # the scheduler is gone for this client: client.map raises
        ticket = dispatcher.submit("double-unsent", 3)
        assert ticket.wake.wait(60)
        assert ticket.send_error is not None and ticket.future is None
        assert ticket not in dispatcher._out
    finally:
        dispatcher.close()
