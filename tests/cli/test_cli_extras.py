"""A workflow whose framework is not installed says which `pip install 'taskpoint[...]'` to run,
whether the file imports it at the top or the task imports it when it runs."""

from __future__ import annotations

import json
import sys

from cli_paths import WORKFLOWS

from taskpoint.extras import install_hint


def test_a_file_importing_a_missing_framework_names_the_extra(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if not installed
    r = cli("run", WORKFLOWS / "needs_sklearn.py", "fit")
    assert r.code == 2
    assert "needs the Python package 'sklearn'" in r.err
    assert "pip install 'taskpoint[sklearn]'" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_a_task_importing_a_missing_framework_names_the_extra(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    r = cli("run", WORKFLOWS / "needs_torch_later.py", "train", "--json")
    assert r.code == 1
    error = json.loads(r.out)["error"]
    assert "ModuleNotFoundError" in error and "pip install 'taskpoint[torch]'" in error


def test_only_modules_an_extra_brings_get_a_hint():
    assert install_hint(ModuleNotFoundError("x", name="pyspark.sql")) == (
        "pip install 'taskpoint[spark]'"
    )
    assert install_hint(ModuleNotFoundError("x", name="my_private_pkg")) is None
    assert install_hint(ValueError("torch")) is None
