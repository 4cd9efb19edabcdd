"""scikit-learn: incremental (``partial_fit``) and warm-start training that resume exactly.

    taskpoint run examples/sklearn_incremental.py pipeline --fail-at-batch 70
    taskpoint run examples/sklearn_incremental.py pipeline --fail-at-batch -1   # never fails

``train_sgd`` trains an ``SGDClassifier`` over shuffled batches for 3 epochs with
``fit_incremental``; its first attempt fails at batch 70 and the retry continues at the first batch
not yet saved. ``grow_forest`` grows a ``RandomForestClassifier`` 20 trees at a time with
``fit_warm_start``; its first attempt fails after 60 trees and the retry keeps them. Estimators are
stored with skops (never pickle) and loaded only if every type in them is trusted. The scores
printed are the same whether or not a failure happened.
"""

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import SGDClassifier

from taskpoint import RecoverableError, current_context, task, workflow
from taskpoint.integrations.sklearn import fit_incremental, fit_warm_start

BATCHES, BATCH_SIZE = 40, 50


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 20))
    y = np.digitize(X[:, 0] + X[:, 1] - 0.5 * X[:, 2], [-1.0, 1.0])
    return X, y


X_TRAIN, Y_TRAIN = make_data(BATCHES * BATCH_SIZE, seed=0)
X_TEST, Y_TEST = make_data(1000, seed=1)


@task(retries=2)
def train_sgd(epochs: int, fail_at_batch: int) -> float:
    attempt = current_context().attempt
    seen = 0

    def batches(epoch: int):
        nonlocal seen
        order = np.random.default_rng(epoch).permutation(BATCHES)  # a new order every epoch
        for i in order:
            if attempt == 1 and seen == fail_at_batch:
                raise RecoverableError(f"simulated failure at batch {fail_at_batch}")
            seen += 1
            rows = slice(i * BATCH_SIZE, (i + 1) * BATCH_SIZE)
            yield X_TRAIN[rows], Y_TRAIN[rows]

    clf = SGDClassifier(random_state=0)
    fit_incremental(clf, batches, epochs=epochs, classes=[0, 1, 2], every_n_steps=10)
    return round(float(clf.score(X_TEST, Y_TEST)), 6)


@task(retries=2)
def grow_forest(trees: int, fail_after_trees: int) -> float:
    forest = RandomForestClassifier(random_state=0)
    if current_context().attempt == 1 and fail_after_trees > 0:
        fit_warm_start(forest, X_TRAIN, Y_TRAIN, until=fail_after_trees, step=20)
        raise RecoverableError(f"simulated failure after {fail_after_trees} trees")
    fit_warm_start(forest, X_TRAIN, Y_TRAIN, until=trees, step=20)  # resumes at the saved size
    return round(float(forest.score(X_TEST, Y_TEST)), 6)


@workflow
def pipeline(fail_at_batch: int = 70, epochs: int = 3, trees: int = 100) -> dict:
    return {
        "sgd_accuracy": train_sgd(epochs=epochs, fail_at_batch=fail_at_batch),
        "forest_accuracy": grow_forest(
            trees=trees, fail_after_trees=60 if fail_at_batch >= 0 else 0
        ),
    }
