"""Parameter descriptions from a function's docstring, for ``taskpoint run FILE NAME --help``.

Two common layouts are read: Google style (an ``Args:`` or ``Parameters:`` section of
``name (type): text`` entries) and numpydoc (a ``Parameters`` heading underlined with dashes,
``name : type`` lines with the text indented below). Anything else leaves parameters without a
description; the summary (the docstring before any section) becomes the command's help.
"""

from __future__ import annotations

import inspect
import re

_GOOGLE_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params)\s*:\s*$")
_GOOGLE_ENTRY = re.compile(r"^(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_UNDERLINE = re.compile(r"^-{3,}\s*$")
_NUMPY_ENTRY = re.compile(r"^([\w*][\w*, ]*?)\s*(:.*)?$")
# Headings that end a section: Google's "Returns:" and friends, or a numpydoc heading.
_ANY_GOOGLE_HEADING = re.compile(r"^[A-Z][A-Za-z ]*:\s*$")


def split_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """``(summary, {parameter: description})`` of a docstring."""
    text = inspect.cleandoc(doc or "")
    lines = text.splitlines()
    params: dict[str, str] = {}
    summary_end = len(lines)
    for i, line in enumerate(lines):
        if _GOOGLE_SECTION.match(line.strip()) and not line.startswith(" "):
            summary_end = min(summary_end, i)
            params.update(_google_entries(lines[i + 1 :]))
        elif (
            line.strip() in ("Parameters", "Other Parameters")
            and i + 1 < len(lines)
            and _NUMPY_UNDERLINE.match(lines[i + 1])
        ):
            summary_end = min(summary_end, i)
            params.update(_numpy_entries(lines[i + 2 :]))
        elif i + 1 < len(lines) and _NUMPY_UNDERLINE.match(lines[i + 1]) and line.strip():
            summary_end = min(summary_end, i)  # another numpydoc section (Returns, Notes...)
        elif _ANY_GOOGLE_HEADING.match(line) and i > 0 and not lines[i - 1].strip():
            summary_end = min(summary_end, i)
    summary = "\n".join(lines[:summary_end]).strip()
    return summary, params


def _google_entries(lines: list[str]) -> dict[str, str]:
    entries: dict[str, list[str]] = {}
    indent: int | None = None
    current: str | None = None
    for line in lines:
        if not line.strip():
            if current is not None:
                entries[current].append("")
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:
            break  # the section ended (next heading or text)
        if indent is None:
            indent = depth
        match = _GOOGLE_ENTRY.match(line.strip())
        if depth == indent and match:
            current = match.group(1).lstrip("*")
            entries[current] = [match.group(3)]
        elif current is not None:
            entries[current].append(line.strip())
    return {name: _joined(parts) for name, parts in entries.items()}


def _numpy_entries(lines: list[str]) -> dict[str, str]:
    entries: dict[str, list[str]] = {}
    current: str | None = None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        if i + 1 < len(lines) and _NUMPY_UNDERLINE.match(lines[i + 1]):
            break  # the next section's heading
        if not line.startswith((" ", "\t")):
            match = _NUMPY_ENTRY.match(line.strip())
            if match is None:
                break
            names = [n.strip().lstrip("*") for n in match.group(1).split(",")]
            current = names[0]
            entries[current] = []
        elif current is not None:
            entries[current].append(line.strip())
    return {name: _joined(parts) for name, parts in entries.items()}


def _joined(parts: list[str]) -> str:
    return " ".join(p for p in parts if p).strip()
