"""Nodes at the same time: ``t.submit(...)`` returns a future, ``t.map(...)`` fans out.

Each submitted call is its own node (own key, checkpoints, retries and records), keyed when it is
submitted, in call order, so a resumed run maps every call to the node the first run recorded.
How many run at once is the backend's ``concurrency``: the inline backend runs each node at once,
in the caller's thread (so ``map`` is sequential); the process and Dask backends run each node's
attempt loop in a pool thread of the driver that waits on its child process or Dask future.

``map`` returns results in input order. The first failure (in input order) stops the map's other
nodes (pending ones never start, running attempts are stopped and recorded ``aborted``, so a
resume continues them from their checkpoints) and is raised.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from taskpoint.engine.events import Listener
from taskpoint.errors import Preempted, TaskpointError

if TYPE_CHECKING:
    from taskpoint.engine.attempt import AttemptHandle, Backend
    from taskpoint.engine.driver import Run
    from taskpoint.engine.task import Task


class Fanout:
    """The nodes of one run that were submitted to a pool, and their attempts in flight."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.lock = threading.Lock()
        self.pools: dict[int, ThreadPoolExecutor] = {}
        self.keys: dict[Future, str] = {}  # pooled futures -> node key
        self.handles: dict[str, AttemptHandle] = {}  # attempts in flight, by node key
        self.stopped: set[str] = set()
        self.stopped_all = False

    # -- submitting ------------------------------------------------------------------------------

    def submit(self, task: Task, arguments: dict[str, Any]) -> Future:
        key = self.run.next_key(task.name)
        backend = self.run.backend_for(task)
        if backend.concurrency <= 1:
            return _run_now(self.run.run_node, task, key, arguments)
        pool = self._pool(backend)
        future = pool.submit(self.run.run_node, task, key, arguments)
        with self.lock:
            self.keys[future] = key
        return future

    def _pool(self, backend: Backend) -> ThreadPoolExecutor:
        pool = self.pools.get(id(backend))
        if pool is None:
            if not self.pools:
                # Events now come from several threads; listeners are written for one.
                self.run.listener = SerializedListener(self.run.listener)
            pool = self.pools[id(backend)] = ThreadPoolExecutor(
                max_workers=backend.concurrency, thread_name_prefix=f"taskpoint-{backend.name}"
            )
        return pool

    # -- attempts in flight ----------------------------------------------------------------------

    def wait_for(self, key: str, handle: AttemptHandle) -> Any:
        with self.lock:
            self.handles[key] = handle
            stop = self.is_stopped(key)
        if stop:
            handle.cancel()
        try:
            return handle.result()
        finally:
            with self.lock:
                self.handles.pop(key, None)

    def is_stopped(self, key: str) -> bool:
        return self.stopped_all or key in self.stopped

    # -- ending ----------------------------------------------------------------------------------

    def gather(self, futures: list[Future]) -> list[Any]:
        """Results in input order; the first failure stops the others and is raised."""
        results = []
        for i, future in enumerate(futures):
            try:
                results.append(future.result())
            except BaseException:
                self.stop(futures[i + 1 :])
                raise
        return results

    def stop(self, futures: list[Future] | None = None) -> None:
        """Stop these pooled nodes (all when ``None``) and wait until their threads are done.
        While the driver is preempted, running attempts are left to commit and stop by
        themselves within the grace period instead."""
        with self.lock:
            if futures is None:
                self.stopped_all = True
                futures = list(self.keys)
            keys = {self.keys[f] for f in futures if f in self.keys}
            self.stopped |= keys
            for future in futures:
                future.cancel()  # one that has not started never will
            handles = [] if self.run.guard.preempted else [self.handles.get(k) for k in keys]
        for handle in handles:
            if handle is not None:
                handle.cancel()
        wait([f for f in futures if f in self.keys])

    def close(self, failed: bool) -> None:
        """At the end of the execution: stop what is left when it failed, else wait for it."""
        if not self.pools:
            return
        if failed:
            self.stop()
        else:
            wait(list(self.keys))
        for pool in self.pools.values():
            pool.shutdown(wait=True)


def _run_now(fn: Any, *args: Any) -> Future:
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except (KeyboardInterrupt, SystemExit, Preempted):
        raise  # the whole execution stops, not just this node
    except Exception as exc:
        future.set_exception(exc)
    return future


class SerializedListener(Listener):
    """Passes events on one at a time (they come from several pool threads)."""

    def __init__(self, inner: Listener) -> None:
        self.inner = inner
        self._lock = threading.RLock()

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("_") or name == "inner":
            return object.__getattribute__(self, name)
        method = getattr(object.__getattribute__(self, "inner"), name)
        if not callable(method):
            return method
        lock = object.__getattribute__(self, "_lock")

        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        return call


def map_task(task: Task, /, *iterables: Iterable[Any], **kw_iterables: Iterable[Any]) -> list[Any]:
    """Run ``task`` once per item, each call its own node: ``map(t, x=[1, 2, 3])`` or
    ``map(t, [1, 2, 3], [4, 5, 6])`` (positional iterables zip like the builtin ``map``).
    Results come back in input order.

    Examples:
        >>> import tempfile
        >>> import taskpoint
        >>> from taskpoint import task, workflow
        >>> _ = taskpoint.configure(home=tempfile.mkdtemp())
        >>> @task
        ... def power(x: int, n: int) -> int:
        ...     return x**n
        >>> @workflow
        ... def powers(xs: list[int]) -> list[int]:
        ...     return taskpoint.map(power, x=xs, n=[2] * len(xs))   # or power.map(...)
        >>> powers([1, 2, 3])
        [1, 4, 9]
        >>> [node.key for node in taskpoint.run(powers, [4, 5]).nodes]
        ['power#1', 'power#2']
    """
    from taskpoint.context import active_context
    from taskpoint.engine import driver
    from taskpoint.engine.task import Task

    if not isinstance(task, Task):
        raise TypeError(f"map() needs a @task, got {task!r}")
    calls = _calls(task, iterables, kw_iterables)
    if active_context() is not None:  # inside a running task, tasks are plain function calls
        return [task.fn(*args, **kwargs) for args, kwargs in calls]
    run = driver.current_run()
    if run is None:
        raise TaskpointError(
            f"{task.name}.map() makes nodes of a workflow: call it inside a @workflow"
        )
    bound = [task.bind(args, kwargs) for args, kwargs in calls]  # all checked before any runs
    futures = []
    for arguments in bound:
        future = run.fanout.submit(task, arguments)
        futures.append(future)
        if future.done() and future.exception() is not None:
            break  # sequential backend: later items would only run to be thrown away
    return run.fanout.gather(futures)


def _calls(task: Task, iterables: tuple, kw_iterables: dict) -> list[tuple[tuple, dict]]:
    columns = [list(it) for it in iterables]
    named = {name: list(it) for name, it in kw_iterables.items()}
    lengths = {len(c) for c in columns} | {len(c) for c in named.values()}
    if not lengths:
        raise TypeError(f"{task.name}.map() needs at least one iterable of inputs")
    if len(lengths) > 1:
        sizes = [len(c) for c in columns] + [f"{k}={len(v)}" for k, v in named.items()]
        raise ValueError(f"{task.name}.map(): the iterables differ in length ({sizes})")
    (n,) = lengths
    return [(tuple(c[i] for c in columns), {k: v[i] for k, v in named.items()}) for i in range(n)]
