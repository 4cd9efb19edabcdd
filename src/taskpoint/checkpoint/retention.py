"""Retention: keep the newest ``keep`` committed versions, delete what nobody can use.

Retiring a version deletes its manifest first (uncommit: new readers skip it at once); its payload
goes later. On local disk that is as soon as no process holds it (readers and writers hold a
shared lock on it, the delete takes an exclusive one); on an object store, which has no locks, only
after ``retire_grace`` seconds, measured from the ``<id>.retired.<ms>`` mark, so a reader in another
process that listed it can finish. The sweep also deletes the leftovers of dead writes (earlier
attempts', or this writer's own) and is safe to run from any process: it never deletes a payload
whose manifest exists, nor one another live writer holds.

Listing a scope costs in proportion to the versions in it, so a scope kept large (``keep=10000``)
is not listed after every write: when a listing finds room for more versions than this writer
will add before the next one, the next listing waits. Only half of the room is counted as this
writer's (another writer of the scope, such as an older attempt's zombie, may add versions
meanwhile), and a listing that found anything to delete or sweep is followed by one at the next
write, as is every one where the scope is full (the default ``keep=2``: every write).

On local disk a full scope is not listed at every write either: a writer that has committed more
than ``keep`` versions itself retires its own oldest without a listing (its ``keep`` newer ones
are newer than it, whoever else writes), and lists the scope every `RESCAN_EVERY` writes to
retire other writers' versions and sweep leftovers. A listing costs about as much as the rest
of a small commit's Python.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from taskpoint.checkpoint.staging import sweep_staging
from taskpoint.checkpoint.storage import Listing, Store
from taskpoint.checkpoint.version import parse_version_id

log = logging.getLogger("taskpoint.checkpoint")
# Runs ``chore`` on the writer thread: soon (True), or when it next has work (False).
Defer = Callable[[Callable[[], None], bool], None]
RESCAN_EVERY = 8  # writes that retire their own oldest version without a listing, in a row


class Retention:
    """Retention and sweeping for one writer (one `Checkpoint` scope object)."""

    def __init__(self, store: Store, url: str, attempt: int, keep: int, grace: float) -> None:
        self._store = store
        self.url = url
        self.attempt = attempt
        self._keep = keep
        self._skip = 0  # writes whose retention needs no listing (see the module's doc)
        self.retire_grace = grace
        self.reserved: set[str] = set()  # ids this writer reserved (its own writes)
        self.swept = False  # the first run also sweeps leftovers of killed writers
        self._next_seq: int | None = None
        self._own: deque[str] = deque()  # versions this writer committed, not retired, oldest first
        self._inline: set[str] = set()  # those of them that are their manifest alone
        self._unlisted = 0  # runs since the last listing

    @property
    def keep(self) -> int:
        return self._keep

    @keep.setter
    def keep(self, value: int) -> None:
        self._keep = value
        self._skip = 0  # a new keep (``prune``) applies at the next run
        self._unlisted = RESCAN_EVERY  # ... with a listing

    def run(
        self,
        next_seq: int | None,
        defer: Defer,
        committed: str | None = None,
        inline: bool = False,
    ) -> None:
        """Keep the newest ``keep`` committed versions; sweep leftovers of dead writes.
        ``next_seq`` is the writer's next sequence number; ``defer`` runs a slow delete on the
        writer thread; ``committed`` is the version this writer just committed (``inline``: its
        manifest alone). Failures are logged, never raised: a write that committed succeeded."""
        self._next_seq = next_seq
        if committed is not None:
            self._own.append(committed)
            if inline:
                self._inline.add(committed)
        if self._skip > 0 and self.swept:
            self._skip -= 1
            return
        try:
            if self._retire_own(defer):
                return
            listing = self._store.scan()
            self._unlisted = 0
            retired = listing.committed[self.keep :]
            held = listing.payloads.union(listing.markers)
            leftovers = self._retire(retired, held)
            doomed = self._doomed(listing, retired)
            # Temp names of dead writes, and retired manifests whose delete waits (`_retire_own`).
            leftovers += [t for t in listing.temps if self._is_dead(t[1:].split(".", 1)[0])]
            if doomed or leftovers:
                # Deleting a big payload takes a while (~0.15 s per GiB on ext4), and even a
                # small file's delete costs a sixth of a commit: not on the caller's path.
                # Payloads without a manifest are ignored by readers meanwhile.
                markers = listing.markers
                defer(lambda: self._delete_payloads(doomed, markers, leftovers), True)
            if not self.swept:
                self.swept = True
                sweep_staging(self._store.staging_root, self.attempt)
            if not (retired or doomed or listing.temps):
                self._skip = (self.keep - len(listing.committed)) // 2
            kept = set(listing.committed[: self.keep])
            self._own = deque(vid for vid in self._own if vid in kept)
            self._inline.intersection_update(self._own)
        except Exception as exc:
            log.warning("checkpoint retention at %s failed: %s", self.url, exc)

    def _retire_own(self, defer: Defer) -> bool:
        """Retire this writer's own versions beyond ``keep`` without listing the scope (local
        disk, between listings); False when a listing is due instead."""
        if not (
            self._store.is_local
            and self.swept
            and self._unlisted < RESCAN_EVERY
            and len(self._own) > self.keep
        ):
            return False
        self._unlisted += 1
        retired = [self._own.popleft() for _ in range(len(self._own) - self.keep)]
        leftovers = self._retire(retired, set())  # local disk: no grace, whatever it holds
        # Its payload, if it has one (an inline version has none: nothing to look for). The
        # renamed manifest of an inline version is a few hundred bytes: its delete can wait
        # for a few more (`defer(soon=False)`); a payload's space is freed soon.
        payloads = [vid for vid in retired if vid not in self._inline]
        self._inline.difference_update(retired)
        defer(lambda: self._delete_payloads(payloads, {}, leftovers), bool(payloads))
        return True

    def _retire(self, vids: list[str], held: set[str]) -> list[str]:
        """Uncommit ``vids`` now (new readers skip them at once); return the names the store
        left to delete later. An inline version has no payload to keep for readers: no grace
        for it (``held``: the ids that have a payload or markers)."""
        leftovers = []
        for vid in vids:
            leftover = self._store.retire(vid, grace=self.retire_grace > 0 and vid in held)
            if leftover is not None:
                leftovers.append(leftover)
        return leftovers

    def _doomed(self, listing: Listing, retired: list[str]) -> list[str]:
        """Payloads to delete: retired ones (local: now, under a lock; object stores: once
        their grace has passed) and the uncommitted leftovers of dead writes."""
        committed = set(listing.committed)
        now_ms = time.time() * 1000
        doomed = []
        for vid in sorted(listing.known_ids() - committed):
            if vid in listing.retired:
                if now_ms - listing.retired[vid] >= self.retire_grace * 1000:
                    doomed.append(vid)
            elif self._is_dead(vid):
                doomed.append(vid)
        # Without a grace (always so on local disk) at once; an inline version has nothing but
        # its manifest, and retiring it deleted that.
        held = listing.payloads.union(listing.markers)
        if self.retire_grace == 0:
            doomed += [v for v in retired if v not in doomed and v in held]
        return doomed

    def _delete_payloads(
        self, ids: list[str], markers: dict[str, list[str]], leftovers: list[str]
    ) -> None:
        for vid in ids:
            self._store.delete_payload(vid, markers.get(vid, []))
        for name in leftovers:  # after its payload: a held payload keeps its leftover too
            self._store.delete_temp(name)

    def _is_dead(self, vid: str) -> bool:
        """An uncommitted prefix is garbage if an earlier attempt left it, or we did.

        On local disk an own-attempt prefix below our sequence is ours or a crashed writer's
        (a live writer holds its prefix's lock, which the delete respects); an object store has
        no locks, so there only the ids this scope object reserved count as ours.
        """
        parsed = parse_version_id(vid)
        if parsed is None:
            return False
        attempt, seq = parsed
        if attempt < self.attempt:
            return True
        if attempt > self.attempt or self._next_seq is None:
            return False
        if self._store.is_local:
            return seq < self._next_seq - 1
        return vid in self.reserved and seq < self._next_seq - 1
