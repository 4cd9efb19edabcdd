"""How the cost grows (section ``scale`` of ``python -m benchmarks``, target 8).

    python -m benchmarks --only scale [--quick] [--scale-execs 100,10000,100000] ...

Every figure is a ratio within one run, of the same operation at the largest size against the
smallest (or against a baseline at the same size), and is plotted against size
(``scale.png``):

- records (``scale_records.py``): ``list --limit 50``, ``show``, the web view's API and
  ``resume`` with 100, 10,000 and 100,000 executions in one home, and ``show`` / ``resume`` of
  an execution of 10,000 nodes, per node, against one of 100. Target: ``list`` and ``show``
  at 100,000 executions within 2 x of 100.
- fan-out (``scale_fanout.py``): ``map`` over 100, 1,000 and 10,000 items, inline, process
  and Dask (a local cluster of 2 workers). Targets: per item at the largest size within 1.3 x
  of 100 items; on Dask within 2 x of ``client.map`` of the same plain function. Process
  isolation stops at 1,000 items by default: an attempt forks the driver (~30 ms on 2 busy
  cores, two at a time), so 10,000 would take ~5 minutes alone (``--scale-process-items``).
- checkpoints (``scale_store.py``): a scope of 10,000 committed versions (``keep=10000``) and a
  directory of 100,000 small files (save and restore against ``cp -r`` and ``tar``).
- S3 (``scale_store.py``): a 1 GiB version written and read through a moto server against
  boto3's ``upload_file`` / ``download_file``. Target: >= 0.9 x.

Not in the default ``--only`` list (it takes ~8 minutes and starts a moto server and a Dask
cluster): ask for it with ``--only scale``. ``--scale-parts`` runs some of its four parts.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row

PARTS = ("records", "fanout", "checkpoints", "s3")
QUICK = {
    "scale_execs": "20,200,2000",
    "scale_wide_nodes": 200,
    "scale_narrow_nodes": 20,
    "scale_items": "10,50,200",
    "scale_process_items": "10,50",
    "scale_versions": "20,100,300",
    "scale_files": 500,
    "scale_s3_mib": 32,
    "scale_repeats": 3,
    "scale_s3_repeats": 2,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("target 8 (scale: --only scale)")
    g.add_argument("--scale-parts", default=",".join(PARTS), help="records,fanout,checkpoints,s3")
    g.add_argument("--scale-execs", default="100,10000,100000", help="executions in the home")
    g.add_argument("--scale-wide-nodes", type=int, default=10_000, help="nodes of the wide one")
    g.add_argument("--scale-narrow-nodes", type=int, default=100, help="... and of its baseline")
    g.add_argument("--scale-items", default="100,1000,10000", help="map sizes, inline and Dask")
    g.add_argument(
        "--scale-process-items",
        default="100,1000",
        help="map sizes, process isolation (10,000 forks take ~5 minutes on 2 cores: capped)",
    )
    g.add_argument("--scale-dask-workers", type=int, default=2)
    g.add_argument("--scale-versions", default="100,1000,10000", help="committed versions")
    g.add_argument("--scale-files", type=int, default=100_000, help="files of the directory")
    g.add_argument("--scale-s3-mib", type=int, default=1024, help="S3 version size")
    g.add_argument("--scale-repeats", type=int, default=5, help="rounds per measurement")
    g.add_argument(
        "--scale-s3-repeats", type=int, default=3, help="S3 rounds (2 writes, 1 read a side)"
    )


def sizes(text: str) -> list[int]:
    return sorted({int(x) for x in text.split(",") if x.strip()})


def run(args: argparse.Namespace, workdir: str) -> tuple[list[Row], dict[str, Any]]:
    """The section's rows and what its plot needs (also saved in the suite's JSON)."""
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    parts = [p for p in args.scale_parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown --scale-parts {sorted(unknown)}; known: {', '.join(PARTS)}")
    repeats = args.scale_repeats
    data: dict[str, Any] = {"seconds": {}}
    rows: list[Row] = []
    for part in parts:
        start = time.perf_counter()
        print(f"-- scale: {part}", flush=True)
        if part == "records":
            from benchmarks import scale_records

            data["records"] = scale_records.run(
                workdir,
                sizes(args.scale_execs),
                repeats,
                args.scale_wide_nodes,
                args.scale_narrow_nodes,
            )
            rows += records_rows(data["records"])
        elif part == "fanout":
            from benchmarks import scale_fanout

            data["fanout"] = scale_fanout.run(
                workdir,
                sizes(args.scale_items),
                sizes(args.scale_process_items),
                args.scale_dask_workers,
            )
            rows += fanout_rows(data["fanout"])
        elif part == "checkpoints":
            from benchmarks import scale_store

            data["versions"] = scale_store.many_versions(
                workdir, sizes(args.scale_versions), repeats
            )
            data["files"] = scale_store.many_files(workdir, args.scale_files)
            data["files_count"] = args.scale_files
            rows += checkpoint_rows(data["versions"], data["files"], args.scale_files)
        else:
            from benchmarks import scale_store

            data["s3"] = scale_store.s3_roundtrip(workdir, args.scale_s3_mib, args.scale_s3_repeats)
            data["s3_mib"] = args.scale_s3_mib
            rows += s3_rows(data["s3"], args.scale_s3_mib)
        data["seconds"][part] = time.perf_counter() - start
    return rows, data


# -------------------------------------------------------------------------- rows
def _n(value: int) -> str:
    return f"{value:,}"


def growth(metric: str, values: list[float], unit: str, limit: float | None, note: str = "") -> Row:
    """The value at the largest size against the smallest: ratio = largest / smallest."""
    ours, base = values[-1], values[0]
    ratio = ours / base if base else None
    target = f"<= {limit:g} x smallest" if limit else "(info)"
    ok = None if limit is None or ratio is None else ratio <= limit
    return Row(metric, ours, base, unit, ratio, target, ok, note)


def records_rows(r: dict[str, Any]) -> list[Row]:
    lo, hi = _n(r["sizes"][0]), _n(r["sizes"][-1])
    span = f"{hi} vs {lo} executions"
    ms = r["ms"]
    per_node = r["per_node_ms"]
    wide, narrow = _n(r["wide_nodes"]), _n(r["narrow_nodes"])
    return [
        growth(f"taskpoint list --limit 50, {span}", ms["list"], "ms", 2.0),
        growth(f"taskpoint show EXEC (3 nodes), {span}", ms["show"], "ms", 2.0),
        growth(f"  taskpoint show ID-PREFIX (8 characters), {span}", ms["show prefix"], "ms", None),
        growth(f"  web API /api/executions (page of 50), {span}", ms["api list"], "ms", None),
        growth(
            f"  same, first request after a write, {span}",
            ms["api list first"],
            "ms",
            None,
            "the status counts of the filters are recounted (then reused while nothing changes)",
        ),
        growth(f"  web API /api/executions/ID, {span}", ms["api execution"], "ms", None),
        growth(f"  resume EXEC (2 nodes reused, 1 fails), {span}", ms["resume"], "ms", None),
        Row(
            f"  show, per node, {wide}-node vs {narrow}-node execution",
            per_node["show wide"],
            per_node["show narrow"],
            "ms",
            per_node["show wide"] / per_node["show narrow"],
            "(info)",
            None,
        ),
        Row(
            f"  resume, per node, {wide}-node vs {narrow}-node execution",
            per_node["resume wide"],
            per_node["resume narrow"],
            "ms",
            per_node["resume wide"] / per_node["resume narrow"],
            "(info)",
            None,
        ),
    ]


def fanout_rows(f: dict[str, Any]) -> list[Row]:
    per_item = f["per_item_ms"]
    rows = []
    for backend in ("inline", "process", "dask"):
        by_size = per_item[backend]
        ns = sorted(by_size, key=int)
        values = [by_size[n] for n in ns]
        span = f"{_n(int(ns[-1]))} vs {_n(int(ns[0]))} items"
        rows.append(growth(f"map, per item, {backend}, {span}", values, "ms", 1.3))
    for n in sorted(per_item["dask"], key=int):
        ours, base = per_item["dask"][n], per_item["dask bare"][n]
        rows.append(
            Row(
                f"map on Dask, per item, {_n(int(n))} items (vs client.map)",
                ours,
                base,
                "ms",
                ours / base,
                "<= 2 x baseline",
                ours / base <= 2.0,
            )
        )
    return rows


def checkpoint_rows(v: dict[str, Any], files: dict[str, float], count: int) -> list[Row]:
    span = f"{_n(v['marks'][-1])} vs {_n(v['marks'][0])} versions"
    where = "tmpfs" if v["tmpfs"] else "disk"
    ms = v["ms"]
    rows = [
        growth(f"checkpoint write 16 B, {span} ({where})", ms["write"], "ms", None),
        growth(f"  latest(), {span}", ms["latest"], "ms", None),
        growth(f"  versions(), per version, {span}", ms["versions"], "ms", None),
        growth(f"  retention pass after a write, {span}", ms["retention"], "ms", None),
    ]
    for ours, base in (
        ("save", "cp -r + sync"),
        ("save", "tar + sync"),
        ("restore", "cp -r"),
        ("restore", "tar"),
    ):
        rows.append(
            Row(
                f"{ours} dir of {_n(count)} files (vs {base})",
                files[ours],
                files[base],
                "s",
                files[ours] / files[base],
                "(info)",
                None,
            )
        )
    return rows


def s3_rows(s3: dict[str, list[float]], mib: int) -> list[Row]:
    import statistics

    gib = mib / 1024
    rows = []
    for ours, base, label in (
        ("write", "upload", "S3 write {} version (vs boto3 upload_file)"),
        ("read", "download", "S3 read {} version (vs boto3 download_file)"),
    ):
        rate = gib / statistics.median(s3[ours])
        base_rate = gib / statistics.median(s3[base])
        size = f"{gib:g} GiB" if mib >= 1024 else f"{mib} MiB"
        rows.append(
            Row(
                label.format(size),
                rate,
                base_rate,
                "GiB/s",
                rate / base_rate,
                ">= 0.9 x baseline",
                rate / base_rate >= 0.9,
                "moto server in its own process on 127.0.0.1; same file, same server; each round "
                "writes A B B A and reads A B (A, B alternating between rounds)",
            )
        )
    return rows


# -------------------------------------------------------------------------- plot
def plot(data: dict[str, Any], out: Path) -> Path | None:
    """``scale.png``: each part's figures against size (log-log), S3 as bars."""
    from benchmarks.plots import _plt

    panels = [p for p in ("records", "fanout", "versions", "s3") if p in data]
    if not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "records":
            r = data["records"]
            for name in ("list", "show", "api list", "api execution", "resume"):
                ax.plot(r["sizes"], r["ms"][name], marker="o", label=name)
            _log_axes(ax, "executions in the home", "ms", "records")
        elif panel == "fanout":
            for name, by_size in data["fanout"]["per_item_ms"].items():
                ns = sorted(by_size, key=int)
                label = "client.map (Dask)" if name == "dask bare" else f"map, {name}"
                ax.plot([int(n) for n in ns], [by_size[n] for n in ns], marker="o", label=label)
            _log_axes(ax, "items", "ms per item", "fan-out")
        elif panel == "versions":
            v = data["versions"]
            labels = {"versions": "versions(), per version", "retention": "retention pass"}
            for name, values in v["ms"].items():
                ax.plot(v["marks"], values, marker="o", label=labels.get(name, name))
            _log_axes(ax, "committed versions in the scope", "ms", "checkpoints")
        else:
            _s3_bars(ax, data["s3"], data["s3_mib"])
    fig.tight_layout()
    path = out / "scale.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _log_axes(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)


def _s3_bars(ax: Any, s3: dict[str, list[float]], mib: int) -> None:
    import statistics

    from benchmarks.plots import COLORS, _bars

    gib = mib / 1024
    names = [
        ("write", "taskpoint save"),
        ("upload", "upload_file"),
        ("read", "taskpoint restore"),
        ("download", "download_file"),
    ]
    values = [gib / statistics.median(s3[key]) for key, _ in names]
    colors = [COLORS["taskpoint"], COLORS["baseline"]] * 2
    _bars(ax, [label for _, label in names], values, colors, "{:.2f}")
    ax.set_title(f"S3 (moto), {mib} MiB version (GiB/s)", fontsize=9)
