"""Inline attempts' stdout goes to each attempt's log and still to whatever ``sys.stdout`` is at
the call (the tee reused between calls must follow a stream the workflow swapped in), and the
run leaves the process's streams as it found them."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import taskpoint
from taskpoint import task, workflow


@task
def say(word: str) -> str:
    print(f"said {word}")
    return word


@task
def quiet(x: int) -> int:
    return x


@workflow
def talk() -> list[str]:
    heard = [say("one"), str(quiet(1))]
    swapped = io.StringIO()
    with contextlib.redirect_stdout(swapped):
        heard.append(say("two"))
    heard.append(swapped.getvalue().strip())
    heard.append(say("three"))
    return heard


def _log_of(home: Path, node_dir: str) -> str:
    (path,) = home.glob(f"blobs/*/nodes/{node_dir}/logs/attempt-0001.log")
    return path.read_text()


def test_each_inline_call_logs_its_own_lines_and_follows_a_swapped_stream(tp_home, capsys):
    out_before, err_before = sys.stdout, sys.stderr
    execution = taskpoint.run(talk)
    assert execution.status == "succeeded", execution.error
    assert execution.result == ["one", "1", "two", "said two", "three"]
    assert sys.stdout is out_before and sys.stderr is err_before

    assert _log_of(tp_home, "say-1") == "said one\n"
    assert _log_of(tp_home, "say-2") == "said two\n"  # printed into the swapped-in stream
    assert _log_of(tp_home, "say-3") == "said three\n"
    assert not list(tp_home.glob("blobs/*/nodes/quiet-1/logs/*"))  # printed nothing: no file
    printed = capsys.readouterr().out
    assert "said one" in printed and "said three" in printed
    assert "said two" not in printed  # it went to the workflow's own stream
