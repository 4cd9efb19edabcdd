"""A workflow with a pydantic model parameter (the test skips without pydantic)."""

from __future__ import annotations

import pydantic

from taskpoint import workflow


class Schedule(pydantic.BaseModel):
    epochs: int
    warmup: float = 0.0


@workflow
def scheduled(schedule: Schedule) -> str:
    return f"{schedule.epochs}|{schedule.warmup}"
