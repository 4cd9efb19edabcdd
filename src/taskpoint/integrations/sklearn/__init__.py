"""scikit-learn: incremental and warm-start training that resumes where a failed attempt stopped.

```python
from sklearn.linear_model import SGDClassifier
from sklearn.ensemble import RandomForestClassifier
from taskpoint import task
from taskpoint.integrations.sklearn import fit_incremental, fit_warm_start

@task(retries=3)
def train_sgd() -> float:
    clf = SGDClassifier(random_state=0)
    fit_incremental(clf, lambda epoch: shuffled_batches(seed=epoch), epochs=5,
                    classes=[0, 1], every_n_steps=10)          # resumes at the next unseen batch
    return clf.score(X_test, y_test)

@task(retries=3)
def train_forest() -> float:
    forest = RandomForestClassifier(random_state=0)
    fit_warm_start(forest, X, y, param="n_estimators", until=500, step=50)  # saves every 50 trees
    return forest.score(X_test, y_test)
```

Both take ``checkpoint=`` (keyword-only; default: ``taskpoint.current_context().checkpoint``;
outside a task it must be given) and ``trusted=``,
and return the estimator they were given, fitted. On a retried attempt the estimator saved in the
checkpoint replaces the state of the one passed (same class required), so the caller's object is
the resumed model.

`fit_incremental` calls ``estimator.partial_fit`` on each batch of each epoch. ``batches`` is a
sequence of batches, or a callable ``batches(epoch)`` (or ``batches()``) returning an iterable of
them, called once per epoch; a batch is ``(X, y)``, ``(X, y, sample_weight)``, ``(X,)`` or ``X``.
``classes`` is passed to every ``partial_fit`` call when given. It saves after every
``every_n_steps`` trained batches (``"auto"``: when ``checkpoint.due()`` says, asked after each
batch) and at the end of each epoch, recording (epoch, batch index); a
resumed attempt continues at the first batch not yet trained: a sequence is indexed from there (the
batches before are not loaded), an iterable is advanced past them (they are produced but not
trained on).

`fit_warm_start` grows a ``warm_start`` estimator: it sets ``warm_start=True`` and fits with
``param`` set to ``step``, ``2 * step``, ... up to ``until``, saving after each fit; a resumed
attempt continues from the last saved size (``sample_weight`` is passed to ``fit`` if given).

**What is resumed exactly:** the whole fitted estimator (skops round-trips its attributes
bitwise: coefficients, trees, counters such as ``t_``, a ``RandomState`` held inside it), the
position (epoch and batch, or the fitted size), and the global RNG states of Python ``random`` and
NumPy both at the start of the interrupted epoch (restored before ``batches(epoch)`` is called, so a
shuffle drawn from the global generator repeats) and at the saved point (restored before the next
batch is produced). With estimators whose ``random_state`` is an int (or seeded globally) the
resumed model therefore predicts exactly like one trained without interruption.

**Not resumed / requirements:** ``batches`` must produce the same batches for the same epoch on
every attempt; work after the last save is redone; state outside the estimator (your own
variables, other RNGs) is not saved; a different estimator class in the checkpoint is refused.

**Loading is safe by construction:** estimators are stored with ``skops.io``, never pickled. Before
anything is imported or built, every type in the checkpoint that skops does not trust by default
must be in an explicit list, `DEFAULT_TRUSTED` -- ``sklearn.tree._tree.Tree`` (needed by tree
ensembles; each loaded tree is checked for out-of-range node and feature indices before use) and
the MLP solver states ``AdamOptimizer``/``SGDOptimizer`` -- plus the names you pass in
``trusted=``. Anything else is refused with `~taskpoint.CheckpointError` naming the type, and
nothing runs. Pass ``trusted=["mymodule.MyEstimator"]`` only for types you wrote or reviewed.
"""

from __future__ import annotations

from taskpoint.integrations import _toolkit as kit
from taskpoint.integrations.sklearn.fitting import (
    DEFAULT_TRUSTED,
    fit_incremental,
    fit_warm_start,
)

__all__ = ["DEFAULT_TRUSTED", "fit_incremental", "fit_warm_start"]

kit.publish(__name__, fit_incremental, fit_warm_start)
