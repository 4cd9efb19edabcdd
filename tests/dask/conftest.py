"""Dask backend fixtures: a LocalCluster of 2 worker processes (nanny-managed, so a killed worker
comes back), a scheduler with 2 bare worker processes (no nanny: a frozen worker stays a real
zombie instead of being restarted), checkpoints and blobs on the moto S3 server, and a private
records home per test."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dask_support import stop_process

distributed = pytest.importorskip("distributed", reason="needs taskpoint[dask]")

from taskpoint.backends.dask import DaskBackend  # noqa: E402
from taskpoint.engine import configure  # noqa: E402

HERE = Path(__file__).parent
# A frozen worker is removed after this many seconds without heartbeat (the scheduler never
# goes below 10 heartbeat intervals, 5 s for a small cluster).
WORKER_TTL = "5s"


@pytest.fixture(autouse=True)
def tp_home(tp_home: Path) -> Path:
    """This suite runs the engine in every test: the shared private home (tests/conftest.py)."""
    return tp_home


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    """A folder the tasks and the test signal each other through (workers share this disk)."""
    path = tmp_path / "markers"
    path.mkdir()
    return path


@pytest.fixture
def on_s3(s3_server) -> str:
    """Checkpoints, inputs and outputs of the engine under a fresh s3:// prefix (on the default
    engine, which ``tp_home`` replaces again after the test)."""
    url = s3_server.url()
    configure(storage=url, storage_options=s3_server.storage_options)
    return url


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[distributed.Client]:
    import dask

    # A killed worker's nanny starts a new one. The cluster itself closes that nanny for good if,
    # 15 s (this setting) after the worker left, no worker of its name is up: a second kill in
    # that time (two tests in a row) would then leave one worker for the rest of the module.
    with (
        dask.config.set({"distributed.deploy.lost-worker-timeout": "1h"}),
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture
def cluster(local_cluster) -> distributed.Client:
    """The module's LocalCluster with both workers up (a test may have killed one), used by
    the engine for every task."""
    local_cluster.wait_for_workers(2, timeout=120)
    configure(backend=DaskBackend(client=local_cluster))
    return local_cluster


@pytest.fixture
def bare_cluster() -> Iterator[distributed.Client]:
    """A scheduler with a short worker TTL and 2 worker processes started without a nanny."""
    import dask

    with dask.config.set({"distributed.scheduler.worker-ttl": WORKER_TTL}):
        cluster = distributed.LocalCluster(n_workers=0, dashboard_address=":0")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                cluster.scheduler_address,
                "--no-nanny",
                "--nthreads",
                "1",
                "--no-dashboard",
                "--name",
                f"bare-{i}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(2)
    ]
    client = distributed.Client(cluster)
    try:
        client.wait_for_workers(2, timeout=120)
        configure(backend=DaskBackend(client=client))
        yield client
    finally:
        for proc in procs:
            stop_process(proc.pid)
            proc.wait(timeout=30)
        client.close()
        cluster.close()
