"""Helpers of the UI tests: run real executions into a home, serve it, talk HTTP to it."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.fixtures import cli_command, tp_env
from support.polling import wait_until
from taskpoint.engine import Engine
from taskpoint.ui.server import UiServer, make_server

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed_checkpoint.py"
FLOWS = Path(__file__).resolve().parent / "ui_flows.py"

# What the shared home holds: name -> (file, target, options, expected exit code).
RUNS: dict[str, tuple[Path, str, list[str], int]] = {
    "seed": (SEED, "example", ["--n-iterations", "12"], 0),
    "training": (FLOWS, "interrupted_training", ["--steps", "14"], 0),
    "pipeline": (FLOWS, "broken_pipeline", ["--rows", "100"], 1),
    "inline": (FLOWS, "inline_preempted", ["--total", "6"], 143),
    "big": (FLOWS, "big_state", ["--megabytes", "16"], 0),
    "chatty": (FLOWS, "chatty", ["--lines", "40"], 0),
}


@dataclass
class Home:
    """A taskpoint home filled by really running workflows; ``ids`` by the names of RUNS."""

    path: Path
    ids: dict[str, str] = field(default_factory=dict)
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)


def fill_home(
    path: Path,
    runs: dict[str, tuple[Path, str, list[str], int]] = RUNS,
    interrupted: bool = True,
) -> Home:
    """Run every workflow of ``runs`` with `taskpoint run --json`, in parallel processes, and
    (``interrupted``) one execution whose driver is SIGKILLed mid-task."""
    home = Home(path)
    procs = {
        name: subprocess.Popen(
            cli_command("--home", path, "run", file, target, *opts, "--json"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=tp_env(),
        )
        for name, (file, target, opts, _) in runs.items()
    }
    if interrupted:
        home.ids["interrupted"] = _interrupted_run(path)
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        expected = runs[name][3]
        assert proc.returncode == expected, f"{name}: exit {proc.returncode}\n{out}\n{err}"
        doc = _json_document(out)
        home.ids[name], home.docs[name] = doc["id"], doc
    return home


def _json_document(out: str) -> Any:
    """The document `taskpoint run --json` printed last: what an inline task prints goes to
    the same stdout before it (the attempt's output is shown live as well as logged)."""
    start = 0 if out.startswith("{") else out.rindex("\n{\n") + 1
    return json.loads(out[start:])


def _interrupted_run(home: Path) -> str:
    """Start ``waits_for`` (which never gets its file), SIGKILL its driver after 3 checkpoint
    commits, and return the execution id: it shows as ``interrupted``."""
    proc = subprocess.Popen(
        cli_command("--home", home, "run", FLOWS, "waits_for", "--marker", home / "never"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=tp_env(),
    )
    try:

        def third_commit() -> list[Path]:
            found = list(home.glob("blobs/*/nodes/wait_for_file-1/checkpoints/v/*.manifest.json"))
            return found if any(f.name >= "0001-000003" for f in found) else []

        found = wait_until(third_commit, 60, "waits_for to commit 3 checkpoints", proc=proc)
        return found[0].parts[-6]  # blobs/<execution id>/nodes/...
    finally:
        proc.kill()
        proc.wait(10)


@contextmanager
def serving(
    home: Path,
    storage: str | None = None,
    storage_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Iterator[UiServer]:
    """A UI server for ``home`` in a background thread (port 0: any free one), built from an
    ``Engine`` as `taskpoint ui` builds it from its options."""
    kwargs.setdefault("port", 0)
    engine = Engine(home=str(home), storage=storage, storage_options=storage_options)
    server = make_server(engine, **kwargs)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def base_url(server: UiServer) -> str:
    return f"http://127.0.0.1:{server.port}"


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Response:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def get(url: str, headers: dict[str, str] | None = None) -> Response:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _opener.open(request, timeout=30) as r:
            return Response(r.status, r.headers, r.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.headers, exc.read())


def tree_state(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``path`` with its size and mtime, except SQLite's -wal/-shm files."""
    state = {}
    for p in sorted(path.rglob("*")):
        if p.name.endswith(("-wal", "-shm")):
            continue
        st = p.lstat()
        state[str(p.relative_to(path))] = (st.st_size, st.st_mtime_ns)
    return state
