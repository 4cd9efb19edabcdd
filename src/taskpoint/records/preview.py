"""Bounded previews of inputs, outputs and results, stored in the records at write time.

Read-only views (``list``, ``show``, ``checkpoints``, the web view) never unpickle anything
(DESIGN.md, trust boundaries): whoever can write the blob store could plant a pickle that runs
code. They show these previews instead. A preview is JSON text, one of::

    {"json": <value>}    the value itself, when it is plain data (str, int, float, bool, None,
                         lists and str-keyed dicts of those) and small
    {"repr": "<text>"}   otherwise a bounded ``repr`` (at most PREVIEW_CHARS characters)

Making one costs a few microseconds for small values and stays bounded for large ones: the
plain-data walk stops after PLAIN_ITEMS items, and the ``repr`` is built by `reprlib` with
small limits (only an object's own ``__repr__`` is called in full, then truncated).
"""

from __future__ import annotations

import itertools
import json
import math
import reprlib
from typing import Any

PREVIEW_CHARS = 1000
PLAIN_ITEMS = 1000  # containers and scalars walked before a value is not "small plain data"
PLAIN_DEPTH = 20
NO_PREVIEW = "(no preview stored)"
_ENCODER = json.JSONEncoder()  # one instance (json.dumps with options makes one per call)


class _BoundedRepr(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 4
        self.maxtuple = self.maxlist = self.maxarray = self.maxdeque = 30
        self.maxdict = self.maxset = self.maxfrozenset = 30
        self.maxstring = self.maxother = PREVIEW_CHARS
        self.maxlong = 100

    # reprlib sorts a dict's or a set's items first: a large one would cost O(n log n).
    def repr_dict(self, value: dict, level: int) -> str:
        if not value:
            return "{}"
        if level <= 0:
            return "{...}"
        items = [
            f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
            for k, v in itertools.islice(value.items(), self.maxdict)
        ]
        return "{" + ", ".join(items) + (", ...}" if len(value) > self.maxdict else "}")

    def repr_set(self, value: set, level: int) -> str:
        return self._unsorted(value, level, "{", "}") if value else "set()"

    def repr_frozenset(self, value: frozenset, level: int) -> str:
        return self._unsorted(value, level, "frozenset({", "})") if value else "frozenset()"

    def _unsorted(self, value: Any, level: int, left: str, right: str) -> str:
        if level <= 0:
            return left + "..." + right
        items = [self.repr1(v, level - 1) for v in itertools.islice(value, self.maxset)]
        return left + ", ".join(items) + (", ..." if len(value) > self.maxset else "") + right

    def repr_bytes(self, value: bytes, level: int) -> str:
        return self._truncated(bytes(value[: PREVIEW_CHARS // 2]), len(value))

    def repr_bytearray(self, value: bytearray, level: int) -> str:
        return f"bytearray({self._truncated(bytes(value[: PREVIEW_CHARS // 2]), len(value))})"

    @staticmethod
    def _truncated(head: bytes, total: int) -> str:
        text = repr(head)
        return text if len(head) == total else f"{text[:-1]}...{text[-1]} ({total} bytes)"


_repr = _BoundedRepr()


def bounded_repr(value: Any) -> str:
    """``repr(value)``, bounded to PREVIEW_CHARS characters; never raises."""
    try:
        text = _repr.repr(value)
    except Exception as exc:  # a __repr__ that fails, an int too long to print
        text = f"<{type(value).__qualname__} object (repr failed: {type(exc).__name__})>"
    if not isinstance(text, str):
        text = f"<{type(value).__qualname__} object>"
    text = text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."
    # A lone surrogate cannot be stored or printed: show it escaped.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _is_plain(value: Any) -> bool:
    """Plain, small JSON data whose ``repr`` is the same after a JSON round trip."""
    if value is None or type(value) in (int, bool):
        return True
    budget = PLAIN_ITEMS
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        budget -= 1
        if budget < 0 or depth > PLAIN_DEPTH:
            return False
        kind = type(item)  # exact types: a subclass (an enum, a str subclass) reprs differently
        if kind is str:
            if len(item) > PREVIEW_CHARS:  # never encode a large string to find out
                return False
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif kind is list or kind is dict:
            if len(item) > budget:  # never walk a large container
                return False
            if kind is dict:
                if any(type(k) is not str for k in item):
                    return False
                item = item.values()
            stack.extend((v, depth + 1) for v in item)
        elif kind is not int and kind is not bool and item is not None:
            return False
    return True


def _plain_json(value: Any) -> str | None:
    """The JSON text of ``value`` when it is small plain data, else ``None``."""
    if not _is_plain(value):
        return None
    try:
        text = _ENCODER.encode(value)
    except ValueError:  # an int too long to print
        return None
    return text if len(text) <= PREVIEW_CHARS else None


def plain_or_repr(value: Any) -> Any:
    """``value`` when it is small plain data (JSON carries it as is), else its bounded repr."""
    return value if _plain_json(value) is not None else bounded_repr(value)


def make_preview(value: Any) -> str:
    """The preview of ``value`` to store in the records (JSON text, see the module doc)."""
    text = _plain_json(value)
    if text is not None:
        return f'{{"json": {text}}}'
    return json.dumps({"repr": bounded_repr(value)})  # ASCII: any text survives SQLite


def inputs_preview(arguments: dict[str, Any]) -> str:
    """The ``inputs`` column: a JSON object, each argument as itself or its bounded repr."""
    return json.dumps({name: plain_or_repr(v) for name, v in arguments.items()})


def _parse(preview: str | None) -> dict[str, Any] | None:
    if preview is None:
        return None
    try:
        doc = json.loads(preview)
    except (ValueError, RecursionError):
        return {"repr": "(preview unreadable)"}
    if isinstance(doc, dict) and len(doc) == 1 and ("json" in doc or "repr" in doc):
        return doc
    return {"repr": "(preview unreadable)"}


def preview_value(preview: str | None) -> Any:
    """What JSON output shows: the value, or its repr text; ``None`` without a preview."""
    doc = _parse(preview)
    if doc is None:
        return None
    return doc["json"] if "json" in doc else str(doc["repr"])


def preview_text(preview: str | None) -> str:
    """What a person reads: the value's repr, or NO_PREVIEW when none was stored."""
    doc = _parse(preview)
    if doc is None:
        return NO_PREVIEW
    if "repr" in doc:
        return str(doc["repr"])
    try:
        text = repr(doc["json"])  # small plain data: repr as Python shows it (keys in order)
    except RecursionError:
        return "(preview unreadable)"
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."
