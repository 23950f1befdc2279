"""The main job: ``python -m aiopg_io`` with no arguments.

Prints this machine's driver matrix, then a short self-benchmark (30 s at most) on a
temporary file in the current directory's filesystem: 4 KiB random reads at 1, 8 and 32 in
flight, per available driver, buffered (warm page cache) and direct (O_DIRECT) where the
filesystem allows it; IOPS and MiB/s, and each driver's ratio to the worker driver.

The plan runs ``--rounds`` times over (3 by default), interleaved: on a shared machine a
burst of load from elsewhere then lands on every driver rather than on whichever ran at that
moment. Each figure is the median of its rounds, printed with its spread: the lowest and the
highest round. A ratio is taken within each round (the driver and the worker measured
seconds apart, under the same load) and the median of those is shown, with its spread too.
A figure whose highest round is more than :data:`NOISY` times its lowest is *noisy*; the job
then says, under the table, that the machine was busy: a ratio built on such figures can
move by as much from one run to the next.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any

from ._info import Matrix, machine_matrix, render
from .bench._engine import Job, JobResult, parse_size, prepare_file, run_job

__all__ = ["NOISY", "add_arguments", "figure", "main", "noise_note", "plan", "summarize", "table"]

DRIVERS = ("io_uring", "posix_aio", "worker")
DEPTHS = (1, 8, 32)
FILE_SIZE = 128 << 20

#: A figure is noisy when its highest round is more than this many times its lowest. Back to
#: back on an idle machine the rounds of a cell stay within a few percent of each other; a
#: quarter apart means something else took the CPU or the disk during some of them.
NOISY = 1.25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--plot", metavar="FILE.png", help="draw IOPS against queue depth (needs matplotlib)")
    parser.add_argument("--dir", default=".", help="where the temporary file goes (default: .)")
    parser.add_argument("--seconds", type=float, default=0.3, help="measured seconds per run (default 0.3)")
    parser.add_argument(
        "--ramp", type=float, default=0.1, help="unmeasured seconds before each run (default 0.1)"
    )
    parser.add_argument("--size", type=parse_size, default=FILE_SIZE, help="the file's size (default 128m)")
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


def plan(
    drivers: dict[str, dict[str, str]],
    seconds: float,
    filename: str,
    *,
    ramp: float = 0.1,
    size: int = FILE_SIZE,
) -> list[Job]:
    """One round: each available driver, buffered then direct, at each depth."""
    jobs = []
    for name in DRIVERS:
        for mode, direct in (("buffered", False), ("direct", True)):
            if drivers.get(name, {}).get(mode) == "available":
                for depth in DEPTHS:
                    jobs.append(
                        Job(
                            filename,
                            iodepth=depth,
                            direct=direct,
                            size=size,
                            driver=name,
                            runtime=seconds,
                            ramp=ramp,
                        )
                    )
    return jobs


def _spread(values: list[float]) -> float:
    """Highest over lowest: 1.0 when every round agrees (or there is one), inf when a round
    counted no op."""
    if len(values) < 2:
        return 1.0
    low = min(values)
    return max(values) / low if low > 0 else math.inf


def _label(r: JobResult) -> str:
    return f"{r.driver} {'direct' if r.job.direct else 'buffered'} x{r.job.iodepth}"


def summarize(runs: list[list[JobResult]]) -> list[JobResult]:
    """One result per cell (``runs[i]``: cell ``i``'s rounds, in round order): the round with
    the median IOPS (the lower middle one for an even count), carrying every round's IOPS in
    ``extra["rounds_iops"]`` and, where the worker driver ran the same mode and depth, the
    ratio to it in each round (``extra["rounds_vs_worker"]``) and their median
    (``extra["vs_worker"]``)."""
    results = []
    for cell in runs:
        mid = sorted(cell, key=lambda r: r.iops)[(len(cell) - 1) // 2]
        mid.extra["rounds_iops"] = [r.iops for r in cell]
        mid.extra["noisy"] = _spread(mid.extra["rounds_iops"]) > NOISY
        results.append(mid)
    cells = list(zip(results, runs, strict=True))
    worker = {(r.job.direct, r.job.iodepth): cell for r, cell in cells if r.driver == "worker"}
    for r, cell in cells:
        base = worker.get((r.job.direct, r.job.iodepth))
        if base is None or not all(b.iops > 0 for b in base):
            continue
        ratios = [a.iops / b.iops for a, b in zip(cell, base, strict=True)]
        r.extra["rounds_vs_worker"] = ratios
        r.extra["vs_worker"] = statistics.median_low(ratios)
    return results


def _progress(i: int, n: int, label: str, stream: Any) -> None:
    width = 30
    filled = width * i // max(n, 1)
    stream.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {i}/{n} {label:<32}")
    stream.flush()


def _range(values: list[float], fmt: str) -> str:
    return f"{min(values):{fmt}}-{max(values):{fmt}}" if len(values) > 1 else ""


def table(results: list[JobResult]) -> str:
    """The results of :func:`summarize` as rows: each IOPS and ratio with its lowest and
    highest round beside it (MiB/s and p50 are the median round's)."""
    lines = [
        f"  {'driver':<10}{'mode':<9}{'in flight':>9}{'IOPS':>10}  {'low-high':<18}{'MiB/s':>7}"
        f"{'p50 µs':>9}{'vs worker':>11}  low-high"
    ]
    for r in results:
        iops = r.extra["rounds_iops"]
        ratios = r.extra.get("rounds_vs_worker")
        ratio = f"{r.extra['vs_worker']:.2f}x" if ratios else "-"
        ratio_range = _range(ratios, ".2f") if ratios else ""
        mode = "direct" if r.job.direct else "buffered"
        lines.append(
            f"  {r.driver:<10}{mode:<9}{r.job.iodepth:>9}{r.iops:>10,.0f}  {_range(iops, ',.0f'):<18}"
            f"{r.mib_per_s:>7.1f}{r.lat_p50_us:>9.1f}{ratio:>11}  {ratio_range}".rstrip()
        )
    return "\n".join(lines)


def noise_note(results: list[JobResult]) -> str | None:
    """A line when some figure's rounds are more than :data:`NOISY` apart; None otherwise."""
    noisy = [r for r in results if r.extra["noisy"]]
    if not noisy:
        return None
    worst = max(noisy, key=lambda r: _spread(r.extra["rounds_iops"]))
    spread = _spread(worst.extra["rounds_iops"])
    widest = f"{spread:.2f}x" if math.isfinite(spread) else "a round that counted no read"
    return (
        f"  Noisy: in {len(noisy)} of {len(results)} figures the highest round was more than {NOISY}x the "
        f"lowest\n  (the widest: {_label(worst)}, {widest}). Something else was using this machine: "
        "compare with care,\n  or run again (--rounds 5 gives medians more rounds to stand on)."
    )


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


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(matrix: Matrix) -> str:
    """The machine, kernel and Python the figures belong to, in one line."""
    return (
        f"{_cpu_model()}, {os.cpu_count()} CPUs · {matrix.os} {matrix.kernel} ({matrix.machine}) · "
        f"Python {matrix.python}"
    )


def figure(plt: Any, results: list[JobResult], matrix: Matrix) -> Any:
    """IOPS against reads in flight: a line per driver and mode (colour: driver; solid and
    filled circles: buffered; dashed and open squares: direct), bars from the lowest to the
    highest round, y from 0. Each line is shifted a little along x so that no marker hides
    another where two drivers measure alike."""
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    colours = plt.get_cmap("tab10").colors
    lines = [(k, name, direct) for k, name in enumerate(DRIVERS) for direct in (False, True)]
    for i, (k, name, direct) in enumerate(lines):
        rows = sorted(
            (r for r in results if r.driver == name and r.job.direct == direct), key=lambda r: r.job.iodepth
        )
        if not rows:
            continue
        shift = 2 ** (0.08 * (i - (len(lines) - 1) / 2))  # the x axis is log2: a constant factor
        ys = [r.iops for r in rows]
        low = [r.iops - min(r.extra["rounds_iops"]) for r in rows]
        high = [max(r.extra["rounds_iops"]) - r.iops for r in rows]
        colour = colours[k % len(colours)]
        ax.errorbar(
            [r.job.iodepth * shift for r in rows],
            ys,
            yerr=[low, high],
            color=colour,
            linestyle="--" if direct else "-",
            marker="s" if direct else "o",
            markerfacecolor="white" if direct else colour,
            markersize=6,
            capsize=3,
            alpha=0.85,
            label=f"{name}, {'direct' if direct else 'buffered'}",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(DEPTHS), [str(d) for d in DEPTHS])
    ax.minorticks_off()
    ax.set_xlim(DEPTHS[0] / 1.5, DEPTHS[-1] * 1.5)
    top = max((max(r.extra["rounds_iops"]) for r in results), default=1.0)
    ax.set_ylim(0, top * 1.08)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    ax.set_xlabel("reads in flight")
    ax.set_ylabel("IOPS (4 KiB random reads)")
    rounds = len(results[0].extra["rounds_iops"]) if results else 0
    spread = ", bars: lowest to highest round" if rounds > 1 else ""
    what = f"aiopg_io drivers, median of {rounds} round{'s' if rounds != 1 else ''}{spread}"
    ax.set_title(f"{what}\n{machine_line(matrix)}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    fig.tight_layout()
    return fig


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    plt = _pyplot() if args.plot else None
    matrix = machine_matrix(args.dir)
    out = sys.stdout
    if not args.json:
        print(render(matrix), file=out)
        mib = args.size / (1 << 20)
        print(f"\n  Self-benchmark: 4 KiB random reads on a {mib:g} MiB file in", matrix.directory, file=out)
    fd, filename = tempfile.mkstemp(prefix=".aiopg_io-selfbench-", dir=args.dir)
    os.close(fd)
    results: list[JobResult] = []
    try:
        prepare_file(filename, args.size)
        jobs = plan(matrix.drivers, args.seconds, filename, ramp=args.ramp, size=args.size)
        runs: list[list[JobResult]] = [[] for _ in jobs]
        total = len(jobs) * args.rounds
        for rnd in range(args.rounds):
            for i, job in enumerate(jobs):
                label = f"{job.driver} {'direct' if job.direct else 'buffered'} x{job.iodepth}"
                if not args.json:
                    _progress(rnd * len(jobs) + i, total, f"{label} (round {rnd + 1})", sys.stderr)
                runs[i].append(run_job(job))
        results = summarize(runs)
        if not args.json:
            _progress(total, total, "done", sys.stderr)
            sys.stderr.write("\n")
    finally:
        os.unlink(filename)
    if args.json:
        doc = {
            "matrix": matrix.as_dict(),
            "rounds": args.rounds,
            "noisy_threshold": NOISY,
            "noisy": [_label(r) for r in results if r.extra["noisy"]],
            "results": [r.as_dict() for r in results],
        }
        json.dump(doc, out, indent=2)
        out.write("\n")
    else:
        print(table(results), file=out)
        if args.rounds > 1:
            how = (
                f"each figure the median of {args.rounds} interleaved rounds, the lowest and highest "
                "beside it;\n   a ratio is taken within each round, against the worker driver at the "
                "same mode and depth"
            )
        else:
            how = "one round, so no spread: --rounds 3 or more shows how much the figures move"
        print(f"\n  ({time.perf_counter() - started:.1f} s; {how})", file=out)
        note = noise_note(results)
        if note:
            print(note, file=out)
    if args.plot:
        figure(plt, results, matrix).savefig(args.plot, dpi=120)
        if not args.json:
            print(f"  plot written to {args.plot}", file=out)
    return 0
