"""A workflow whose parameters have every type the command line takes (run by path in tests)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from pathlib import Path
from typing import Literal

from taskpoint import workflow


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Optimizer:
    lr: float
    name: str = "adam"


@dataclasses.dataclass
class Config:
    optimizer: Optimizer
    layers: list[int]
    dropout: float | None = None


def _plain(value):
    """JSON-safe echo of what the workflow received, types included."""
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if dataclasses.is_dataclass(value):
        return {type(value).__name__: {k: _plain(v) for k, v in vars(value).items()}}
    if isinstance(value, dt.date | Path):
        return f"{type(value).__name__}({value})"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [type(value).__name__, [_plain(v) for v in sorted(value, key=repr)]]
    return value


@workflow
def typed(
    color: Color,
    config: Config,
    level: Level = Level.LOW,
    mode: Literal["fast", "exact"] = "fast",
    when: dt.datetime | None = None,
    day: dt.date = dt.date(2026, 1, 1),
    out: Path = Path("out.txt"),
    tags: list[str] | None = None,
    shape: tuple[int, int] = (1, 1),
    weights: dict[str, float] | None = None,
    limit: int | None = None,
) -> str:
    """Echo typed parameters.

    Args:
        color: Colour of the run.
        config: Model configuration, as a JSON object.
        level: How hard to try.
        mode (str): Either fast or exact;
            exact takes longer.

    Returns:
        A JSON text of what it received.
    """
    received = dict(
        color=color, config=config, level=level, mode=mode, when=when, day=day, out=out,
        tags=tags, shape=shape, weights=weights, limit=limit,
    )  # fmt: skip
    return json.dumps({k: _plain(v) for k, v in received.items()}, sort_keys=True)


@workflow
def numpy_documented(alpha: float, beta: int = 3) -> float:
    """Scale alpha.

    Parameters
    ----------
    alpha : float
        The value to scale.
    beta : int, optional
        The factor.

    Returns
    -------
    float
    """
    return alpha * beta
