"""``@task`` and ``@workflow``: decorators that turn typed functions into engine targets.

Calling a task inside a running workflow makes a node of the current execution; calling a task or
a workflow at top level runs a whole execution eagerly (``taskpoint.run`` semantics) and returns
its result. Inside a running task, task and workflow calls are plain function calls: nodes are
made by the driver only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from taskpoint.context import active_context
from taskpoint.engine.retry import Backoff
from taskpoint.engine.storage_timeout import checked

if TYPE_CHECKING:
    from concurrent.futures import Future

F = TypeVar("F", bound=Callable[..., Any])

# "process" forks (fast; functions need not be importable); "spawn" starts a fresh interpreter
# (slower; for libraries that break in a forked child, e.g. OpenMP/CUDA after first use; the
# task must be defined at module level of an importable module or of the `taskpoint run` file).
ISOLATIONS = ("inline", "process", "spawn")
# What a retry or resume does when the records say the node committed checkpoints but its scope
# holds none (deleted, another storage, expired): "fail" the node with CheckpointMissingError, or
# "restart" it from zero on purpose (the engine logs that it did).
ON_MISSING_CHECKPOINTS = ("fail", "restart")
# Seconds an attempt's child process may send no heartbeat before it is declared frozen, killed
# and recorded lost (backends/_beats.py): long enough for a GIL-holding call to finish.
DEFAULT_HEARTBEAT_TIMEOUT = 120.0


class Target:
    """What ``@task`` and ``@workflow`` have in common: a function, its signature and hints."""

    kind = "target"

    def __init__(self, fn: Callable[..., Any]) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name: str = fn.__name__
        self._signature: Any = None
        self._hints: dict[str, Any] | None = None

    @property
    def signature(self) -> Any:
        if self._signature is None:
            import inspect  # lazy: keeps `import taskpoint` fast

            self._signature = inspect.signature(self.fn)
        return self._signature

    @property
    def hints(self) -> dict[str, Any]:
        if self._hints is None:
            import typing

            try:
                self._hints = typing.get_type_hints(self.fn)
            except Exception:  # unresolvable forward references: check nothing
                self._hints = {}
        return self._hints

    def bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        """Bind a call to parameter names (defaults applied) and check types."""
        import inspect

        from taskpoint.engine.typecheck import check_arguments

        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:  # "missing a required argument: 'a'": say whose
            raise TypeError(f"{self.kind} {self.name!r}: {exc}") from None
        bound.apply_defaults()
        variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        checked = {
            name: value
            for name, value in bound.arguments.items()
            if self.signature.parameters[name].kind not in variadic
        }
        check_arguments(self.kind, self.name, self.hints, checked)
        return dict(bound.arguments)

    def call_bound(self, arguments: dict[str, Any]) -> Any:
        bound = self.signature.bind_partial()
        bound.arguments.update(arguments)
        return self.fn(*bound.args, **bound.kwargs)

    def __repr__(self) -> str:
        return f"<{self.kind} {self.fn.__module__}.{self.fn.__qualname__}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Inside an attempt a call is a plain call; outside any execution it starts one;
        inside a workflow's execution the subclass decides (a node, or an inline sub-workflow)."""
        if active_context() is not None:
            return self.fn(*args, **kwargs)
        from taskpoint.engine import driver

        run = driver.current_run()
        if run is None:
            return driver.run_eagerly(self, args, kwargs)
        return self._call_in_run(run, args, kwargs)

    def _call_in_run(self, run: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError

    def __reduce__(self) -> tuple:
        # By reference, like a function: a spawned attempt re-imports the module.
        return (_resolve, (self.fn.__module__, self.fn.__qualname__))


def _resolve(module: str, qualname: str) -> Target:
    import importlib

    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class Task(Target):
    kind = "task"

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] | type[BaseException] = (),
        system_retries: int = 3,
        retry_delay: float | Backoff = 0.0,
        isolation: str = "inline",
        keep: int = 2,
        on_missing_checkpoints: str = "fail",
        keep_checkpoints_on_success: int | str = "latest",
        require_resume: bool = False,
        heartbeat_timeout: float | None = DEFAULT_HEARTBEAT_TIMEOUT,
        storage_timeout: float | None = None,
        nproc: int = 1,
    ) -> None:
        super().__init__(fn)
        retry_on = _check_option_types(
            self.name, retries, retry_on, system_retries, retry_delay, keep
        )
        if retries < 0 or system_retries < 0:
            raise ValueError(f"task {self.name!r}: retries and system_retries must be >= 0")
        if not isinstance(retry_delay, Backoff) and not 0 <= retry_delay < float("inf"):
            raise ValueError(
                f"task {self.name!r}: retry_delay must be a finite number of seconds >= 0 "
                f"(or a taskpoint.Backoff), got {retry_delay!r}"
            )
        if isolation not in ISOLATIONS:
            raise ValueError(
                f"task {self.name!r}: isolation must be one of {ISOLATIONS}, got {isolation!r}"
            )
        if keep < 1:
            raise ValueError(f"task {self.name!r}: keep must be >= 1, got {keep}")
        if on_missing_checkpoints not in ON_MISSING_CHECKPOINTS:
            raise ValueError(
                f"task {self.name!r}: on_missing_checkpoints must be one of "
                f"{ON_MISSING_CHECKPOINTS}, got {on_missing_checkpoints!r}"
            )
        self.retries = retries
        self.retry_on = retry_on
        self.system_retries = system_retries
        self.retry_delay = retry_delay
        self.isolation = isolation
        self.keep = keep
        self.on_missing_checkpoints = on_missing_checkpoints
        self.keep_on_success = _versions_kept_on_success(self.name, keep_checkpoints_on_success)
        if not isinstance(require_resume, bool):
            raise TypeError(f"task {self.name!r}: require_resume must be True or False")
        # Refuse an attempt's first commit when it did not resume (engine/resume_guard.py).
        self.require_resume = require_resume
        self.heartbeat_timeout = _heartbeat_timeout(self.name, heartbeat_timeout)
        # Bounds each request to a remote checkpoint store; None: the engine's (storage_timeout.py)
        self.storage_timeout = checked(storage_timeout, f"task {self.name!r}: storage_timeout")
        self.nproc = _processes(self.name, nproc, isolation)

    @property
    def max_attempts(self) -> int:
        """Attempts the user budget allows (system retries come on top)."""
        return 1 + self.retries

    def _call_in_run(self, run: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        return run.call_task(self, args, kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Future:
        """Start this call as a node of the running workflow and return a future of its result
        (``concurrent.futures.Future``); nodes run at once as far as the backend allows."""
        from concurrent.futures import Future

        if active_context() is not None:  # inside a running task: a plain call
            future: Future = Future()
            future.set_result(self.fn(*args, **kwargs))
            return future
        from taskpoint.engine import driver

        run = driver.current_run()
        if run is None:
            from taskpoint.errors import TaskpointError

            raise TaskpointError(
                f"{self.name}.submit() makes a node of a workflow: call it inside a @workflow "
                f"(or call {self.name}(...) directly to run it on its own)"
            )
        return run.fanout.submit(self, self.bind(args, kwargs))

    def map(self, *iterables: Any, **kw_iterables: Any) -> list[Any]:
        """One node per item: ``t.map(x=[1, 2, 3])``; results in input order (see
        ``taskpoint.map``)."""
        from taskpoint.engine.fanout import map_task

        return map_task(self, *iterables, **kw_iterables)


def _versions_kept_on_success(name: str, value: Any) -> int | None:
    """``keep_checkpoints_on_success``: ``"latest"`` (1), ``"all"`` (``None``: retention as
    during the run, ``keep``) or a number of versions >= 1."""
    if value == "latest":
        return 1
    if value == "all":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(
        f"task {name!r}: keep_checkpoints_on_success must be 'latest', 'all' or a number of "
        f"versions >= 1, got {value!r}"
    )


def _processes(name: str, nproc: Any, isolation: str) -> int:
    """``nproc``: the processes (ranks) of each attempt; more than one needs a process of
    their own each, which the driver's thread cannot be."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"task {name!r}: nproc must be an integer >= 1, got {nproc!r}")
    if nproc > 1 and isolation == "inline":
        raise ValueError(
            f"task {name!r}: nproc={nproc} runs each attempt as {nproc} rank processes, which "
            'needs isolation="process" (or "spawn"); inline attempts run in the driver\'s own '
            "thread"
        )
    return nproc


def _heartbeat_timeout(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 2:
        raise ValueError(
            f"task {name!r}: heartbeat_timeout must be seconds >= 2 (or None: never declare a "
            f"silent attempt process frozen), got {value!r}"
        )
    return float(value)


def _check_option_types(
    name: str, retries: Any, retry_on: Any, system_retries: Any, retry_delay: Any, keep: Any
) -> tuple[type[BaseException], ...]:
    """Options of the wrong type fail here, naming the task, not later inside an attempt."""
    for option, value in (("retries", retries), ("system_retries", system_retries), ("keep", keep)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"task {name!r}: {option} must be an integer, got {value!r}")
    if not isinstance(retry_delay, Backoff) and (
        isinstance(retry_delay, bool) or not isinstance(retry_delay, int | float)
    ):
        raise TypeError(
            f"task {name!r}: retry_delay must be seconds (a number) or a taskpoint.Backoff "
            f"(exponential backoff with jitter), got {retry_delay!r}"
        )
    types = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(f"task {name!r}: retry_on takes exception classes, got {kind!r}")
    return types


class Workflow(Target):
    kind = "workflow"

    def _call_in_run(self, run: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        self.bind(args, kwargs)  # a sub-workflow's inputs are checked too
        return self.fn(*args, **kwargs)


@overload
def task(fn: F, /) -> F: ...
@overload
def task(
    *,
    retries: int = 0,
    retry_on: tuple[type[BaseException], ...] | type[BaseException] = (),
    system_retries: int = 3,
    retry_delay: float | Backoff = 0.0,
    isolation: str = "inline",
    keep: int = 2,
    on_missing_checkpoints: str = "fail",
    keep_checkpoints_on_success: int | str = "latest",
    require_resume: bool = False,
    heartbeat_timeout: float | None = DEFAULT_HEARTBEAT_TIMEOUT,
    storage_timeout: float | None = None,
    nproc: int = 1,
) -> Callable[[F], F]: ...
def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make ``fn`` a task: retried on ``RecoverableError``/``retry_on`` up to ``retries`` times
    and on preemption or a lost worker up to ``system_retries`` times, each retry starting from
    the latest checkpoint. Usable bare (``@task``) or called (``@task(retries=3)``).

    A retry or resume whose records show committed checkpoints that the storage no longer holds
    fails the node with ``CheckpointMissingError``; ``on_missing_checkpoints="restart"`` starts
    it from zero instead (as ``taskpoint resume EXEC --from-scratch`` does for one resume).

    When the node succeeds, its checkpoints are pruned to ``keep_checkpoints_on_success``
    versions: ``"latest"`` (default) keeps only the newest, ``"all"`` keeps what ``keep`` kept,
    a number keeps that many.

    An attempt that could have resumed from a committed checkpoint but loaded none before its
    first commit, or whose first commit's ``step`` is below that checkpoint's, restarted from
    scratch: a warning in the run's output, ``taskpoint show`` and the web view.
    ``require_resume=True`` makes it an error: that first write raises ``NotResumedError``,
    nothing is committed and the attempt fails.

    With ``isolation="process"``/``"spawn"`` the attempt's process sends a heartbeat from a
    thread; one silent for ``heartbeat_timeout`` seconds (default 120; ``None``: never) is
    frozen (stopped, hung in the kernel, deadlocked): it is killed and the attempt is recorded
    lost, so the next attempt resumes instead of the driver waiting forever.

    ``nproc=N`` (with ``isolation="process"`` or ``"spawn"``) runs each attempt as N rank
    processes with torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ...), so
    ``torch.distributed.init_process_group()`` works unchanged; the output is rank 0's return
    value, and a rank that dies, fails or is preempted ends the attempt of the whole group
    (``backends/ranks.py``).

    ``storage_timeout`` (seconds, default: the engine's ``--storage-timeout``) bounds each request
    of the task's checkpoint to a remote store: a stalled upload or read fails with
    ``CheckpointTimeoutError``, the attempt is recorded lost and the next one resumes from the
    latest committed checkpoint (``system_retries``).

    Examples:
        >>> import tempfile
        >>> import taskpoint
        >>> from taskpoint import RecoverableError, current_context, task
        >>> _ = taskpoint.configure(home=tempfile.mkdtemp())
        >>> @task(retries=3)
        ... def count(n: int) -> int:
        ...     cp = current_context().checkpoint
        ...     prev = cp.read()                          # the latest committed version
        ...     start = int(prev) if prev else 0
        ...     for i in range(start, n):
        ...         if i == 2 and current_context().attempt == 1:
        ...             raise RecoverableError("a transient failure at i=2")
        ...         cp.write(str(i + 1).encode(), step=i + 1)
        ...     return start
        >>> count(5)                                      # attempt 2 started at 2, not 0
        2
    """
    if fn is not None:
        return Task(fn, **options)
    return lambda f: Task(f, **options)


@overload
def workflow(fn: F, /) -> F: ...
@overload
def workflow() -> Callable[[F], F]: ...
def workflow(fn: Callable[..., Any] | None = None, /) -> Any:
    """Make ``fn`` a workflow: calling it runs an execution whose task calls are its nodes.

    Examples:
        >>> import tempfile
        >>> import taskpoint
        >>> from taskpoint import task, workflow
        >>> _ = taskpoint.configure(home=tempfile.mkdtemp())
        >>> @task
        ... def add(a: int, b: int) -> int:
        ...     return a + b
        >>> @workflow
        ... def total(n: int) -> int:
        ...     return add(a=add(a=n, b=1), b=2)
        >>> total(10)
        13
        >>> [node.key for node in taskpoint.run(total, 10).nodes]
        ['add#1', 'add#2']
    """
    if fn is not None:
        return Workflow(fn)
    return Workflow
