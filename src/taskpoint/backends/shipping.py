"""Send a task and its arguments to another interpreter (a Dask worker) and get them back there.

A task is found on the other side in one of three ways, chosen by the driver:

- ``ref``: by module and qualified name, for tasks of installed packages (the worker must have the
  package, as with any Dask code);
- ``file``: the *source* of the task's module travels along and is imported on the worker under
  the same module name. This is how a file run by ``taskpoint run FILE.py`` (or any loose module,
  e.g. a test file) reaches workers that cannot import it, and why classes defined in that file
  pickle by reference both ways (the driver has the same module under the same name);
- ``value``: a task that cannot be found by name (defined inside a function, or in ``__main__``)
  is pickled by value with cloudpickle.

Arguments are pickled separately, after the task reference, so they are loaded only once the
module that defines their classes exists on the worker.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import types
from typing import Any

from taskpoint.engine.task import Task
from taskpoint.errors import TaskpointError

# Module sources read by the driver, by module name: (path, source, digest).
_sources: dict[str, tuple[str, str, str]] = {}
_load_lock = threading.Lock()


def importable(task: Task) -> bool:
    """Can another interpreter find the task by module and qualified name (given the module)?"""
    fn = task.fn
    module = sys.modules.get(fn.__module__)
    if fn.__module__ in ("__main__", "__mp_main__") or module is None:
        return False
    if getattr(module, "__file__", None) is None or "<locals>" in fn.__qualname__:
        return False
    obj: Any = module
    for part in fn.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is task


def pack(task: Task, arguments: dict[str, Any]) -> tuple[tuple, bytes]:
    """``(task reference, pickled arguments)``, ready for the worker's :func:`unpack`."""
    import cloudpickle

    return _reference(task), cloudpickle.dumps(arguments)


def unpack(payload: tuple[tuple, bytes]) -> tuple[Task, dict[str, Any]]:
    import cloudpickle

    ref, arguments = payload
    task = _resolve(ref)
    return task, cloudpickle.loads(arguments)


def _reference(task: Task) -> tuple:
    if not importable(task):
        import cloudpickle

        options = {
            "retries": task.retries,
            "retry_on": task.retry_on,
            "system_retries": task.system_retries,
            "retry_delay": task.retry_delay,
            "isolation": task.isolation,
            "keep": task.keep,
        }
        return ("value", cloudpickle.dumps((task.fn, options)))
    name, qualname = task.fn.__module__, task.fn.__qualname__
    module = sys.modules[name]
    if "." in name:
        return ("ref", name, qualname)
    file = module.__file__
    assert file is not None, f"module {name!r} has no file, so it cannot be importable()"
    if installed(file):
        return ("ref", name, qualname)
    path, source, digest = _source_of(name, file)
    return ("file", name, qualname, path, source, digest)


def installed(path: str) -> bool:
    """Is ``path`` inside an installed package (site-packages)?"""
    parts = os.path.normpath(path).split(os.sep)
    return "site-packages" in parts or "dist-packages" in parts


def _source_of(name: str, path: str) -> tuple[str, str, str]:
    cached = _sources.get(name)
    if cached is None or cached[0] != path:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        digest = hashlib.sha256(source.encode()).hexdigest()
        cached = _sources[name] = (path, source, digest)
    return cached


def _resolve(ref: tuple) -> Task:
    kind = ref[0]
    if kind == "value":
        import cloudpickle

        fn, options = cloudpickle.loads(ref[1])
        return Task(fn, **options)
    if kind == "ref":
        import importlib

        module = importlib.import_module(ref[1])
    elif kind == "file":
        module = _module_from_source(*ref[1:2], *ref[3:])
    else:
        raise TaskpointError(f"unknown task reference kind {kind!r} (taskpoint versions differ?)")
    obj: Any = module
    for part in ref[2].split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, Task):
        raise TaskpointError(f"{ref[2]} in module {ref[1]} is not a @task on this worker")
    return obj


def _module_from_source(name: str, path: str, source: str, digest: str) -> types.ModuleType:
    """The module ``name`` built from the driver's source (once per worker and source)."""
    with _load_lock:
        existing = sys.modules.get(name)
        if existing is not None:
            if getattr(existing, "__taskpoint_digest__", None) == digest:
                return existing
            if not hasattr(existing, "__taskpoint_digest__"):
                file = getattr(existing, "__file__", None)
                if file and _digest_of_file(file) == digest:
                    return existing  # the worker imported the very same file itself
                raise TaskpointError(
                    f"this worker already has a different module named {name!r} ({file}); "
                    f"rename {os.path.basename(path)} so its module name is unique"
                )
        module = types.ModuleType(name)
        module.__file__ = path
        module.__taskpoint_digest__ = digest  # type: ignore[attr-defined]
        # Like the driver's loader: the file's directory is importable, for sibling modules
        # (when the worker shares the driver's file system).
        folder = os.path.dirname(path)
        if os.path.isdir(folder) and folder not in sys.path:
            sys.path.insert(0, folder)
        sys.modules[name] = module  # before running it: dataclasses look their module up
        try:
            exec(compile(source, path, "exec"), module.__dict__)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module


def _digest_of_file(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return hashlib.sha256(f.read().encode()).hexdigest()
    except OSError:
        return None
