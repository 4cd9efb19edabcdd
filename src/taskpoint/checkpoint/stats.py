"""What a scope object measured of its own use: which version it loaded, and what its loads and
writes cost the caller.

A `Checkpoint` fills one `ScopeStats` (``checkpoint.stats``) as it is used. The engine reads it
for the resume guard (did the attempt load what it could have resumed from?), for the checkpoint
interval (what does a save cost the loop?) and for the goodput ledger (stall, restore time).
Times are ``time.monotonic()`` seconds; nothing here touches storage.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from taskpoint.checkpoint.version import CheckpointVersion


@dataclass
class ScopeStats:
    opened: float = field(default_factory=time.monotonic)
    # Loads: read(), read_with(), restore() that returned a version (``loaded``: the newest
    # such) or found nothing (``empty_loads``); ``load_s`` is the time they took, in all.
    loads: int = 0
    empty_loads: int = 0
    loaded: CheckpointVersion | None = None
    load_s: float = 0.0
    first_load_at: float | None = None
    # Writes: write()/save() calls; ``stall_s`` is how long they blocked their caller, in all
    # (a sync write: the whole commit; an async one: the snapshot copy), ``last_stall_s`` the
    # newest one's.
    saves: int = 0
    stall_s: float = 0.0
    last_stall_s: float = 0.0
    first_save_at: float | None = None
    last_save_at: float | None = None
    # Commits, wherever they ran (the caller's thread or the async writer): ``commit_s`` is the
    # time spent committing, in all, ``first_commit`` the first version committed through this
    # object and ``last_commit_at`` when the newest one committed.
    commits: int = 0
    commit_s: float = 0.0
    last_commit_s: float = 0.0
    # Payload bytes committed, and the shortest commit (an upper bound on a commit's fixed
    # cost): what `deadline.py` estimates the time of a commit from.
    commit_bytes: int = 0
    min_commit_s: float | None = None
    first_commit: CheckpointVersion | None = None
    last_commit: CheckpointVersion | None = None
    last_commit_at: float | None = None
    # ``due()`` calls: the first one is when the task's loop first asked (its first step).
    dues: int = 0
    first_due_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def note_load(self, version: CheckpointVersion | None, seconds: float) -> None:
        with self._lock:
            now = time.monotonic()
            if self.first_load_at is None:
                self.first_load_at = now
            self.load_s += seconds
            if version is None:
                self.empty_loads += 1
            else:
                self.loads += 1
                if self.loaded is None or version.order > self.loaded.order:
                    self.loaded = version

    def note_save(self, stall_s: float) -> None:
        with self._lock:
            now = time.monotonic()
            if self.first_save_at is None:
                self.first_save_at = now - stall_s
            self.last_save_at = now
            self.saves += 1
            self.stall_s += stall_s
            self.last_stall_s = stall_s

    def note_due(self) -> None:
        with self._lock:
            self.dues += 1
            if self.first_due_at is None:
                self.first_due_at = time.monotonic()

    def note_commit(self, version: CheckpointVersion, seconds: float) -> None:
        with self._lock:
            self.commits += 1
            self.commit_s += seconds
            self.last_commit_s = seconds
            self.commit_bytes += version.size
            if self.min_commit_s is None or seconds < self.min_commit_s:
                self.min_commit_s = seconds
            if self.first_commit is None:
                self.first_commit = version
            self.last_commit = version
            self.last_commit_at = time.monotonic()
