"""A task module that counts who imports it (tests/engine/test_warm_restart.py).

Each test copies this file under a fresh module name (``warm_x.py``) with ``warm_x.json`` beside
it saying how the copy behaves. Each import appends the importing process's pid to
``warm_x.imports``; each attempt appends its pid to ``warm_x.attempts``. Behaviours:

- ``"heavy"``: import scikit-learn at the top (a job's heavy imports);
- ``"thread"``: start a thread at import (a server must not keep such a module warm);
- ``"fail_second_import"``: the second import (the warm server's) raises;
- ``"helper"``: the first attempt imports the module of that name inside the task and waits,
  before it is killed, until that module was imported twice (by it, then by the server);
- ``"torch_at_import"``: import torch at the top (a driver running this file has it loaded).
"""

import json
import os
import signal
import threading
import time
from pathlib import Path

from taskpoint import current_context, task, workflow

_HERE = Path(__file__)
_SETTINGS = json.loads(_HERE.with_suffix(".json").read_text())
_IMPORTS = _HERE.with_suffix(".imports")
_ATTEMPTS = _HERE.with_suffix(".attempts")


def pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


if _SETTINGS.get("fail_second_import") and len(pids(_IMPORTS)) == 1:
    with open(_IMPORTS, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    raise RuntimeError("not in the server")
with open(_IMPORTS, "a") as handle:
    handle.write(f"{os.getpid()}\n")
if _SETTINGS.get("heavy"):
    import sklearn.linear_model  # noqa: F401
if _SETTINGS.get("torch_at_import"):
    import torch  # noqa: F401
if _SETTINGS.get("thread"):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()


def _wait_until_the_server_imported(helper: str) -> None:
    __import__(helper)
    log = _HERE.with_name(f"{helper}.imports")
    for _ in range(600):
        if len(pids(log)) >= 2:
            return
        time.sleep(0.05)


@task(isolation="process", system_retries=2)
def counted(total: int) -> list:
    ctx = current_context()
    prev = ctx.checkpoint.read()
    start = int(prev) if prev else 0
    with open(_ATTEMPTS, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    for i in range(start, total):
        ctx.checkpoint.write(str(i + 1).encode())
        if ctx.attempt == 1 and i == 1:
            if _SETTINGS.get("helper"):
                _wait_until_the_server_imported(_SETTINGS["helper"])
            os.kill(os.getpid(), signal.SIGKILL)
    import torch

    return [start, ctx.attempt, os.getpid(), torch.get_num_threads()]


@workflow
def flow(total: int) -> int:
    return counted(total=total)[0]
