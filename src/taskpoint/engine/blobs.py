"""Pickled inputs, outputs and results in the blob store, next to the checkpoints.

Layout under the storage URL::

    <storage>/<execution id>/inputs.pkl
    <storage>/<execution id>/result.pkl
    <storage>/<execution id>/nodes/<node dir>/output.pkl
    <storage>/<execution id>/nodes/<node dir>/checkpoints/      (a Checkpoint scope)

Small outputs are kept in the records database instead (see ``engine/node.py``); bounded
previews of all of them are kept in the records for the read-only views. A remote URL is
opened with the fsspec ``options`` its caller passes (the engine's ``storage_options_for(url)``).
Local paths take a direct ``os`` path (write to a temp name, then rename). Blobs are not
fsynced: a node whose output is lost or unreadable is simply run again on resume.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote


def node_dir(key: str) -> str:
    """Path-safe form of a node key: ``train#2`` -> ``train-2`` (task names hold no ``-``)."""
    return quote(key.replace("#", "-"), safe="-_.")


def execution_url(storage: str, execution_id: str) -> str:
    return f"{storage}/{execution_id}"


def node_url(storage: str, execution_id: str, key: str) -> str:
    return f"{storage}/{execution_id}/nodes/{node_dir(key)}"


def checkpoint_url(storage: str, execution_id: str, key: str) -> str:
    return f"{node_url(storage, execution_id, key)}/checkpoints"


def local_path(url: str) -> str | None:
    """The filesystem path of a local URL (a plain path or ``file://``); ``None`` if remote."""
    if url.startswith("file://"):
        return url[len("file://") :]
    if "://" in url:
        return None
    return url


def remote_fs(url: str, options: Mapping[str, Any] | None) -> tuple[Any, str]:
    """The fsspec filesystem and path of a remote URL, opened with ``options``."""
    import fsspec

    return fsspec.core.url_to_fs(url, **(options or {}))


def put_bytes(url: str, data: bytes, options: Mapping[str, Any] | None = None) -> None:
    path = local_path(url)
    if path is None:
        fs, fpath = remote_fs(url, options)
        fs.pipe_file(fpath, data)
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def get_bytes(url: str, options: Mapping[str, Any] | None = None) -> bytes:
    """The blob's bytes; ``FileNotFoundError`` if it does not exist."""
    path = local_path(url)
    if path is None:
        fs, fpath = remote_fs(url, options)
        return fs.cat_file(fpath)
    with open(path, "rb") as f:
        return f.read()


def put_pickle(url: str, value: Any, options: Mapping[str, Any] | None = None) -> None:
    put_bytes(url, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), options)


def get_pickle(url: str, options: Mapping[str, Any] | None = None) -> Any:
    """Unpickle a stored input, output or result: **only** for a run that needs the value
    (``resume``, a downstream node). Whoever can write the blob store can make this run code,
    as with any pickle-based engine; read-only views (``list``, ``show``, ``checkpoints``, the
    web view) never call it and show the previews stored in the records instead. Checkpoint
    content is never unpickled."""
    return pickle.loads(get_bytes(url, options))
