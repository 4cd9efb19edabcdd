"""How the sklearn integration stores an estimator: skops, an explicit trust list, no pickle.

One checkpoint version is one blob in the integrations' envelope (see ``_toolkit``)::

    b"TPSKLRN1"            8 bytes magic
    header length          8 bytes, little-endian unsigned
    header                 UTF-8 JSON: progress (epoch, batch, ...) and the global RNG states
    skops payload          ``skops.io.dumps(estimator)`` (a zip of JSON + .npy files)

Loading never unpickles. The skops payload is audited before anything in it is built: every type
that skops does not trust by default must be in `DEFAULT_TRUSTED` or in the caller's ``trusted``,
otherwise `CheckpointError` names the refused types and nothing is imported or constructed.

`DEFAULT_TRUSTED` is what the supported estimators need beyond skops' defaults (computed with
``skops.io.get_untrusted_types`` on fitted SGD*, Perceptron, PassiveAggressive*, *NB, MLP*,
MiniBatchKMeans, IncrementalPCA, scalers, DecisionTree*, RandomForest*, ExtraTrees*, Bagging* and
GradientBoosting*):

- ``sklearn.neural_network._stochastic_optimizers.AdamOptimizer`` / ``SGDOptimizer``: the
  MLP's solver state between ``partial_fit`` calls (learning rates, moment arrays; no indices).
- ``sklearn.tree._tree.Tree``: skops leaves it out because a crafted tree holds raw node indices
  that scikit-learn follows without bounds checks, so ``predict`` on a malicious tree could read
  out of bounds. We trust it only together with `check_trees`, which verifies every loaded tree
  before it is used: children indices in range and pointing forward (so no cycles), leaves marked
  as leaves, split features below the estimator's ``n_features_in_``.

HistGradientBoosting's ``TreePredictor`` is not trusted by default (no such check for it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from taskpoint.errors import CheckpointError
from taskpoint.integrations import _toolkit as kit

MAGIC = b"TPSKLRN1"
WHAT = "an estimator state written by taskpoint.integrations.sklearn"
TREE = "sklearn.tree._tree.Tree"
_OPTIMIZERS = "sklearn.neural_network._stochastic_optimizers"
DEFAULT_TRUSTED: tuple[str, ...] = (
    TREE,
    f"{_OPTIMIZERS}.AdamOptimizer",
    f"{_OPTIMIZERS}.SGDOptimizer",
)


def encode(meta: dict[str, Any], payload: bytes) -> bytes:
    return kit.pack(MAGIC, kit.dump_header(meta)) + payload


def decode(blob: bytes, where: str) -> tuple[dict[str, Any], bytes]:
    meta, end = kit.unpack(blob, MAGIC, WHAT, where)
    return meta, bytes(blob[end:])


def dumps(estimator: Any) -> bytes:
    import skops.io

    try:
        return skops.io.dumps(estimator)
    except Exception as exc:
        raise CheckpointError(
            f"cannot save {type(estimator).__name__} with skops: {type(exc).__name__}: {exc}"
        ) from exc


def loads(payload: bytes, trusted: Iterable[str], where: str) -> Any:
    """Audit the skops payload against the trust list, then build it and check its trees."""
    import skops.io

    allowed = set(DEFAULT_TRUSTED) | set(trusted)
    try:
        needed = skops.io.get_untrusted_types(data=payload)
    except Exception as exc:
        raise CheckpointError(
            f"the estimator in the checkpoint at {where} is not a readable skops payload "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    refused = sorted(set(needed) - allowed)
    if refused:
        raise CheckpointError(
            f"refusing to load the estimator in the checkpoint at {where}: it contains types "
            f"that are not trusted: {', '.join(refused)}. Nothing was loaded. If you wrote this "
            f"checkpoint yourself and trust these types, pass trusted={refused!r}"
        )
    try:
        estimator = skops.io.loads(payload, trusted=sorted(needed))
    except Exception as exc:
        raise CheckpointError(
            f"cannot load the estimator in the checkpoint at {where}: {type(exc).__name__}: {exc}"
        ) from exc
    check_trees(estimator, where)
    return estimator


# --------------------------------------------------------------------------------- tree checks


def check_trees(estimator: Any, where: str) -> None:
    """Raise `CheckpointError` unless every ``Tree`` inside ``estimator`` is well formed."""
    for owner, tree in _trees(estimator, None, set()):
        n_features = getattr(owner, "n_features_in_", None)
        problem = _tree_problem(tree, n_features)
        if problem:
            raise CheckpointError(
                f"refusing the estimator in the checkpoint at {where}: a decision tree in it is "
                f"malformed ({problem}); the checkpoint is corrupt or was tampered with"
            )


def _trees(obj: Any, owner: Any, seen: set[int]) -> Iterator[tuple[Any, Any]]:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if type(obj).__module__ == "sklearn.tree._tree" and type(obj).__name__ == "Tree":
        yield owner, obj
        return
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            for item in obj.ravel():
                yield from _trees(item, owner, seen)
        return
    if isinstance(obj, dict):
        children: Iterable[Any] = obj.values()
    elif isinstance(obj, list | tuple | set | frozenset):
        children = obj
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("sklearn"):
        children, owner = vars(obj).values(), obj
    else:
        return
    for child in children:
        yield from _trees(child, owner, seen)


def _tree_problem(tree: Any, n_features: int | None) -> str | None:
    count = int(tree.node_count)
    left = np.asarray(tree.children_left)
    right = np.asarray(tree.children_right)
    feature = np.asarray(tree.feature)
    if not (len(left) == len(right) == len(feature) == count) or count < 1:
        return f"{count} nodes but arrays of {len(left)}, {len(right)}, {len(feature)}"
    limit = int(tree.n_features) if n_features is None else int(n_features)
    if int(tree.n_features) != limit:
        return f"tree has {tree.n_features} features, its estimator {limit}"
    index = np.arange(count)
    leaf = left == -1
    if np.any(leaf != (right == -1)):
        return "a node has exactly one child"
    inner = ~leaf
    if np.any((left[inner] <= index[inner]) | (left[inner] >= count)):
        return "a left child index is out of range or points backwards"
    if np.any((right[inner] <= index[inner]) | (right[inner] >= count)):
        return "a right child index is out of range or points backwards"
    if np.any((feature[inner] < 0) | (feature[inner] >= limit)):
        return "a split feature index is out of range"
    return None


# --------------------------------------------------------------------------------- RNG states


def capture_rng() -> dict[str, Any]:
    """Python ``random`` and NumPy's global generator as JSON."""
    scalars, bulk = kit.rng_parts(kit.capture_rng())
    (version, gauss), (name, *numpy) = scalars["python"], scalars["numpy"]
    return {
        "python": [version, bulk["python"].tolist(), gauss],
        "numpy": [name, bulk["numpy"].tolist(), *numpy],
    }


def restore_rng(state: dict[str, Any]) -> None:
    version, words, gauss = state["python"]
    name, key, *numpy = state["numpy"]
    scalars = {"python": [version, gauss], "numpy": [name, *numpy]}
    kit.restore_rng(kit.rng_whole(scalars, {"python": words, "numpy": key}))


def trusted_names(trusted: str | type | Sequence[str | type] | None) -> list[str]:
    """Normalise the user's ``trusted=`` argument to fully qualified type names."""
    if trusted is None:
        return []
    items = [trusted] if isinstance(trusted, str | type) else list(trusted)
    names = []
    for item in items:
        if isinstance(item, type):
            names.append(f"{item.__module__}.{item.__name__}")  # as skops names it
        elif isinstance(item, str):
            names.append(item)
        else:
            raise TypeError(f"trusted must hold type names or types, got {item!r}")
    return names
