"""The API reference covers every public name: each object in ``taskpoint.__all__`` is rendered
by a ``::: PATH`` entry under docs/reference (by any path that leads to the same object), and
each integration module is rendered whole (its ``__all__``)."""

from __future__ import annotations

import importlib
import re

from docs_blocks import ROOT

import taskpoint

REFERENCE = ROOT / "docs" / "reference"
INTEGRATIONS = ("torch", "lightning", "keras", "sklearn", "spark", "flink")


def _identifiers() -> set[str]:
    found: set[str] = set()
    for page in REFERENCE.rglob("*.md"):
        found.update(re.findall(r"^:::\s+([\w.]+)", page.read_text(encoding="utf-8"), re.M))
    return found


def _resolve(path: str) -> object:
    """The object at a dotted path: the longest importable module, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ImportError(path)


def _rendered() -> list[object]:
    return [
        _resolve(identifier)
        for identifier in _identifiers()
        # Importing an integration needs its framework; the docs build reads them statically.
        if not identifier.startswith("taskpoint.integrations.")
    ]


def test_every_public_name_has_a_reference_entry() -> None:
    rendered = _rendered()
    missing = [
        name
        for name in taskpoint.__all__
        if not name.startswith("__")
        and not any(obj is getattr(taskpoint, name) for obj in rendered)
    ]
    assert not missing, f"no ::: entry under docs/reference renders {missing}"


def test_every_integration_has_a_reference_page() -> None:
    documented = _identifiers()
    missing = [n for n in INTEGRATIONS if f"taskpoint.integrations.{n}" not in documented]
    assert not missing, f"no ::: taskpoint.integrations.NAME page for {missing}"


def test_resolve_follows_the_module_then_attributes() -> None:
    from taskpoint.engine.task import task

    assert _resolve("taskpoint.engine.task.task") is task
    assert _resolve("taskpoint.Checkpoint.open") == taskpoint.Checkpoint.open
