"""What the framework integrations share (private): written once, used by all of them.

- `task_checkpoint`: the ``checkpoint=`` default, the running task's checkpoint, and the task's
  context (to notice preemption); a clear error outside a task when none was given.
  `check_every_n_steps`: the one check of an ``every_n_steps`` cadence (an integer or
  ``"auto"``), `cadence_due`: whether it says to save now.
- The binary envelope every blob-writing integration uses (torch and Lightning, Keras,
  scikit-learn)::

      magic                  8 bytes, one per integration (b"TPTORCH1", b"TPKERAS1", ...)
      header length          8 bytes, little-endian unsigned
      header                 UTF-8 JSON object
      body                   integration-specific (raw tensors/arrays, a skops payload)

- `capture_rng` / `restore_rng`: Python ``random``, NumPy's global generator and (optionally)
  torch's CPU and CUDA generators, with one policy for CUDA: its states are captured once CUDA is
  initialised, and restored only when this process sees as many CUDA devices as the saving one
  did (else they are left as they are, with one warning per process); CPU states are always
  restored.
- `rng_parts` / `rng_whole`: those states split into JSON scalars and bulk arrays (and put back
  together), as the Keras and scikit-learn formats store them.
- `link_or_copy`: hard-link a file, else copy it; False when it vanished meanwhile.
- `process_token`, `parent_pid`: a process's start time and parent, from ``taskpoint._process``
  (the one ``/proc/<pid>/stat`` parser).
- `publish`: make objects defined in a private module name their public one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from taskpoint._process import parent_pid as parent_pid
from taskpoint._process import process_token as process_token
from taskpoint.errors import CheckpointError, TaskpointError

if TYPE_CHECKING:
    from taskpoint.checkpoint import Checkpoint
    from taskpoint.context import TaskContext


# ---------------------------------------------------------------------------- the checkpoint
def task_checkpoint(
    checkpoint: Checkpoint | None, owner: str
) -> tuple[Checkpoint, TaskContext | None]:
    """``checkpoint``, or the running task's (``current_context().checkpoint``); and the running
    task's context (``None`` outside a task). ``owner`` names the integration in the error raised
    outside a task when no checkpoint was given."""
    from taskpoint.context import active_context

    ctx = active_context()
    if checkpoint is None:
        if ctx is None:
            raise TaskpointError(
                f"{owner} was used outside a task without checkpoint=: use it inside a @task "
                "function (it then uses current_context().checkpoint) or pass "
                "checkpoint=Checkpoint.open(url)"
            )
        checkpoint = ctx.checkpoint
    return checkpoint, ctx


def check_every_n_steps(value: Any, name: str = "every_n_steps") -> int | Literal["auto"]:
    """A cadence is an integer >= 1, or ``"auto"``: save when ``Checkpoint.due()`` says."""
    if isinstance(value, str) and value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f'{name} must be an integer >= 1 (save every N steps) or "auto" (save when '
            f"Checkpoint.due() says, from measured save cost and failure rate), got {value!r}"
        )
    return value


def cadence_due(every_n_steps: int | str, step: int, checkpoint: Checkpoint | None) -> bool:
    """Whether a cadence says to save after ``step``: every N-th step, or for ``"auto"`` what
    ``checkpoint.due()`` answers (call this at every step: ``due()`` times the steps)."""
    if every_n_steps == "auto":
        assert checkpoint is not None, "an automatic cadence before its checkpoint was set up"
        return checkpoint.due()
    return step % int(every_n_steps) == 0


def where(checkpoint: Any) -> str:
    """How errors name a checkpoint."""
    return str(getattr(checkpoint, "url", None) or repr(checkpoint))


# ---------------------------------------------------------------------------- the envelope
_PREFIX = struct.Struct("<8sQ")
PREFIX_SIZE = _PREFIX.size
ALIGN = 64


def align(n: int, to: int = ALIGN) -> int:
    """``n`` rounded up to a multiple of ``to``."""
    return -(-n // to) * to


def dump_header(header: dict[str, Any]) -> bytes:
    """The header as compact UTF-8 JSON (no NaN or infinity: they are not JSON)."""
    return json.dumps(header, separators=(",", ":"), allow_nan=False).encode()


def pack(magic: bytes, header: bytes) -> bytes:
    """Magic, header length and the (already dumped) header."""
    if len(magic) != 8:
        raise ValueError(f"an envelope magic is 8 bytes, got {magic!r}")
    return _PREFIX.pack(magic, len(header)) + header


def header_size(prefix: bytes | memoryview, magic: bytes, what: str, where: str) -> int:
    """The header length from a blob's first `PREFIX_SIZE` bytes; refuse another magic."""
    if len(prefix) < PREFIX_SIZE:
        reason = f"it has {len(prefix)} bytes"
    elif bytes(prefix[:8]) != magic:
        reason = f"it starts with {bytes(prefix[:8])!r}, not {magic!r}"
    else:
        return _PREFIX.unpack_from(prefix)[1]
    raise refused(what, where, reason)


def load_header(raw: bytes | memoryview, what: str, where: str) -> dict[str, Any]:
    """Parse a header; it must be a JSON object."""
    try:
        header = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        raise refused(what, where, f"unreadable header: {exc}") from None
    if not isinstance(header, dict):
        raise refused(what, where, "its header is not a JSON object")
    return header


def unpack(blob: bytes | memoryview, magic: bytes, what: str, where: str) -> tuple[dict, int]:
    """The header of a blob and where its body starts (right after the header)."""
    size = header_size(blob, magic, what, where)
    end = PREFIX_SIZE + size
    if end > len(blob):
        raise refused(what, where, "the header lies outside the blob")
    return load_header(blob[PREFIX_SIZE:end], what, where), end


def refused(what: str, where: str, reason: str) -> CheckpointError:
    """The error for a blob that is not what an integration wrote."""
    return CheckpointError(
        f"the latest checkpoint at {where} is not {what} ({reason}); use a checkpoint scope of "
        "its own for it"
    )


# ---------------------------------------------------------------------------- RNG states
_cuda_warned = False


def capture_rng(*, torch: bool = False) -> dict[str, Any]:
    """The global RNG states: ``python`` (``random.getstate()``), ``numpy``
    (``np.random.get_state(legacy=False)``) and, with ``torch``, ``torch`` (CPU ByteTensor) and,
    once CUDA is initialised, ``cuda`` (one ByteTensor per device)."""
    import numpy as np

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=False),
    }
    if torch:
        import torch as th

        state["torch"] = th.get_rng_state()
        if th.cuda.is_available() and th.cuda.is_initialized():
            state["cuda"] = th.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what `capture_rng` captured (``numpy`` may also be the legacy tuple).

    CPU states are always restored. CUDA states only when this process sees exactly as many CUDA
    devices as the saving one: otherwise they are left alone (a partial or shifted restore would
    pair states with the wrong devices) and a warning says so, once per process.
    """
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if state.get("torch") is None:
        return
    import torch as th

    th.set_rng_state(state["torch"])
    cuda = list(state.get("cuda") or ())
    if not cuda:
        return
    count = th.cuda.device_count() if th.cuda.is_available() else 0
    if count == len(cuda):
        th.cuda.set_rng_state_all(cuda)
        return
    global _cuda_warned
    if not _cuda_warned:
        _cuda_warned = True
        warnings.warn(
            f"the checkpoint has CUDA RNG states for {len(cuda)} devices, this process sees "
            f"{count}; the CUDA RNG states are not restored (CPU RNG states are)",
            RuntimeWarning,
            stacklevel=2,
        )


def rng_parts(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A `capture_rng` state as JSON scalars and bulk arrays, for formats that store them apart.

    Scalars: ``{"python": [version, gauss], "numpy": [bit_generator, pos, has_gauss, gauss]}``.
    Bulk: ``"python"`` (the Mersenne Twister words, a uint64 array) and ``"numpy"`` (the key, a
    uint32 array); with torch states also ``"torch"`` (a tensor) and ``"cuda"`` (a list of them,
    empty when none were captured). `rng_whole` puts them back together.
    """
    import numpy as np

    version, words, gauss = state["python"]
    numpy = state["numpy"]
    scalars = {
        "python": [version, gauss],
        "numpy": [
            numpy["bit_generator"],
            int(numpy["state"]["pos"]),
            int(numpy["has_gauss"]),
            float(numpy["gauss"]),
        ],
    }
    bulk: dict[str, Any] = {
        "python": np.asarray(words, dtype=np.uint64),
        "numpy": np.asarray(numpy["state"]["key"], dtype=np.uint32),
    }
    if state.get("torch") is not None:
        bulk["torch"] = state["torch"]
        bulk["cuda"] = list(state.get("cuda") or ())
    return scalars, bulk


def rng_whole(scalars: dict[str, Any], bulk: dict[str, Any]) -> dict[str, Any]:
    """The state for `restore_rng` from what `rng_parts` split (bulk arrays may be lists)."""
    import numpy as np

    version, gauss = scalars["python"]
    name, pos, has_gauss, cached = scalars["numpy"]
    state: dict[str, Any] = {
        "python": (version, tuple(int(word) for word in bulk["python"]), gauss),
        "numpy": (name, np.array(bulk["numpy"], dtype=np.uint32), pos, has_gauss, cached),
    }
    if bulk.get("torch") is not None:
        state["torch"] = bulk["torch"]
        state["cuda"] = list(bulk.get("cuda") or ())
    return state


# ---------------------------------------------------------------------------- files
def link_or_copy(src: Path, dest: Path) -> bool:
    """Hard-link (else copy) one file; False if ``src`` vanished (deleted meanwhile)."""
    try:
        os.link(src, dest)
    except FileNotFoundError:
        if not os.path.exists(src):
            return False
        raise  # the destination's directory is missing: a caller's bug
    except OSError:
        try:
            shutil.copy2(src, dest)
        except FileNotFoundError:
            if not os.path.exists(src):
                return False
            raise
    return True


# ---------------------------------------------------------------------------- public names
def publish(module: str, *objects: Any) -> None:
    """Make classes and functions defined in a private module name the public ``module`` that
    exports them (``__module__``): pickles, reprs and docs then use the public path, which stays
    the same when the private layout changes."""
    for obj in objects:
        obj.__module__ = module
