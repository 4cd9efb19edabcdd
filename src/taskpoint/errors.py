"""Every error taskpoint raises on purpose derives from :class:`TaskpointError`.

Each message says what happened, to what, and what to do about it.
"""

from __future__ import annotations


class TaskpointError(Exception):
    """Root of all taskpoint errors.

    Examples:
        >>> from taskpoint import CheckpointError, RecoverableError, TaskpointError
        >>> [issubclass(e, TaskpointError) for e in (CheckpointError, RecoverableError)]
        [True, True]
        >>> from taskpoint import current_context
        >>> try:
        ...     current_context()                 # outside a running task
        ... except TaskpointError as exc:
        ...     print(str(exc).split(":")[0])
        current_context() was called outside a task
    """


class CheckpointError(TaskpointError):
    """A checkpoint could not be written, read or restored (storage unreachable, bad path, ...).

    Examples:
        >>> import tempfile
        >>> from taskpoint import Checkpoint, CheckpointError
        >>> cp = Checkpoint.open(tempfile.mkdtemp(), readonly=True)
        >>> try:
        ...     cp.write(b"state")
        ... except CheckpointError as exc:
        ...     print("refused:", "read-only" in str(exc))
        refused: True
    """


class CheckpointTimeoutError(CheckpointError):
    """A request to the checkpoint storage ran past its deadline (``Checkpoint.open(timeout=)``,
    the engine's ``storage_timeout``, or the filesystem's own): the storage stalled or is
    unreachable, not the task's fault. The engine records the attempt ``lost`` and retries it
    from its latest committed checkpoint under the system budget (``system_retries``).

    Examples:
        >>> from taskpoint import CheckpointError, CheckpointTimeoutError, task
        >>> issubclass(CheckpointTimeoutError, CheckpointError)
        True
        >>> @task(storage_timeout=120, system_retries=5)  # each store request: 120 s at most
        ... def upload_heavy() -> None: ...
        >>> upload_heavy.storage_timeout
        120.0
    """


class CheckpointCorruptError(CheckpointError):
    """Committed checkpoint versions exist, but none of them is intact.

    Raised instead of returning ``None`` so a long job never silently restarts from zero.

    Examples:
        >>> import os, tempfile, warnings
        >>> from taskpoint import Checkpoint, CheckpointCorruptError
        >>> url = tempfile.mkdtemp()
        >>> cp = Checkpoint.open(url)
        >>> version = cp.write(b"x" * 100_000)      # over 64 KiB: stored as a payload file
        >>> os.remove(os.path.join(url, "v", version.id, "data"))
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")      # the damaged version is also warned about
        ...     try:
        ...         cp.read()
        ...     except CheckpointCorruptError as exc:
        ...         print(len(exc.problems), "problem, naming", version.id in exc.problems[0])
        1 problem, naming True
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems or [])


class CheckpointMissingError(CheckpointError):
    """The records say a node committed checkpoint versions, but its scope holds none.

    Raised (as the failure of the node's next attempt, which never starts) instead of letting
    the node silently start from zero: the scope was deleted, the storage is not the one that
    holds it, or a lifecycle rule expired it. ``expected`` lists the recorded version ids,
    newest first. A deliberate restart from zero is ``taskpoint resume EXEC --from-scratch``
    or ``@task(on_missing_checkpoints="restart")``.

    Examples:
        >>> import shutil, tempfile
        >>> import taskpoint
        >>> from taskpoint import current_context, task
        >>> _ = taskpoint.configure(home=tempfile.mkdtemp())
        >>> crashed = []
        >>> @task
        ... def step() -> str:
        ...     cp = current_context().checkpoint
        ...     if not crashed:
        ...         cp.write(b"1")
        ...         crashed.append(True)
        ...         raise ValueError("a crash after the first checkpoint")
        ...     return "from zero" if cp.read() is None else "resumed"
        >>> first = taskpoint.run(step)
        >>> shutil.rmtree(f"{first.storage}/{first.id}/nodes")  # the checkpoints vanish
        >>> second = taskpoint.resume(first.id)
        >>> print(second.status, second.error.split(":")[0])
        failed CheckpointMissingError
        >>> print(taskpoint.resume(first.id, from_scratch=True).result)
        from zero
    """

    def __init__(
        self,
        message: str,
        *,
        execution_id: str | None = None,
        node: str | None = None,
        expected: list[str] | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.execution_id = execution_id
        self.node = node
        self.expected: list[str] = list(expected or [])
        self.url = url

    def __reduce__(self):  # keyword-only attributes survive a trip between processes
        fields = (str(self), self.execution_id, self.node, self.expected, self.url)
        return (_rebuild_missing, fields)


def _rebuild_missing(
    message: str, execution_id: str | None, node: str | None, expected: list[str], url: str | None
) -> CheckpointMissingError:
    return CheckpointMissingError(
        message, execution_id=execution_id, node=node, expected=expected, url=url
    )


class NotResumedError(CheckpointError):
    """An attempt of a ``@task(require_resume=True)`` was about to commit without having
    resumed from the checkpoint version available at its start: it loaded none, or its first
    commit's ``step`` is below that version's. Nothing was committed; the attempt fails (it is
    not retried: a retry would most likely do the same).

    ``available`` / ``available_step``: the version the attempt could have resumed from;
    ``loaded`` / ``loaded_step``: the newest one it loaded (``None``: none); ``step``: the step
    of the refused commit (``None`` when the write gave none).

    Examples:
        >>> import tempfile
        >>> import taskpoint
        >>> from taskpoint import RecoverableError, current_context, task
        >>> _ = taskpoint.configure(home=tempfile.mkdtemp())
        >>> @task(retries=1, require_resume=True)
        ... def train() -> int:
        ...     cp = current_context().checkpoint
        ...     if current_context().attempt == 1:
        ...         cp.write(b"3", step=3)
        ...         raise RecoverableError("a crash at step 3")
        ...     cp.write(b"1", step=1)                # never read(): started from scratch
        ...     return 1
        >>> execution = taskpoint.run(train)
        >>> print(execution.status, execution.error.split(":")[0])
        failed NotResumedError
    """

    def __init__(
        self,
        message: str,
        *,
        available: str | None = None,
        available_step: int | None = None,
        loaded: str | None = None,
        loaded_step: int | None = None,
        step: int | None = None,
    ) -> None:
        super().__init__(message)
        self.available, self.available_step = available, available_step
        self.loaded, self.loaded_step = loaded, loaded_step
        self.step = step

    def __reduce__(self):  # keyword-only attributes survive a trip between processes
        fields = (self.available, self.available_step, self.loaded, self.loaded_step, self.step)
        return (_rebuild_not_resumed, (str(self), *fields))


def _rebuild_not_resumed(
    message: str,
    available: str | None,
    available_step: int | None,
    loaded: str | None,
    loaded_step: int | None,
    step: int | None,
) -> NotResumedError:
    return NotResumedError(
        message,
        available=available,
        available_step=available_step,
        loaded=loaded,
        loaded_step=loaded_step,
        step=step,
    )


# --- engine errors -------------------------------------------------------------------------------


class RecoverableError(TaskpointError):
    """Raised by a task to ask for a retry; the next attempt starts from the latest checkpoint.

    Retries of this kind spend the task's ``retries`` budget.

    Examples:
        >>> import tempfile
        >>> import taskpoint
        >>> from taskpoint import RecoverableError, current_context, task
        >>> _ = taskpoint.configure(home=tempfile.mkdtemp())
        >>> @task(retries=2)
        ... def flaky() -> int:
        ...     attempt = current_context().attempt
        ...     if attempt < 3:
        ...         raise RecoverableError(f"transient failure in attempt {attempt}")
        ...     return attempt
        >>> flaky()
        3
    """


class Preempted(TaskpointError):
    """The attempt was preempted (SIGTERM): its latest checkpoint is committed, it will resume.

    Raised inside a task by the checkpoint write that follows a SIGTERM, and by a workflow call
    whose execution was preempted. Retries of this kind spend ``system_retries``, never ``retries``.

    Examples:
        >>> import tempfile, time
        >>> import taskpoint
        >>> from taskpoint import Preempted, current_context, task
        >>> _ = taskpoint.configure(home=tempfile.mkdtemp())
        >>> @task
        ... def long_job() -> int:
        ...     ctx = current_context()
        ...     if ctx.checkpoint.read() is None:                # the first attempt is
        ...         ctx.preempt_deadline = time.monotonic() + 30  # preempted, as by SIGTERM
        ...     ctx.checkpoint.write(b"7", step=7)               # commits, then raises Preempted
        ...     return 7
        >>> execution = taskpoint.run(long_job)
        >>> try:
        ...     execution.unwrap()
        ... except Preempted as exc:
        ...     print(execution.status, exc.node)
        preempted long_job#1
        >>> print(taskpoint.resume(execution.id).result)
        7
    """

    def __init__(
        self, message: str = "", execution_id: str | None = None, node: str | None = None
    ) -> None:
        super().__init__(message or "preempted (SIGTERM)")
        self.execution_id = execution_id
        self.node = node

    def __reduce__(self):  # keep the attributes when sent from an attempt's child process
        return (type(self), (str(self), self.execution_id, self.node))


class AttemptLost(TaskpointError):
    """An attempt's process died without reporting (SIGKILL, OOM kill, segfault, hard exit)."""


class ExecutionFailed(TaskpointError):
    """An execution failed in one of its nodes; ``__cause__`` is the task's own exception.

    Examples:
        >>> import tempfile
        >>> import taskpoint
        >>> from taskpoint import ExecutionFailed, task
        >>> _ = taskpoint.configure(home=tempfile.mkdtemp())
        >>> @task
        ... def divide(a: int, b: int) -> float:
        ...     return a / b
        >>> try:
        ...     divide(1, 0)                       # a top-level call runs an execution
        ... except ExecutionFailed as exc:
        ...     print(exc.node, repr(exc.__cause__))
        divide#1 ZeroDivisionError('division by zero')
    """

    def __init__(self, execution_id: str, node: str | None, message: str | None = None) -> None:
        self.execution_id = execution_id
        self.node = node
        where = f" in node {node}" if node else ""
        text = message or f"execution {execution_id} failed{where}"
        super().__init__(f"{text} (details: taskpoint show {execution_id})")

    def __reduce__(self):
        return (_rebuild_execution_failed, (self.execution_id, self.node, self.args[0]))


def _rebuild_execution_failed(execution_id: str, node: str | None, text: str) -> ExecutionFailed:
    error = ExecutionFailed(execution_id, node)
    error.args = (text,)
    return error


class ExecutionNotFound(TaskpointError):
    """No execution with this id (or id prefix) is recorded under the taskpoint home."""


class WorkflowLoadError(TaskpointError):
    """A workflow file or name could not be loaded (missing file, unknown name, import error)."""
