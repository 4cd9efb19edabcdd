"""Every code block in docs/**/*.md and README.md runs, parses, or says why it does not.

Python blocks run as programs, each in a fresh interpreter with an empty temporary directory as
working directory and HOME, so a block cannot lean on state another block (or the developer's
machine) left behind. The convention is in docs/CONTRIBUTING-docs.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from importlib.util import find_spec
from pathlib import Path

import pytest
from docs_blocks import (
    ROOT,
    Block,
    Program,
    blocks_in,
    doc_files,
    parse_marker,
    programs_in,
)

FILES = doc_files()
BLOCKS = {path: list(blocks_in(path.read_text(encoding="utf-8"), path)) for path in FILES}
PROGRAMS = [program for blocks in BLOCKS.values() for program in programs_in(blocks)[0]]
PARSED = [
    block
    for blocks in BLOCKS.values()
    for block in blocks
    if block.action in ("parse-json", "parse-toml")
]
# A page's >>> blocks are one session, in page order, as `python -m doctest PAGE` would run them.
SESSIONS = {
    path: sessions
    for path, blocks in BLOCKS.items()
    if (sessions := [block for block in blocks if block.action == "doctest"])
}
_OUTPUT_TAIL = 4000


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("TASKPOINT_"):
            del env[name]  # the developer's own home or storage must not leak into a block
    env.update(
        HOME=str(home),
        TASKPOINT_HOME=str(home / ".taskpoint"),
        MPLBACKEND="Agg",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _run(argv: list[str], cwd: Path, timeout: float, where: str) -> None:
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=_env(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so a timeout kills the block's children too
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(
            f"{where}: still running after {timeout:.0f} s (give it <!-- run: timeout=N --> if "
            f"it is slow on purpose); output:\n{output.decode(errors='replace')[-_OUTPUT_TAIL:]}"
        )
    if process.returncode != 0:
        pytest.fail(
            f"{where}: exited {process.returncode}; output:\n"
            f"{output.decode(errors='replace')[-_OUTPUT_TAIL:]}"
        )


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_block_runs_or_says_why_not(path: Path) -> None:
    blocks = BLOCKS[path]
    refused = [f"{b.where}: {b.refusal}" for b in blocks if b.action == "refuse"]
    refused += [
        f"{b.where}: <!-- run: continue --> but no python block before it in the file"
        for b in programs_in(blocks)[1]
    ]
    assert not refused, "\n".join(refused)


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.where)
def test_python_block(program: Program, tmp_path: Path) -> None:
    missing = [module for module in program.needs if find_spec(module) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}, not installed here")
    script = tmp_path / "block.py"
    script.write_text(program.code, encoding="utf-8")
    _run([sys.executable, str(script)], tmp_path, program.timeout, program.where)


@pytest.mark.parametrize("block", PARSED, ids=lambda b: b.where)
def test_data_block_parses(block: Block) -> None:
    if block.action == "parse-json":
        json.loads(block.code)
    else:
        tomllib.loads(block.code)


def session_text(blocks: list[Block]) -> str:
    """The page's >>> blocks, each at its own line number (the rest blank), so doctest's
    "line N" in a failure is line N of the page."""
    lines: list[str] = []
    for block in blocks:
        lines += [""] * (block.line - len(lines))  # the fence is line block.line
        lines += block.code.splitlines()
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("path", SESSIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_pycon_session(path: Path, tmp_path: Path) -> None:
    session = tmp_path / "session.txt"
    session.write_text(session_text(SESSIONS[path]), encoding="utf-8")
    flags = ["-o", "ELLIPSIS", "-o", "NORMALIZE_WHITESPACE"]
    where = f"{path.relative_to(ROOT)} (its >>> blocks; line numbers are the page's)"
    _run([sys.executable, "-m", "doctest", *flags, str(session)], tmp_path, 180, where)


# ------------------------------------------------------------------ the extractor itself
SAMPLE = """\
Intro.

```python
print("first")
```

<!-- run: continue, timeout=5 -->
```python
print("second")
```

!!! note
    <!-- not run: needs a cluster -->
    ```python
    client = Client("tcp://scheduler:8786")
    ```

```
untagged
```

```bash
echo unmarked
```

<!-- not run: -->
```text
empty reason
```

<!-- run: continue -->
```json
{"a": 1}
```
"""


def test_extractor_classifies_each_block() -> None:
    blocks = list(blocks_in(SAMPLE, Path("sample.md")))
    assert [(b.line, b.lang, b.action) for b in blocks] == [
        (3, "python", "run"),
        (8, "python", "run"),
        (14, "python", "skip"),
        (18, "", "refuse"),
        (22, "bash", "refuse"),
        (27, "text", "refuse"),
        (32, "json", "refuse"),
    ]
    assert blocks[2].code == 'client = Client("tcp://scheduler:8786")\n'  # dedented
    assert blocks[2].marker is not None and blocks[2].marker.not_run == "needs a cluster"
    assert "reason" in blocks[5].refusal
    assert "only python blocks run" in blocks[6].refusal
    programs, refused = programs_in(blocks)
    assert len(programs) == 1 and not refused
    assert programs[0].code == 'print("first")\nprint("second")\n'
    assert programs[0].timeout == 5


def test_continue_without_a_block_before_is_refused() -> None:
    text = "<!-- run: continue -->\n```python\npass\n```\n"
    programs, refused = programs_in(list(blocks_in(text, Path("x.md"))))
    assert not programs and len(refused) == 1


def test_marker_options() -> None:
    assert parse_marker("<!-- run: needs=pyflink, timeout=300 -->") == parse_marker(
        "<!--run:timeout=300,needs=pyflink-->"
    )
    marker = parse_marker("<!-- run: needs=pyflink, timeout=300 -->")
    assert not isinstance(marker, str)
    assert marker.needs == ("pyflink",) and marker.timeout == 300
    assert isinstance(parse_marker("<!-- run: forever -->"), str)
    assert isinstance(parse_marker("<!-- run: timeout=soon -->"), str)


def test_unclosed_fence_is_refused() -> None:
    (block,) = blocks_in("```python\nprint(1)\n", Path("x.md"))
    assert block.action == "refuse" and "never closed" in block.refusal


def test_session_keeps_page_line_numbers() -> None:
    text = "a\n\n```pycon\n>>> x = 1\n```\n\n```pycon\n>>> x\n1\n```\n"
    blocks = list(blocks_in(text, Path("p.md")))
    lines = session_text(blocks).splitlines()
    assert lines[3] == ">>> x = 1" and lines[7] == ">>> x" and lines[8] == "1"


def test_a_failing_block_fails(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="exited 3"):
        _run([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, 30, "x.md:1")
    with pytest.raises(pytest.fail.Exception, match="still running"):
        _run([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path, 0.5, "x.md:1")
