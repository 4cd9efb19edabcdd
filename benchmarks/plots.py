"""PNG plots of a suite run (matplotlib, Agg backend): checkpoint I/O, training loop, goodput."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

COLORS = {"taskpoint": "#1f77b4", "baseline": "#7f7f7f", "other": "#ff7f0e", "other2": "#2ca02c"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def _bars(ax: Any, labels: list[str], values: list[float], colors: list[str], fmt: str) -> None:
    bars = ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)), labels, rotation=20, ha="right", fontsize=8)
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(
            fmt.format(value),
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=7,
        )


def checkpoint(samples: dict[str, Any], sync_key: str, gib: float, out: Path) -> Path | None:
    """Sync write bandwidth, async stall and restore bandwidth of the torch state."""
    if sync_key not in samples:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    sync = {k: gib / _median(v) for k, v in samples[sync_key].items()}
    order = [
        ("raw", "os.write+fsync"),
        ("taskpoint", "taskpoint save"),
        ("torch.save", "torch.save+fsync"),
        ("safetensors", "safetensors+fsync"),
    ]
    shown = [(name, label) for name, label in order if name in sync]
    _bars(
        axes[0],
        [label for _, label in shown],
        [sync[name] for name, _ in shown],
        [COLORS["baseline"], COLORS["taskpoint"], COLORS["other"], COLORS["other2"]][: len(shown)],
        "{:.2f}",
    )
    axes[0].set_title(f"sync write, {gib:.3g} GiB state (GiB/s)", fontsize=9)
    if "async" in samples:
        stall = {k: _median(v) * 1e3 for k, v in samples["async"].items()}
        labels, values, colors = ["copy_ to prealloc", "taskpoint async"], [], []
        values = [stall["copy_"], stall["taskpoint"]]
        colors = [COLORS["baseline"], COLORS["taskpoint"]]
        if "dcp" in stall:
            labels.append("DCP async_save")
            values.append(stall["dcp"])
            colors.append(COLORS["other"])
        labels.append("taskpoint sync")
        values.append(samples.get("sync_stall_s", float("nan")) * 1e3)
        colors.append(COLORS["other2"])
        # overlap=True, measured inside the training loop (benchmarks.loop_stall) with a
        # core left free: save() plus the wait in the next optimizer.step()
        in_loop = sorted(
            (int(k.split("_")[1]), k) for k in samples if k.startswith("loop_") and "_threads" in k
        )
        fewest = samples[in_loop[0][1]] if len(in_loop) > 1 else {}
        if "overlap blocked" in fewest:
            labels.append("taskpoint overlap\n(in a loop, core free)")
            values.append(fewest["overlap blocked"] * 1e3)
            colors.append(COLORS["taskpoint"])
        _bars(axes[1], labels, values, colors, "{:.0f}")
        axes[1].set_title("time the loop is blocked per save (ms)", fontsize=9)
    if "restore" in samples:
        rest = {k: gib / _median(v) for k, v in samples["restore"].items()}
        _bars(
            axes[2],
            ["raw cold read", "taskpoint restore"],
            [rest["raw"], rest["taskpoint"]],
            [COLORS["baseline"], COLORS["taskpoint"]],
            "{:.2f}",
        )
        axes[2].set_title("restore into the model, cold (GiB/s)", fontsize=9)
    fig.tight_layout()
    path = out / "checkpoint.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def training_loop(trace: dict[str, Any], out: Path) -> Path | None:
    """Step durations of one block without and one with async checkpoints."""
    if not trace.get("ckpt_trace"):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 3.2))
    plain = trace["plain_trace"]
    ax.plot(
        [t for t, _, _ in plain],
        [dt * 1e3 for _, dt, _ in plain],
        lw=0.8,
        color=COLORS["baseline"],
        label="no checkpoints",
    )
    ckpt = trace["ckpt_trace"]
    ax.plot(
        [t for t, _, _ in ckpt],
        [dt * 1e3 for _, dt, _ in ckpt],
        lw=0.8,
        color=COLORS["taskpoint"],
        label=f"async save every {trace['interval']:g} s",
    )
    writes = [(t, dt) for t, dt, kind in ckpt if kind == "write"]
    ax.scatter(
        [t for t, _ in writes],
        [dt * 1e3 for _, dt in writes],
        s=6,
        color=COLORS["other"],
        label="steps while a write runs",
        zorder=3,
    )
    saves = [(t, dt) for t, dt, kind in ckpt if kind == "save"]
    ax.scatter(
        [t for t, _ in saves],
        [dt * 1e3 for _, dt in saves],
        s=14,
        marker="v",
        color="#d62728",
        label="step that calls save (stall)",
        zorder=3,
    )
    ax.set_xlabel("time in block (s)")
    ax.set_ylabel("step (ms)")
    ax.set_title("synthetic training loop: step time", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = out / "training_loop.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def goodput(
    outcomes: list[dict[str, Any]], steps: int, out: Path, name: str = "goodput.png"
) -> Path | None:
    """Progress (fraction of the job's steps) over wall time for every contender."""
    if not outcomes:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 3.6))
    palette = ["#7f7f7f", "#1f77b4", "#17becf", "#ff7f0e", "#2ca02c"]
    for color, outcome in zip(palette, outcomes, strict=False):
        points = outcome["progress"]
        if not points:
            continue
        label = outcome["name"]
        label += " (finished)" if outcome["finished"] else " (did not finish)"
        starts = {tuple(p) for p in outcome.get("starts", [])}
        segments: list[list[tuple[float, int]]] = [[]]
        for point in points:
            if tuple(point) in starts and segments[-1]:
                segments.append([])
            segments[-1].append(tuple(point))
        for i, segment in enumerate(segments):
            ax.plot(
                [t for t, _ in segment],
                [s / steps for _, s in segment],
                lw=1.2,
                color=color,
                label=label if i == 0 else None,
            )
            if i:  # the restart: from the last step logged to the next attempt's first
                (t0, s0), (t1, s1) = segments[i - 1][-1], segment[0]
                ax.plot([t0, t1], [s0 / steps, s1 / steps], lw=0.8, ls=":", color=color)
        for kill in outcome["kills"]:
            ax.axvline(kill, color=color, lw=0.5, ls="--", alpha=0.4)
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("job progress")
    ax.set_ylim(0, 1.05)
    ax.set_title("goodput under preemption (dashed: kills; dotted: restarts)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = out / name
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def interval(
    outcomes: list[dict[str, Any]], out: Path, name: str = "goodput_interval.png"
) -> Path | None:
    """The checkpoint interval ``Checkpoint.due()`` chose over time in the auto contenders
    (steps: the interval in force; dots: saves; dashed: kills)."""
    # With --rounds N each contender ran N times: one round each keeps the plot readable.
    shown, seen = [], set()
    for outcome in outcomes:
        if outcome.get("intervals") and outcome["name"] not in seen:
            seen.add(outcome["name"])
            shown.append(outcome)
    if not shown:
        return None
    rounds = sum(1 for o in outcomes if o.get("intervals")) // len(shown)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 3.6))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#17becf"]
    for color, outcome in zip(palette, shown, strict=False):
        rows = outcome["intervals"]
        ax.step([r[0] for r in rows], [r[1] for r in rows], where="post", lw=1.1, color=color,
                label=outcome["name"])  # fmt: skip
        saves = [r for r in rows if r[5]]
        ax.plot([r[0] for r in saves], [r[1] for r in saves], ".", ms=3, color=color)
        for kill in outcome["kills"]:
            ax.axvline(kill, color=color, lw=0.5, ls="--", alpha=0.4)
    ax.set_yscale("log")
    plain = plt.FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("interval chosen (s)")
    ax.set_title(
        'every_n_steps="auto": the interval Checkpoint.due() chose (dots: saves, dashed: kills)'
        + (f", round 1 of {rounds}" if rounds > 1 else ""),
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = out / name
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
