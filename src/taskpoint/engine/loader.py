"""Find a workflow or task again: in a file (``taskpoint run FILE.py NAME``) or, on resume, by
the module, file and qualified name recorded with the execution."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from taskpoint.engine.task import Target
from taskpoint.errors import WorkflowLoadError
from taskpoint.extras import install_hint


def module_name_for(path: Path) -> str:
    """The stem when it is a free identifier (so pickles of classes in the file round-trip),
    else a private unique name."""
    stem = path.stem
    existing = sys.modules.get(stem)
    if stem.isidentifier() and (
        existing is None or Path(getattr(existing, "__file__", "") or "").resolve() == path
    ):
        return stem
    return "_taskpoint_" + re.sub(r"\W", "_", stem) + f"_{abs(hash(str(path))):x}"


def load_file(file: str | Path, module_name: str | None = None) -> ModuleType:
    path = Path(file).expanduser().resolve()
    if not path.is_file():
        raise WorkflowLoadError(f"no such file: {file}")
    name = module_name or module_name_for(path)
    existing = sys.modules.get(name)
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() == path:
        return existing
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise WorkflowLoadError(f"cannot import {file}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    # Like `python FILE.py`: the file's directory is importable, for its sibling modules.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        hint = install_hint(exc)
        if hint is not None:
            missing = getattr(exc, "name", None)
            raise WorkflowLoadError(
                f"{file} needs the Python package {missing!r}, which is not installed; "
                f"install it with: {hint}"
            ) from exc
        raise WorkflowLoadError(f"importing {file} failed: {type(exc).__name__}: {exc}") from exc
    return module


def targets_in(module: ModuleType) -> dict[str, Target]:
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, Target) and not name.startswith("_")
    }


def find_target(module: ModuleType, name: str, file: str | Path) -> Target:
    target = getattr(module, name, None)
    if isinstance(target, Target):
        return target
    known = ", ".join(sorted(targets_in(module))) or "none"
    what = "is not a @workflow or @task" if target is not None else "is not defined"
    raise WorkflowLoadError(f"{name!r} {what} in {file} (workflows and tasks there: {known})")


def load_recorded(module_name: str | None, file: str | None, qualname: str) -> Target:
    """The target an execution recorded, importing its module or file if needed."""
    module = None
    if module_name and module_name != "__main__":
        module = sys.modules.get(module_name)
        if module is None and file:
            module = load_file(file, module_name)
        elif module is None:
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise WorkflowLoadError(f"cannot import module {module_name}: {exc}") from exc
    elif file:
        module = load_file(file)
    if module is None:
        raise WorkflowLoadError(f"the execution recorded no module or file for {qualname}")
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise WorkflowLoadError(
                f"{qualname} is not found in {file or module_name} (it must be defined at module "
                "level to be resumed from another process)"
            )
    if not isinstance(obj, Target):
        raise WorkflowLoadError(f"{qualname} in {file or module_name} is not a @workflow or @task")
    return obj
