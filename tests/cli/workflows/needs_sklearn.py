"""A workflow file that needs scikit-learn at import (the test hides it)."""

from __future__ import annotations

import sklearn  # noqa: F401

from taskpoint import workflow


@workflow
def fit() -> int:
    return 1
