"""Backend selection, storage options, and moving tasks to another interpreter, without Dask."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import taskpoint
from taskpoint import TaskpointError, task
from taskpoint.backends import create, for_isolation, shipping
from taskpoint.engine import Engine, configure, default_engine

WORKFLOWS = Path(__file__).parent / "workflows"


def test_each_isolation_has_its_backend():
    assert for_isolation("inline").name == "inline"
    assert for_isolation("process").name == "process"
    assert for_isolation("spawn") is for_isolation("process")
    with pytest.raises(ValueError, match="unknown backend"):
        create("yarn")


def test_a_configured_backend_runs_every_task():
    import os

    @task  # inline by its own isolation=, but the configured backend wins
    def where() -> int:
        return os.getpid()

    assert default_engine().backend is None
    configure(backend="process")
    assert taskpoint.run(where).result != os.getpid()
    configure(backend="auto")
    assert default_engine().backend is None
    assert taskpoint.run(where).result == os.getpid()


def test_an_engine_of_its_own_leaves_the_default_alone(tp_home: Path):
    import os

    @task
    def where() -> int:
        return os.getpid()

    engine = Engine(home=str(tp_home / "other"), backend="process")
    execution = engine.run(where)
    assert execution.result != os.getpid()
    assert (tp_home / "other" / "taskpoint.db").exists()
    assert default_engine().backend is None
    assert engine.resume(execution.id).result == execution.result


def test_missing_dask_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if not installed
    with pytest.raises(TaskpointError, match=r"pip install 'taskpoint\[dask\]'"):
        create("dask")


def test_storage_options_apply_to_remote_urls_only(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TASKPOINT_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    s = Engine(storage_options={"key": "k"})
    assert s.storage_options_for("/data/blobs") == {}
    assert s.storage_options_for("s3://b/p") == {
        "key": "k",
        "endpoint_url": "http://127.0.0.1:9000",
    }
    assert s.storage_options_for("gs://b/p") == {"key": "k"}
    explicit = Engine(storage_options={"client_kwargs": {"endpoint_url": "http://x"}})
    assert "endpoint_url" not in explicit.storage_options_for("s3://b/p")


def test_a_local_task_travels_by_value():
    offset = 5

    @task(retries=2)
    def add(x: int) -> int:
        return x + offset

    payload = shipping.pack(add, {"x": 1})
    assert payload[0][0] == "value"
    again, arguments = shipping.unpack(payload)
    assert again.call_bound(arguments) == 6
    assert again.retries == 2


def test_a_file_task_travels_as_source_and_loads_under_its_name():
    from taskpoint.engine.loader import load_file

    path = WORKFLOWS / "shipped_flow.py"
    module = load_file(path)
    ref, arguments = shipping.pack(module.unbox, {"b": module.Box(7)})
    assert ref[:3] == ("file", "shipped_flow", "unbox")
    # A worker that never saw the file: build the module from the shipped source.
    del sys.modules["shipped_flow"]
    try:
        again, args = shipping.unpack((ref, arguments))
        assert again.call_bound(args) == 7
        assert sys.modules["shipped_flow"].__taskpoint_digest__ == ref[5]
        assert shipping.unpack((ref, arguments))[0] is again  # loaded once per source
    finally:
        sys.modules.pop("shipped_flow", None)


def test_a_package_task_travels_by_reference(monkeypatch: pytest.MonkeyPatch):
    import importlib

    monkeypatch.syspath_prepend(str(WORKFLOWS))  # workflows/tp_shipped_pkg is importable
    module = importlib.import_module("tp_shipped_pkg.tasks")
    try:
        ref, arguments = shipping.pack(module.one, {})
        assert ref == ("ref", "tp_shipped_pkg.tasks", "one")
        assert shipping.unpack((ref, arguments))[0] is module.one
    finally:
        sys.modules.pop("tp_shipped_pkg.tasks", None)
        sys.modules.pop("tp_shipped_pkg", None)
