"""Fault-injection suite: real processes, real files, a real S3-protocol server.

Every test gets a private taskpoint home. The session ends with a summary of the faults that
were injected (printed, and written to ``faults-summary.json`` in pytest's base temp dir).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faults_proxy import FaultyProxy
from faults_stats import COUNTS, CURRENT, summary_lines, write_summary


@pytest.fixture(autouse=True)
def tp_home(tp_home: Path) -> Path:
    """This suite runs the engine in every test: the shared private home (tests/conftest.py)."""
    return tp_home


@pytest.fixture(autouse=True)
def _fault_counts_by_module(request: pytest.FixtureRequest) -> None:
    CURRENT["module"] = request.module.__name__


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not COUNTS:
        return
    factory = getattr(config, "_tmp_path_factory", None)
    path = write_summary(factory.getbasetemp()) if factory is not None else None
    terminalreporter.write_sep("-", "fault injection")
    for line in summary_lines():
        terminalreporter.write_line(line)
    if path is not None:
        terminalreporter.write_line(f"  (written to {path})")


@pytest.fixture
def proxy(s3_server) -> Iterator[FaultyProxy]:
    """A fault-injecting TCP proxy in front of the moto server."""
    host, port = s3_server.endpoint_url.removeprefix("http://").split(":")
    with FaultyProxy(host, int(port)) as p:
        yield p
