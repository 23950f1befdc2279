"""The main job: ``python -m aiopg_io`` with no arguments.

Prints this machine's driver matrix, then a short self-benchmark (30 s at most) on a
temporary file in the current directory's filesystem: 4 KiB random reads at 1, 8 and 32 in
flight, warm page cache, per available driver, and at 32 in flight with direct I/O where the
filesystem allows it; IOPS and bandwidth, and each driver's ratio to the worker driver.

The plan runs ``--rounds`` times over (3 by default) and each figure is the median of its
rounds: on a shared machine a burst of load from elsewhere then lands on every driver
rather than on whichever ran at that moment, so the ratios stay meaningful.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

from ._info import machine_matrix, render
from .bench._engine import Job, JobResult, prepare_file, run_job

__all__ = ["add_arguments", "main", "plan"]

DRIVERS = ("io_uring", "posix_aio", "worker")
DEPTHS = (1, 8, 32)
FILE_SIZE = 128 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--plot", metavar="FILE.png", help="draw IOPS against queue depth (needs matplotlib)")
    parser.add_argument("--dir", default=".", help="where the temporary file goes (default: .)")
    parser.add_argument("--seconds", type=float, default=0.5, help="measured seconds per run (default 0.5)")
    parser.add_argument(
        "--rounds", type=_positive_int, default=3, help="runs of the whole plan; medians reported (default 3)"
    )


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return n


def _median(runs: list[JobResult]) -> JobResult:
    """The run with the median IOPS (the lower middle one for an even count), carrying
    every round's IOPS in ``extra["rounds_iops"]``."""
    ordered = sorted(runs, key=lambda r: r.iops)
    mid = ordered[(len(ordered) - 1) // 2]
    mid.extra["rounds_iops"] = [r.iops for r in runs]
    return mid


def plan(drivers: dict[str, dict[str, str]], seconds: float, filename: str) -> list[Job]:
    jobs = []
    for name in DRIVERS:
        row = drivers.get(name, {})
        if row.get("buffered") == "available":
            for depth in DEPTHS:
                jobs.append(
                    Job(filename, iodepth=depth, driver=name, runtime=seconds, ramp=0.2, size=FILE_SIZE)
                )
        if row.get("direct") == "available":
            jobs.append(
                Job(filename, iodepth=32, direct=True, driver=name, runtime=seconds, ramp=0.2, size=FILE_SIZE)
            )
    return jobs


def _progress(i: int, n: int, label: str, stream: Any) -> None:
    width = 30
    filled = width * i // max(n, 1)
    stream.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {i}/{n} {label:<32}")
    stream.flush()


def _table(results: list[JobResult]) -> str:
    ref = {(r.job.direct, r.job.iodepth): r.iops for r in results if r.driver == "worker"}
    lines = [
        f"  {'driver':<10}{'mode':<10}{'in flight':>9}{'IOPS':>11}{'MiB/s':>9}{'p50 µs':>9}{'vs worker':>11}"
    ]
    for r in results:
        base = ref.get((r.job.direct, r.job.iodepth))
        ratio = f"{r.iops / base:.2f}x" if base else "-"
        mode = "direct" if r.job.direct else "buffered"
        lines.append(
            f"  {r.driver:<10}{mode:<10}{r.job.iodepth:>9}{r.iops:>11,.0f}{r.mib_per_s:>9.1f}"
            f"{r.lat_p50_us:>9.1f}{ratio:>11}"
        )
    return "\n".join(lines)


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend; asked before the benchmark runs, so
    a missing matplotlib costs no wasted 30 seconds."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'aiopg_io[plot]'") from None
    return plt


def _plot(plt: Any, results: list[JobResult], path: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in DRIVERS:
        pts = sorted((r.job.iodepth, r.iops) for r in results if r.driver == name and not r.job.direct)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{name} (buffered)")
        direct = [(r.job.iodepth, r.iops) for r in results if r.driver == name and r.job.direct]
        if direct:
            xs, ys = [p[0] for p in direct], [p[1] for p in direct]
            ax.scatter(xs, ys, marker="x", s=60, label=f"{name} (direct)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(DEPTHS), [str(d) for d in DEPTHS])
    ax.set_xlabel("reads in flight")
    ax.set_ylabel("IOPS (4 KiB random reads)")
    ax.set_title("aiopg_io drivers on this machine")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(args: argparse.Namespace) -> int:
    plt = _pyplot() if args.plot else None
    matrix = machine_matrix(args.dir)
    out = sys.stdout
    if not args.json:
        print(render(matrix), file=out)
        print("\n  Self-benchmark: 4 KiB random reads on a 128 MiB file in", matrix.directory, file=out)
    fd, filename = tempfile.mkstemp(prefix=".aiopg_io-selfbench-", dir=args.dir)
    os.close(fd)
    results: list[JobResult] = []
    started = time.perf_counter()
    try:
        prepare_file(filename, FILE_SIZE)
        jobs = plan(matrix.drivers, args.seconds, filename)
        runs: list[list[JobResult]] = [[] for _ in jobs]
        total = len(jobs) * args.rounds
        for rnd in range(args.rounds):
            for i, job in enumerate(jobs):
                label = f"{job.driver} {'direct' if job.direct else 'buffered'} x{job.iodepth}"
                if not args.json:
                    _progress(rnd * len(jobs) + i, total, f"{label} (round {rnd + 1})", sys.stderr)
                runs[i].append(run_job(job))
        results = [_median(r) for r in runs]
        if not args.json:
            _progress(total, total, "done", sys.stderr)
            sys.stderr.write("\n")
    finally:
        os.unlink(filename)
    if args.json:
        doc = {"matrix": matrix.as_dict(), "rounds": args.rounds, "results": [r.as_dict() for r in results]}
        json.dump(doc, out, indent=2)
        out.write("\n")
    else:
        print(_table(results), file=out)
        print(
            f"\n  ({time.perf_counter() - started:.1f} s; each figure the median of {args.rounds} "
            "interleaved rounds; ratios are per mode and depth)",
            file=out,
        )
    if args.plot:
        _plot(plt, results, args.plot)
        if not args.json:
            print(f"  plot written to {args.plot}", file=out)
    return 0
