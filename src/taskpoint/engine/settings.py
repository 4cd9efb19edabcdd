"""Kept for old imports: configuration lives in an explicit ``Engine`` (``engine/config.py``)."""

from taskpoint.engine.config import DEFAULT_GRACE, Engine, configure, default_engine

__all__ = ["DEFAULT_GRACE", "Engine", "configure", "default_engine"]
