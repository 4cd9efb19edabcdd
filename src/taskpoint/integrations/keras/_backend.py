"""Which Keras backend runs, how it was chosen, importing Keras with errors that say so, and the
per-backend conversion of variable values to and from NumPy.

Keras picks its backend once per process, when it is first imported: ``KERAS_BACKEND`` if set
(and not empty), else ``"backend"`` in ``$KERAS_HOME/keras.json`` (``~/.keras/keras.json``, or
``/tmp/.keras`` when the home directory is not writable), else TensorFlow. Keras writes that file
with ``"tensorflow"`` the first time it is imported anywhere, so a user who never chose
TensorFlow may find it chosen for them. When nothing chose a backend, this module chooses torch
(the ``keras`` extra installs it); otherwise an import that fails says which backend was asked
for, by what, and how to install it or choose another one, instead of blaming Keras.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from taskpoint.errors import TaskpointError

# The backends KerasCheckpointer runs on, and what installs each (Keras included).
SUPPORTED = {
    "torch": "pip install 'taskpoint[keras]'",
    "jax": "pip install 'taskpoint[keras-jax]'",
}
# The top-level module a backend imports (TensorFlow's is named like the backend).
_MODULES = {"torch": ("torch",), "jax": ("jax", "jaxlib"), "tensorflow": ("tensorflow",)}
DEFAULT = "torch"


@dataclass(frozen=True)
class Choice:
    """The backend Keras will use (or uses) and what chose it, in words."""

    backend: str
    how: str
    config: Path | None = None  # the keras.json that chose it, if one did
    default: bool = False  # nothing chose it: taskpoint does


def keras_json() -> Path:
    """The config file Keras reads, found as Keras finds it."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return Path(os.path.expanduser(home)) / "keras.json"


def choose() -> Choice:
    """What the environment and the config file ask for now (before or after Keras is imported)."""
    named = os.environ.get("KERAS_BACKEND")
    if named:
        return Choice(named, "the KERAS_BACKEND environment variable")
    path = keras_json()
    try:
        configured = json.loads(path.read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        configured = None
    if configured:
        return Choice(str(configured), f'"backend" in {path}', path)
    return Choice(
        DEFAULT, "taskpoint's default (no KERAS_BACKEND and no backend in keras.json)", None, True
    )


def load_keras() -> ModuleType:
    """Import Keras on the chosen backend (torch when nothing chose one); on failure raise a
    `TaskpointError` that names the backend, what chose it and what to install."""
    choice = choose()
    if "keras" not in sys.modules and choice.default:
        os.environ["KERAS_BACKEND"] = DEFAULT  # Keras would otherwise pick TensorFlow
    try:
        return importlib.import_module("keras")
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing == "keras":
            install = SUPPORTED.get(choice.backend, SUPPORTED[DEFAULT])
            raise TaskpointError(
                "the taskpoint keras integration needs the Python package 'keras', which could "
                f"not be imported ({exc}); install it with: {install}"
            ) from exc
        raise _backend_error(choice, f"could not be imported ({exc})") from exc
    except Exception as exc:  # a broken install, or a backend name Keras does not know
        raise _backend_error(choice, f"failed while Keras imported it ({exc!r})") from exc


def check_supported(running: str) -> None:
    """Raise if Keras runs on a backend KerasCheckpointer does not support."""
    if running in SUPPORTED:
        return
    choice = choose()
    if choice.backend != running:  # the setting changed after Keras was imported
        choice = Choice(running, "what was set when Keras was first imported in this process")
    raise TaskpointError(
        f"KerasCheckpointer does not support the Keras {running!r} backend, which Keras runs on "
        f"here (chosen by {choice.how}); {_remedy(choice)}"
    )


def _backend_error(choice: Choice, problem: str) -> TaskpointError:
    modules = _MODULES.get(choice.backend, ())
    what = f"its package {modules[0]!r}" if modules else "it"
    return TaskpointError(
        f"Keras is asked to run on the {choice.backend!r} backend (chosen by {choice.how}), but "
        f"{what} {problem}; {_remedy(choice)}"
    )


def _remedy(choice: Choice) -> str:
    if choice.backend in SUPPORTED:
        other = next(name for name in SUPPORTED if name != choice.backend)
        return (
            f"install it with: {SUPPORTED[choice.backend]} (or set KERAS_BACKEND={other} before "
            "keras is imported)"
        )
    choices = " or ".join(f"KERAS_BACKEND={name} ({cmd})" for name, cmd in SUPPORTED.items())
    text = (
        f"taskpoint's Keras integration runs on the torch and jax backends only: set {choices} "
        "before keras is imported"
    )
    if choice.config is not None:
        text += (
            f', or change "backend" in {choice.config} (Keras writes "tensorflow" there the '
            "first time it is imported, when the file does not exist)"
        )
    return text


# ---------------------------------------------------------------------------- variable values
# NumPy has no bfloat16 (JAX's comes from ml_dtypes, which `encode` does not accept): the format
# keeps its raw bits as int16, the same on every backend.


def to_numpy(backend: str, value: Any, dtype: str) -> np.ndarray:
    """A variable's value as a NumPy array of its declared ``dtype`` (may share memory)."""
    if backend == "torch":
        import torch

        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            return tensor.view(torch.int16).numpy()
        array = tensor.numpy()
    else:
        array = np.asarray(value)
        if dtype == "bfloat16":
            return array.view(np.int16)
    # JAX without x64 holds an "int64" variable as int32: store what the variable declares.
    return array if array.dtype == np.dtype(dtype) else array.astype(dtype)


def from_numpy(backend: str, array: np.ndarray, dtype: str) -> Any:
    """A value to assign to a variable of declared ``dtype`` (from `to_numpy`'s output)."""
    if backend == "torch":
        import torch

        tensor = torch.from_numpy(array.copy())
        return tensor.view(torch.bfloat16) if dtype == "bfloat16" else tensor
    if dtype == "bfloat16":
        import jax.numpy as jnp

        return array.copy().view(jnp.bfloat16)
    return array.copy()
