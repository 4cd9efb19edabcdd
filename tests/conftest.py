"""Fixtures shared by every test suite.

``s3_server`` starts a real S3-protocol server (moto's ``ThreadedMotoServer``) on 127.0.0.1 with a
free port, once per session, so checkpoint, engine and dask tests all talk S3 over HTTP through
s3fs exactly as they would to a cloud bucket. The fixtures of ``support/fixtures.py``
(``workflow_copy``) are registered here for every suite.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["support.fixtures"]

# A suite started in the background (nohup, `cmd &` in a script) inherits SIGINT ignored, and so
# does every driver it starts: the Ctrl-C tests would then wait in vain. A process with a handler
# installed starts its children with the default disposition, so install Python's own.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The local copy of remote versions (checkpoint/localcopy.py) is off in every suite, for the
# processes the tests start too: tests that damage a store's payload behind the code's back must
# meet that damage, and no test may fill the user's cache directory. The tests of the local copy
# turn it on with a directory of their own (tests/checkpoint/test_local_copy*.py).
os.environ["TASKPOINT_LOCAL_COPY"] = "off"

S3_BUCKET = "taskpoint-tests"
S3_REGION = "us-east-1"
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": S3_REGION,
    "AWS_REGION": S3_REGION,
    "AWS_EC2_METADATA_DISABLED": "true",  # never wait on an instance-metadata lookup
}


@pytest.fixture
def tp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private records home (blobs under it) and a fresh default engine for one test.

    Suites that run the engine re-declare it autouse (``def tp_home(tp_home): return tp_home``)
    and add what they need on top with ``configure(...)`` (a longer grace period, say): the
    default engine is replaced again after the test.
    """
    from taskpoint.engine.config import Engine, set_default_engine

    home = tmp_path / "home"
    monkeypatch.setenv("TASKPOINT_HOME", str(home))
    monkeypatch.delenv("TASKPOINT_STORAGE", raising=False)
    monkeypatch.delenv("TASKPOINT_S3_ENDPOINT_URL", raising=False)
    previous = set_default_engine(Engine())
    try:
        yield home
    finally:
        set_default_engine(previous)


@dataclass(frozen=True)
class S3Server:
    """A running moto server with one bucket; ``url()`` gives a fresh, unique scope URL."""

    endpoint_url: str
    bucket: str

    @property
    def storage_options(self) -> dict[str, Any]:
        return {
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": S3_REGION},
            "key": "testing",
            "secret": "testing",
        }

    def url(self, prefix: str | None = None) -> str:
        return f"s3://{self.bucket}/{prefix or uuid.uuid4().hex}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=S3_REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    @functools.cached_property
    def filesystem(self) -> Any:
        """A private s3fs instance (not the cached one the code under test uses), made once."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """Start moto's S3 server on 127.0.0.1 (port 0 = any free one) and create a bucket."""
    from moto.server import ThreadedMotoServer

    patch = pytest.MonkeyPatch()
    for name, value in _AWS_ENV.items():
        patch.setenv(name, value)
    patch.delenv("AWS_PROFILE", raising=False)
    no_proxy = os.environ.get("NO_PROXY", "")
    patch.setenv("NO_PROXY", ",".join(filter(None, [no_proxy, "127.0.0.1", "localhost"])))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        assert port != 0, "moto server did not bind a real port"
        s3 = S3Server(endpoint_url=f"http://{host}:{port}", bucket=S3_BUCKET)
        s3.client().create_bucket(Bucket=S3_BUCKET)
        yield s3
    finally:
        server.stop()
        patch.undo()


@pytest.fixture
def payload_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``write()`` gets a payload prefix with a file, as one over the inline limit does
    (no inline versions): for tests that damage, hold or count payload files."""
    from taskpoint.checkpoint import payload

    monkeypatch.setattr(payload, "INLINE_MAX", -1)
