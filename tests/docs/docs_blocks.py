"""Find the fenced code blocks of the docs and what each one needs (docs/CONTRIBUTING-docs.md).

A block is the text between an opening fence (three or more backticks or tildes, optionally
indented, as inside an admonition or a content tab) and a closing fence of the same character,
at least as long. The line right before the opening fence may hold a marker comment:
``<!-- not run: REASON -->`` or ``<!-- run: continue, timeout=SECONDS, needs=MODULE -->``.

Every block gets one of these actions: ``run`` (python), ``doctest`` (pycon), ``parse-json``,
``parse-toml``, ``show`` (text), ``skip`` (a ``not run`` marker with its reason) or ``refuse``
(with what is wrong): a block nobody decided about fails the test instead of being ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RUN = {"python", "py"}
DOCTEST = {"pycon"}
PARSE = {"json": "parse-json", "toml": "parse-toml"}
SHOW = {"text", "txt"}
DEFAULT_TIMEOUT = 120.0

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>not run|run)\s*:(?P<body>.*?)-->\s*$")
_ANY_MARKER = re.compile(r"^\s*<!--\s*(not[ -]?run|run)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Marker:
    not_run: str | None = None  # the reason, when the block is not run
    cont: bool = False
    timeout: float | None = None
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: Marker | None
    problem: str | None = None  # a malformed marker or fence

    @property
    def where(self) -> str:
        try:
            shown = self.path.relative_to(ROOT)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}"

    @property
    def action(self) -> str:
        if self.problem:
            return "refuse"
        if self.marker is not None and self.marker.not_run is not None:
            return "skip"
        if self.lang in RUN:
            return "run"
        if self.marker is not None:
            return "refuse"  # run: options only apply to python blocks
        if self.lang in DOCTEST:
            return "doctest"
        if self.lang in PARSE:
            return PARSE[self.lang]
        if self.lang in SHOW:
            return "show"
        return "refuse"

    @property
    def refusal(self) -> str:
        if self.problem:
            return self.problem
        if self.marker is not None and self.lang not in RUN:
            return f"a 'run:' marker on a {self.lang or 'plain'} block (only python blocks run)"
        if not self.lang:
            return "a fence without a language: say python, text, json, ... or mark it not run"
        return (
            f"```{self.lang} is neither run nor marked: add "
            "<!-- not run: REASON --> on the line before the fence"
        )


def parse_marker(text: str) -> Marker | str:
    """The marker in ``text`` (one line), or a message saying what is wrong with it."""
    match = _MARKER.match(text)
    if match is None:
        return "a marker must read <!-- not run: REASON --> or <!-- run: OPTIONS -->"
    body = match.group("body").strip()
    if match.group("kind") == "not run":
        if not body:
            return "a 'not run' marker needs a reason after the colon"
        return Marker(not_run=body)
    cont, timeout, needs = False, None, []
    for option in filter(None, (part.strip() for part in body.split(","))):
        name, _, value = option.partition("=")
        if option == "continue":
            cont = True
        elif name == "timeout" and value:
            try:
                timeout = float(value)
            except ValueError:
                return f"timeout={value!r} is not a number of seconds"
        elif name == "needs" and value:
            needs.append(value)
        else:
            return f"unknown run option {option!r} (continue, timeout=SECONDS, needs=MODULE)"
    return Marker(cont=cont, timeout=timeout, needs=tuple(needs))


def _language(info: str) -> str:
    info = info.strip()
    if info.startswith("{"):  # attribute-list style: ``` { .python title="x" }
        classes = re.findall(r"\.([\w+-]+)", info)
        return classes[0].lower() if classes else ""
    return info.split()[0].lower() if info else ""


def blocks_in(text: str, path: Path) -> Iterator[Block]:
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        lang = _language(opening.group("info"))
        body: list[str] = []
        j = i + 1
        closed = False
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if (
                closing is not None
                and closing.group("fence")[0] == fence[0]
                and len(closing.group("fence")) >= len(fence)
                and not closing.group("info").strip()
            ):
                closed = True
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        marker: Marker | None = None
        problem = None if closed else "the fence is never closed"
        previous = lines[i - 1] if i > 0 else ""
        if _ANY_MARKER.match(previous):
            parsed = parse_marker(previous)
            if isinstance(parsed, str):
                problem = problem or parsed
            else:
                marker = parsed
        yield Block(path, i + 1, lang, "\n".join(body) + "\n", marker, problem)
        i = j + 1


def doc_files() -> list[Path]:
    """The pages the tests check: every Markdown file under docs/, and the README."""
    return [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]


@dataclass
class Program:
    """One or more python blocks of a file run together (``run: continue`` chains them)."""

    blocks: list[Block] = field(default_factory=list)

    @property
    def where(self) -> str:
        return self.blocks[0].where

    @property
    def code(self) -> str:
        return "".join(block.code for block in self.blocks)

    @property
    def timeout(self) -> float:
        given = [b.marker.timeout for b in self.blocks if b.marker and b.marker.timeout]
        return max(given, default=DEFAULT_TIMEOUT)

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for b in self.blocks if b.marker for n in b.marker.needs))


def programs_in(blocks: list[Block]) -> tuple[list[Program], list[Block]]:
    """The runnable programs of one file's blocks, and the blocks refused for their chaining."""
    programs: list[Program] = []
    refused: list[Block] = []
    for block in blocks:
        if block.action != "run":
            continue
        if block.marker is not None and block.marker.cont:
            if not programs:
                refused.append(block)
                continue
            programs[-1].blocks.append(block)
        else:
            programs.append(Program([block]))
    return programs, refused
