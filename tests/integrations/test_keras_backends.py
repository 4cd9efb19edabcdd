"""Choosing the Keras backend: what `taskpoint.integrations.keras` does when none is chosen, and
the errors when the chosen one is missing, unusable or not supported.

Each case is a fresh interpreter (Keras fixes its backend at its first import) with its own
``KERAS_HOME`` (Keras reads, and on first import writes, ``keras.json`` there); a missing package
is simulated by ``sys.modules[name] = None``, which makes its import fail as if absent. The cases
run at once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Not imported here: this process's Keras backend is not what these cases are about.
for _needed in ("keras", "torch"):
    if importlib.util.find_spec(_needed) is None:
        pytest.skip(f"{_needed} is not installed", allow_module_level=True)

CHILD = """
import sys
for name in sys.argv[1:]:
    sys.modules[name] = None
try:
    from taskpoint.integrations.keras import KerasCheckpointer
    import keras
    print("backend", keras.backend.backend())
    KerasCheckpointer()
    print("constructed")
except Exception as exc:
    print(type(exc).__name__, exc)
"""
TORCH = "pip install 'taskpoint[keras]'"
JAX = "pip install 'taskpoint[keras-jax]'"
# name: (KERAS_BACKEND or None, keras.json backend or None, modules made unimportable)
CASES = {
    "nothing chosen": (None, None, ()),
    "jax missing": ("jax", None, ("jax",)),
    "torch missing": ("torch", None, ("torch",)),
    "tensorflow by keras.json": (None, "tensorflow", ("tensorflow",)),
    "numpy backend": ("numpy", None, ()),
    "unknown backend": ("theano", None, ()),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    """Each case's printed outcome and its keras.json path."""
    children = {}
    for name, (variable, configured, hidden) in CASES.items():
        home = tmp_path_factory.mktemp("keras-home")
        if configured is not None:
            (home / "keras.json").write_text(json.dumps({"backend": configured}))
        env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
        env["KERAS_HOME"] = str(home)
        if variable is not None:
            env["KERAS_BACKEND"] = variable
        cmd = [sys.executable, "-c", CHILD, *hidden]
        children[name] = (
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
            home / "keras.json",
        )
    results = {}
    for name, (child, path) in children.items():
        output, _ = child.communicate(timeout=120)
        results[name] = (output.decode(errors="replace"), path)
    return results


def test_nothing_chosen_runs_on_torch(outcomes):
    out, _ = outcomes["nothing chosen"]
    assert "backend torch" in out and "constructed" in out, out


def test_a_missing_jax_names_the_backend_how_it_was_chosen_and_the_install(outcomes):
    out, _ = outcomes["jax missing"]
    assert out.startswith("TaskpointError"), out
    assert "'jax' backend" in out and "KERAS_BACKEND environment variable" in out
    assert JAX in out and "needs the Python package 'keras'" not in out


def test_a_missing_torch_names_the_backend_how_it_was_chosen_and_the_install(outcomes):
    out, _ = outcomes["torch missing"]
    assert out.startswith("TaskpointError"), out
    assert "'torch' backend" in out and "KERAS_BACKEND environment variable" in out
    assert TORCH in out and "needs the Python package 'keras'" not in out


def test_tensorflow_chosen_by_keras_json_names_the_file_and_the_supported_backends(outcomes):
    """The reported bug: Keras itself writes "tensorflow" into keras.json; importing the
    integration then blamed a missing Keras."""
    out, path = outcomes["tensorflow by keras.json"]
    assert out.startswith("TaskpointError"), out
    assert "'tensorflow' backend" in out and f'"backend" in {path}' in out
    assert f"KERAS_BACKEND=torch ({TORCH})" in out and f"KERAS_BACKEND=jax ({JAX})" in out
    assert "needs the Python package 'keras'" not in out


def test_an_unsupported_backend_is_refused_by_the_callback(outcomes):
    out, _ = outcomes["numpy backend"]
    assert "backend numpy" in out  # Keras itself imports fine
    assert "TaskpointError KerasCheckpointer does not support the Keras 'numpy' backend" in out
    assert "KERAS_BACKEND environment variable" in out and TORCH in out and JAX in out


def test_an_unknown_backend_names_it(outcomes):
    out, _ = outcomes["unknown backend"]
    assert out.startswith("TaskpointError"), out
    assert "'theano' backend" in out and "KERAS_BACKEND environment variable" in out
    assert TORCH in out and JAX in out
