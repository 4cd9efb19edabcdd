"""Which ``pip install 'taskpoint[...]'`` brings a missing module, for error messages."""

from __future__ import annotations

# Top-level module name -> the taskpoint extra that installs it.
EXTRA_OF_MODULE: dict[str, str] = {
    "torch": "torch",
    "numpy": "torch",
    "lightning": "lightning",
    "pytorch_lightning": "lightning",
    "keras": "keras",
    "sklearn": "sklearn",
    "skops": "sklearn",
    "dask": "dask",
    "distributed": "dask",
    "s3fs": "s3",
    "pyspark": "spark",
    "pyflink": "flink",
}


def install_hint(error: BaseException) -> str | None:
    """``pip install 'taskpoint[torch]'`` when ``error`` is a missing module an extra brings."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None
    extra = EXTRA_OF_MODULE.get(error.name.split(".", 1)[0])
    return f"pip install 'taskpoint[{extra}]'" if extra else None
