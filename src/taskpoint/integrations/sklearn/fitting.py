"""`fit_incremental` and `fit_warm_start`: scikit-learn training that resumes inside a task (see
the package docs; how an estimator is stored is ``_persist``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from taskpoint.errors import CheckpointError
from taskpoint.integrations import _toolkit as kit
from taskpoint.integrations._lazy import require
from taskpoint.integrations.sklearn import _persist as persist

require("sklearn", "sklearn")
require("skops.io", "sklearn")

if TYPE_CHECKING:
    from taskpoint.checkpoint import Checkpoint


class _Estimator(Protocol):
    """What these helpers call on an estimator (every scikit-learn estimator has both)."""

    def set_params(self, **params: Any) -> Any: ...

    def fit(self, X: Any, y: Any = ..., **fit_params: Any) -> Any: ...


E = TypeVar("E", bound=_Estimator)
Batches = Sequence[Any] | Callable[..., Iterable[Any]]
Trusted = str | type | Sequence[str | type] | None
FORMAT = "taskpoint.sklearn/1"
DEFAULT_TRUSTED = persist.DEFAULT_TRUSTED
__all__ = ["DEFAULT_TRUSTED", "fit_incremental", "fit_warm_start"]


def fit_incremental(
    estimator: E,
    batches: Batches,
    *,
    epochs: int = 1,
    classes: Any = None,
    every_n_steps: int | Literal["auto"] = 1,
    checkpoint: Checkpoint | None = None,
    trusted: Trusted = None,
) -> E:
    """Train ``estimator`` with ``partial_fit`` over ``batches`` for ``epochs`` epochs, resuming
    at the first untrained batch recorded in the checkpoint. Returns ``estimator``. It saves
    every ``every_n_steps`` batches, or with ``"auto"`` when ``checkpoint.due()`` says.

    Examples:
        >>> import tempfile
        >>> import numpy as np
        >>> from sklearn.linear_model import SGDClassifier
        >>> from taskpoint import Checkpoint
        >>> from taskpoint.integrations.sklearn import fit_incremental
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(200, 4))
        >>> y = (X[:, 0] > 0).astype(int)
        >>> batches = [(X[i:i + 20], y[i:i + 20]) for i in range(0, 200, 20)]
        >>> cp = Checkpoint.open(tempfile.mkdtemp())      # inside a task: the task's own
        >>> clf = fit_incremental(SGDClassifier(random_state=0), batches, epochs=2,
        ...                       classes=[0, 1], every_n_steps=5, checkpoint=cp)
        >>> cp.latest().step                              # 2 epochs of 10 batches
        20
        >>> again = fit_incremental(SGDClassifier(random_state=0), batches, epochs=2,
        ...                         classes=[0, 1], checkpoint=cp)  # resumes: nothing left
        >>> bool(np.array_equal(again.coef_, clf.coef_))
        True
        >>> cp.close()
    """
    if not callable(getattr(estimator, "partial_fit", None)):
        raise TypeError(f"{type(estimator).__name__} has no partial_fit(): use fit_warm_start()")
    _check_positive(epochs=epochs)
    every_n_steps = kit.check_every_n_steps(every_n_steps)
    run = _Run(estimator, checkpoint, trusted, "incremental")
    meta = run.restore()
    first, start = (int(meta["epoch"]), int(meta["batch"])) if meta else (0, 0)
    trained = int(meta["trained"]) if meta else 0
    for epoch in range(first, epochs):
        if meta is not None and epoch == int(meta["epoch"]):
            persist.restore_rng(meta["rng_epoch"])
        else:
            start = 0
        epoch_rng = persist.capture_rng()
        index = start
        for batch in _epoch_batches(batches, epoch, start, meta):
            meta = None  # the saved position is reached: RNG now as when it was saved
            _partial_fit(estimator, batch, classes)
            index, trained = index + 1, trained + 1
            position = {"epoch": epoch, "batch": index, "trained": trained}
            if kit.cadence_due(every_n_steps, trained, run.checkpoint) or run.preempted():
                run.save(position, epoch_rng, blocking=run.preempted())
        meta = None
        rng = persist.capture_rng()
        run.save({"epoch": epoch + 1, "batch": 0, "trained": trained}, rng)
    run.finish()
    return estimator


def fit_warm_start(
    estimator: E,
    X: Any,
    y: Any = None,
    *,
    param: str = "n_estimators",
    until: int,
    step: int = 10,
    checkpoint: Checkpoint | None = None,
    trusted: Trusted = None,
    sample_weight: Any = None,
) -> E:
    """Grow a ``warm_start`` estimator ``step`` at a time up to ``param=until``, saving after each
    fit and resuming from the last saved size. Returns ``estimator``.

    Examples:
        >>> import tempfile
        >>> import numpy as np
        >>> from sklearn.ensemble import RandomForestClassifier
        >>> from taskpoint import Checkpoint
        >>> from taskpoint.integrations.sklearn import fit_warm_start
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(100, 4))
        >>> y = (X[:, 0] > 0).astype(int)
        >>> cp = Checkpoint.open(tempfile.mkdtemp())      # inside a task: the task's own
        >>> forest = RandomForestClassifier(random_state=0)
        >>> _ = fit_warm_start(forest, X, y, until=20, step=10, checkpoint=cp)  # then a crash
        >>> resumed = fit_warm_start(RandomForestClassifier(random_state=0), X, y,
        ...                          until=30, step=10, checkpoint=cp)  # fits only 10 more
        >>> len(resumed.estimators_), [v.step for v in cp.versions()]
        (30, [20, 30])
        >>> cp.close()
    """
    params = estimator.get_params(deep=False) if hasattr(estimator, "get_params") else {}
    if "warm_start" not in params or param not in params:
        raise TypeError(
            f"{type(estimator).__name__} needs the parameters 'warm_start' and {param!r} for "
            "fit_warm_start(); use fit_incremental() for estimators with partial_fit()"
        )
    _check_positive(until=until, step=step)
    run = _Run(estimator, checkpoint, trusted, "warm_start")
    meta = run.restore()
    done = 0
    if meta is not None:
        if meta["param"] != param:
            raise CheckpointError(
                f"the checkpoint at {run.checkpoint.url} grew {meta['param']!r}, not {param!r}"
            )
        done = int(meta["value"])
        persist.restore_rng(meta["rng_now"])
    estimator.set_params(warm_start=True)
    fit_params = {} if sample_weight is None else {"sample_weight": sample_weight}
    while done < until:
        done = min(done + step, until)
        estimator.set_params(**{param: done})
        estimator.fit(X, y, **fit_params)
        rng = persist.capture_rng()
        run.save({"param": param, "value": done}, rng, blocking=run.preempted())
    run.finish()
    return estimator


class _Run:
    """The checkpoint side of one fit_* call: restore, save, preemption, finish."""

    def __init__(self, estimator: Any, checkpoint: Any, trusted: Trusted, kind: str) -> None:
        self.estimator, self.kind = estimator, kind
        self.trusted = persist.trusted_names(trusted)
        self.checkpoint, self.context = kit.task_checkpoint(checkpoint, f"fit_{kind}()")

    def restore(self) -> dict[str, Any] | None:
        blob = self.checkpoint.read()
        if blob is None:
            return None
        where = self.checkpoint.url
        meta, payload = persist.decode(blob, where)
        if meta.get("format") != FORMAT or meta.get("kind") != self.kind:
            raise CheckpointError(
                f"the latest checkpoint at {where} holds a {meta.get('kind')!r} state of format "
                f"{meta.get('format')!r}, not one of fit_{self.kind}(); use a checkpoint scope "
                "of its own for each fit_* call"
            )
        loaded = persist.loads(payload, self.trusted, where)
        if type(loaded) is not type(self.estimator):
            raise CheckpointError(
                f"the checkpoint at {where} holds a {type(loaded).__name__}, but "
                f"{type(self.estimator).__name__} was passed; pass the same estimator class, or "
                "use a new checkpoint scope"
            )
        self.estimator.__dict__.clear()
        self.estimator.__dict__.update(vars(loaded))
        return meta

    def save(
        self, position: dict[str, Any], rng_epoch: dict[str, Any], *, blocking: bool = False
    ) -> None:
        meta = {"format": FORMAT, "kind": self.kind, **position}
        meta["rng_epoch"], meta["rng_now"] = rng_epoch, persist.capture_rng()
        blob = persist.encode(meta, persist.dumps(self.estimator))
        step = position.get("trained", position.get("value"))
        self.checkpoint.write(blob, step=step, metadata=position, blocking=blocking)

    def preempted(self) -> bool:
        return bool(self.context is not None and self.context.preempted)

    def finish(self) -> None:
        self.checkpoint.wait()


def _epoch_batches(
    batches: Batches, epoch: int, start: int, meta: dict[str, Any] | None
) -> Iterator[Any]:
    """The batches of ``epoch`` from index ``start`` on; the saved RNG state is put back once
    the batches before ``start`` are passed, before the next one is produced."""
    source = (
        (batches(epoch) if _takes_epoch(batches) else batches()) if callable(batches) else batches
    )
    if isinstance(source, Sequence):
        items: Iterator[Any] = (source[i] for i in range(start, len(source)))
    else:
        items = iter(source)
        for _ in islice(items, start):
            pass
    if meta is not None and start > 0:
        persist.restore_rng(meta["rng_now"])
    yield from items


def _takes_epoch(function: Callable[..., Any]) -> bool:
    try:
        inspect.signature(function).bind(0)
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins): assume it takes the epoch
        return True
    return True


def _partial_fit(estimator: Any, batch: Any, classes: Any) -> None:
    if isinstance(batch, tuple):
        if not 1 <= len(batch) <= 3:
            raise ValueError(f"a batch is (X,), (X, y) or (X, y, sample_weight), not {len(batch)}")
        X, y, weight = (*batch, None, None)[:3]
    else:
        X, y, weight = batch, None, None
    kwargs: dict[str, Any] = {}
    if classes is not None:
        kwargs["classes"] = classes
    if weight is not None:
        kwargs["sample_weight"] = weight
    if y is None:
        estimator.partial_fit(X, **kwargs)
    else:
        estimator.partial_fit(X, y, **kwargs)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
