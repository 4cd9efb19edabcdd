"""The consistent cut of a streaming checkpoint directory (pure file logic, no JVM needed).

The trees below are laid out as Spark 4 writes them (commits/offsets/sources logs with their
``.N.crc`` companions, state store ``<version>.delta`` files, a file sink's ``_spark_metadata``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The module needs no PySpark, but its package does (importing it names the missing extra).
pytest.importorskip("pyspark")

from taskpoint.errors import TaskpointError
from taskpoint.integrations.spark import _snapshot as cut

pytestmark = pytest.mark.slow  # kills processes, starts a JVM or a browser


def touch(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def query_tree(root: Path, committed: int, offsets: int, state_versions: int) -> None:
    touch(root / "metadata", '{"id":"q"}')
    for n in range(committed + 1):
        touch(root / "commits" / str(n))
        touch(root / "commits" / f".{n}.crc")
    for n in range(offsets + 1):
        touch(root / "offsets" / str(n))
        touch(root / "offsets" / f".{n}.crc")
        touch(root / "sources" / "0" / str(n))
    for part in ("0", "1"):
        touch(root / "state" / "0" / part / "_metadata" / "schema")
        for v in range(1, state_versions + 1):
            touch(root / "state" / "0" / part / f"{v}.delta")
            touch(root / "state" / "0" / part / f".{v}.delta.crc")
        touch(root / "state" / "0" / part / f".{state_versions + 1}.delta.1a2b.tmp")
    touch(root / "state" / "0" / "_metadata" / "metadata")


def names(directory: Path) -> set[str]:
    return set(os.listdir(directory)) if directory.exists() else set()


def test_cut_keeps_the_committed_batch_and_the_one_planned_after_it(tmp_path: Path) -> None:
    live, sink = tmp_path / "live", tmp_path / "sink"
    # batch 4 committed; batch 5 planned and its state written; batch 6 planned (offsets) too,
    # as if commit 5 landed after we read commits/ (the copy must not take 6).
    query_tree(live, committed=4, offsets=6, state_versions=7)
    for n in range(7):
        touch(sink / "_spark_metadata" / str(n))
    touch(sink / "_spark_metadata" / "9.compact")

    dest = tmp_path / "snap"
    assert cut.take(live, [sink], dest, after=None) == 4
    q = dest / cut.QUERY_DIR
    assert names(q / "commits") == {
        "0",
        "1",
        "2",
        "3",
        "4",
        ".0.crc",
        ".1.crc",
        ".2.crc",
        ".3.crc",
        ".4.crc",
    }
    assert {n for n in names(q / "offsets") if n.isdigit()} == {"0", "1", "2", "3", "4", "5"}
    # state versions <= C + 1 = 5 (version v holds the state after batch v - 1), no temp files
    part0 = names(q / "state" / "0" / "0")
    assert {n for n in part0 if n.endswith(".delta")} == {f"{v}.delta" for v in range(1, 6)}
    assert not any(n.endswith(".tmp") for n in part0)
    assert "_metadata" in part0
    assert names(q / "sources" / "0") == {str(n) for n in range(7)}  # kept whole
    assert (q / "metadata").read_text() == '{"id":"q"}'
    # offsets/5 was copied, so the sink log may keep entry 5 (a re-run of 5 is skipped by Spark)
    assert names(dest / "sinks" / "0" / "_spark_metadata") == {str(n) for n in range(6)}


def test_sink_log_is_cut_at_the_commit_when_the_next_offsets_were_not_copied(
    tmp_path: Path,
) -> None:
    live, sink = tmp_path / "live", tmp_path / "sink"
    query_tree(live, committed=2, offsets=2, state_versions=3)
    for n in range(4):  # entry 3 written after offsets/ was read: it must not be kept
        touch(sink / "_spark_metadata" / str(n))
    dest = tmp_path / "snap"
    assert cut.take(live, [sink], dest, after=None) == 2
    assert names(dest / "sinks" / "0" / "_spark_metadata") == {"0", "1", "2"}


def test_nothing_new_means_no_snapshot(tmp_path: Path) -> None:
    live = tmp_path / "live"
    assert cut.take(live, [], tmp_path / "a", after=None) is None  # no commits yet
    query_tree(live, committed=3, offsets=3, state_versions=4)
    assert cut.take(live, [], tmp_path / "b", after=3) is None
    assert not (tmp_path / "b").exists()
    assert cut.take(live, [], tmp_path / "c", after=2) == 3


def test_install_puts_back_the_sink_log_of_the_cut(tmp_path: Path) -> None:
    live, sink = tmp_path / "live", tmp_path / "sink"
    query_tree(live, committed=1, offsets=2, state_versions=3)
    cut.start_fresh([sink], owner="me")
    for n in range(3):
        touch(sink / "_spark_metadata" / str(n))
    dest = tmp_path / "snap"
    assert cut.take(live, [sink], dest, after=None) == 1
    touch(sink / "_spark_metadata" / "3")  # the attempt went on after the snapshot
    location = cut.install(dest, [sink], owner="me")
    assert location == dest / cut.QUERY_DIR
    assert names(sink / "_spark_metadata") == {"0", "1", "2", cut.OWNER_FILE}


def test_a_sink_log_of_someone_else_is_refused(tmp_path: Path) -> None:
    sink = tmp_path / "sink"
    touch(sink / "_spark_metadata" / "0")
    with pytest.raises(TaskpointError, match="already holds a Spark sink log"):
        cut.start_fresh([sink], owner="me")
    cut.start_fresh([tmp_path / "empty"], owner="me")  # a new path is fine
    touch(tmp_path / "empty" / "_spark_metadata" / "0")
    cut.start_fresh([tmp_path / "empty"], owner="me")  # our own leftovers are rolled back
    assert names(tmp_path / "empty" / "_spark_metadata") == {cut.OWNER_FILE}


def test_install_refuses_other_sinks(tmp_path: Path) -> None:
    live = tmp_path / "live"
    query_tree(live, committed=0, offsets=0, state_versions=1)
    dest = tmp_path / "snap"
    cut.take(live, [tmp_path / "a"], dest, after=None)
    with pytest.raises(TaskpointError, match="same sinks"):
        cut.install(dest, [tmp_path / "b"], owner="me")


def test_missing_pyspark_names_the_extra_to_install() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['pyspark'] = None\n"
        "import taskpoint.integrations\n"
        "try:\n    import taskpoint.integrations.spark\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "TaskpointError" in out.stdout and "pip install 'taskpoint[spark]'" in out.stdout
