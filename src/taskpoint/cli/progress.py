"""Progress while an execution runs: a live rich line per running node on a terminal, plain
lines (attempt started / ended, checkpoint resumed from) otherwise."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import IO, Any

from taskpoint.cli.render import (
    BUDGET_LABELS,
    STATUS_STYLE,
    budgets_text,
    duration,
    exhausted_text,
    size,
)
from taskpoint.engine.events import AttemptInfo, Listener
from taskpoint.records.status import AttemptStatus

# Held while the display thread draws: forking (process isolation) waits for it, so a child
# never inherits a console or stream lock held by a thread that does not exist in the child.
RENDER_LOCK = threading.RLock()
os.register_at_fork(
    before=RENDER_LOCK.acquire,
    after_in_parent=RENDER_LOCK.release,
    after_in_child=RENDER_LOCK.release,
)


def describe_version(v: Any, *, now: float | None = None) -> str:
    if v is None:
        return "no checkpoint"
    step = f"step {v.step}, " if v.step is not None else ""
    text = f"checkpoint {v.id} ({step}{size(v.size)}"
    if now is not None:
        text += f", {duration(v.created.timestamp(), now)} ago"
    return text + ")"


def attempt_label(info: AttemptInfo) -> str:
    """``attempt 3 (retries 1/3, system 0/3)``: the retries each budget spent before it."""
    budgets = budgets_text(info.budgets)
    return f"attempt {info.attempt}" + (f" ({budgets})" if budgets else "")


def started_line(info: AttemptInfo) -> str:
    if info.checkpoint_at_start is None:
        origin = "from the start (no checkpoint yet)"
    else:
        origin = f"resuming from {describe_version(info.checkpoint_at_start)}"
    return f"{info.node}  {attempt_label(info)}  started, {origin}"


def ended_line(info: AttemptInfo, status: str, error: str | None, end_version: Any) -> str:
    took = duration(info.started, time.time())
    text = (
        f"{info.node}  attempt {info.attempt}  {status} after {took}, "
        f"{'latest ' if end_version is not None else ''}{describe_version(end_version)}"
    )
    if error and status != AttemptStatus.SUCCEEDED:
        text = f"{text}: {error}"
    text += _verdict(info)
    if info.resume_warning:  # the resume guard (engine/resume_guard.py)
        text += f"; warning: restarted from scratch: {info.resume_warning}"
    return text


def _verdict(info: AttemptInfo) -> str:
    """Which budget the retry spends (and how much of it is spent), or which one ran out."""
    if info.retry_budget is not None:
        spent, limit = info.budgets.get(info.retry_budget, [0, 0])
        label = BUDGET_LABELS.get(info.retry_budget, info.retry_budget)
        return f"; retrying ({label} {spent}/{limit})"
    if info.exhausted is not None:
        return f"; {exhausted_text(info.exhausted, info.budgets)}"
    return ""


class PlainProgress(Listener):
    """One line per event, for logs and pipes."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def execution_started(self, execution_id: str, name: str, resumed: bool) -> None:
        self._print(f"{'resuming' if resumed else 'running'} {name} as execution {execution_id}")

    def node_reused(self, execution_id: str, node: str) -> None:
        self._print(f"{node}  succeeded before: stored output reused, not run again")

    def attempt_started(self, info: AttemptInfo) -> None:
        self._print(started_line(info))

    def attempt_ended(
        self, info: AttemptInfo, status: str, error: str | None, checkpoint_at_end: Any
    ) -> None:
        self._print(ended_line(info, status, error, checkpoint_at_end))

    def retry_scheduled(self, info: AttemptInfo, delay: float) -> None:
        if delay > 0:
            self._print(f"{info.node}  retrying in {delay:g}s")

    def close(self) -> None:
        pass


class LiveProgress(PlainProgress):
    """A rich live region with one line per running node, refreshed by a small thread; finished
    attempts are printed above it as permanent lines."""

    POLL_EVERY = 1.0  # seconds between checkpoint listings per running node

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console(stderr=True)
        self.live = Live(console=self.console, auto_refresh=False, transient=True)
        self.running: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _print(self, line: str) -> None:
        with RENDER_LOCK:
            self.live.console.print(line, highlight=False, markup=False)
            self._draw()

    def execution_started(self, execution_id: str, name: str, resumed: bool) -> None:
        with RENDER_LOCK:
            if self._thread is None:
                self.live.start()
                self._thread = threading.Thread(target=self._loop, daemon=True)
                self._thread.start()
        super().execution_started(execution_id, name, resumed)

    def attempt_started(self, info: AttemptInfo) -> None:
        with RENDER_LOCK:
            self.running[info.node] = {
                "info": info,
                "latest": info.checkpoint_at_start,
                "polled": time.monotonic(),
                "scope": None,
            }
        super().attempt_started(info)

    def checkpoint_written(self, info: AttemptInfo, version: Any) -> None:
        entry = self.running.get(info.node)
        if entry is not None:
            entry["latest"] = version

    def attempt_ended(
        self, info: AttemptInfo, status: str, error: str | None, checkpoint_at_end: Any
    ) -> None:
        with RENDER_LOCK:
            entry = self.running.pop(info.node, None)
            if entry and entry["scope"] is not None:
                entry["scope"].close()
        from rich.text import Text

        text = Text(ended_line(info, status, error, checkpoint_at_end))
        text.highlight_words([f" {status} "], STATUS_STYLE.get(status, ""))
        with RENDER_LOCK:
            self.live.console.print(text, highlight=False)
            self._draw()

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            with RENDER_LOCK:
                self._poll()
                self._draw()

    def _poll(self) -> None:
        # With process isolation only the child sees its writes: list the scope now and then.
        from taskpoint.checkpoint import Checkpoint

        now = time.monotonic()
        for entry in self.running.values():
            if now - entry["polled"] < self.POLL_EVERY:
                continue
            entry["polled"] = now
            try:
                if entry["scope"] is None:
                    info = entry["info"]
                    entry["scope"] = Checkpoint.open(
                        info.checkpoint_url, storage_options=info.storage_options or None
                    )
                entry["latest"] = entry["scope"].latest() or entry["latest"]
            except Exception:
                pass  # the display must never break a run

    def _draw(self) -> None:
        from rich.markup import escape
        from rich.text import Text

        now = time.time()
        lines = []
        for entry in self.running.values():
            info: AttemptInfo = entry["info"]
            lines.append(
                f"[cyan]▶[/cyan] {escape(info.node)}  {escape(attempt_label(info))}  "
                f"{describe_version(entry['latest'], now=now)}  "
                f"elapsed {duration(info.started, now)}"
            )
        self.live.update(Text.from_markup("\n".join(lines)) if lines else Text(""), refresh=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with RENDER_LOCK:
            for entry in self.running.values():
                if entry["scope"] is not None:
                    entry["scope"].close()
            self.running.clear()
            self.live.stop()
