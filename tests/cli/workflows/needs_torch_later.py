"""A task that imports torch only when it runs (the test hides it)."""

from __future__ import annotations

from taskpoint import task


@task
def train() -> int:
    import torch

    return int(torch.ones(1).item())
