"""The ``>>>`` examples in the docstrings of every public name run, and every public name has one.

Public names are ``taskpoint.__all__`` and each integration's ``__all__`` (read from its source,
so listing them imports no framework). An integration whose framework is not installed here is
skipped with the reason; CI's main environment has all but Flink.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
import io
import os
import sys
from pathlib import Path

import pytest

import taskpoint
from taskpoint.errors import TaskpointError

INTEGRATIONS = ("torch", "lightning", "keras", "sklearn", "spark", "flink")
SRC = Path(taskpoint.__file__).parent
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def exported(module: str) -> list[str]:
    """``module.__all__`` read from the source, without importing the module."""
    relative = Path(*module.split(".")[1:])
    path = SRC / relative / "__init__.py"
    if not path.exists():
        path = (SRC / relative).with_suffix(".py")
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return [ast.literal_eval(elt) for elt in node.value.elts]  # type: ignore[attr-defined]
    raise AssertionError(f"{path} has no __all__")


PUBLIC = [("taskpoint", name) for name in taskpoint.__all__ if not name.startswith("__")] + [
    (f"taskpoint.integrations.{name}", public)
    for name in INTEGRATIONS
    for public in exported(f"taskpoint.integrations.{name}")
]


def _object(module: str, name: str, monkeypatch: pytest.MonkeyPatch) -> object:
    if (
        module.endswith(".keras")
        and "keras" not in sys.modules
        and not os.environ.get("KERAS_BACKEND")
    ):
        # Keras picks its backend once, at import, from the environment or ~/.keras/keras.json
        # (which Keras itself writes with "tensorflow" on a first import without one).
        monkeypatch.setenv("KERAS_BACKEND", "torch")
    try:
        imported = importlib.import_module(module)
    except (ImportError, TaskpointError) as exc:  # the framework of an integration is missing
        pytest.skip(f"{module} cannot be imported here: {exc}")
    return getattr(imported, name)


def _examples(module: str, name: str, obj: object) -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    owner = inspect.getmodule(obj) or importlib.import_module(module)
    return finder.find(obj, f"{module}.{name}", module=owner, globs=dict(vars(owner)))


def _documented(obj: object) -> bool:
    # Constants (DEFAULT_TRUSTED) are documented by their module's docstring: only classes and
    # functions carry docstrings of their own.
    return inspect.isclass(obj) or callable(obj)


@pytest.mark.parametrize("module,name", PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_docstring_examples_run(
    module: str, name: str, tp_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    obj = _object(module, name, monkeypatch)
    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = io.StringIO()
    for test in _examples(module, name, obj):
        runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()


@pytest.mark.parametrize("module,name", PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_public_name_has_a_docstring_with_an_example(
    module: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    obj = _object(module, name, monkeypatch)
    if not _documented(obj):
        pytest.skip(f"{module}.{name} is a constant: documented in its module's docstring")
    assert inspect.getdoc(obj), f"{module}.{name} has no docstring"
    examples = sum(len(test.examples) for test in _examples(module, name, obj))
    assert examples > 0, f"{module}.{name} has no >>> example in its docstrings"


def test_exported_reads_all_without_importing() -> None:
    assert exported("taskpoint.integrations.torch") == ["ResumableSampler", "TorchCheckpointer"]
    assert exported("taskpoint.integrations.lightning") == ["LightningCheckpointer"]
