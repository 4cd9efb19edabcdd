"""Small synthetic data sets the integration tests train on: seeded, so every call (and every
attempt of a task) builds the same data. torch is imported by the builders, not here.

Suites that run themselves as a child script (``python test_keras.py child ...``,
``test_sklearn.py``) do not see ``tests/`` there and keep their data inline.
"""

from __future__ import annotations

from typing import Any


def linear_classes(
    n: int, features: int = 16, classes: int = 4, *, seed: int = 1234
) -> tuple[Any, Any]:
    """torch tensors ``x`` (``n`` x ``features``, standard normal) and ``y``, the class whose
    column of a random ``features`` x ``classes`` matrix scores highest; both drawn from one
    ``torch.Generator`` seeded with ``seed``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (x @ torch.randn(features, classes, generator=g)).argmax(1)
    return x, y


def indexed_linear_classes(n: int, **options: Any) -> Any:
    """`linear_classes` as a torch ``Dataset`` of ``(x, y, index)`` items, so that each batch
    says which samples it holds (a collated batch of indices is an int64 tensor)."""
    import torch

    x, y = linear_classes(n, **options)
    return torch.utils.data.TensorDataset(x, y, torch.arange(n))
