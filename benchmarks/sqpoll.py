"""Benchmark: the io_uring drivers with and without SQPOLL (issue 14, item 4).

4 KiB random reads of one file at 1 and 32 in flight, O_DIRECT and buffered with a warm page
cache, through ``io_uring`` and ``io_uring_c``, each with ``sqpoll=0`` and ``sqpoll=1``, on
asyncio. Rounds go round the whole plan (so load from elsewhere lands on every
configuration) and the median of the rounds is printed, with the ratio on/off.

CPU per read is the process's (every thread): the SQ poll thread ("iou-sqp-<pid>") is a
thread of this process, so it is counted there. It is also shown on its own, read from
/proc/self/task/<tid>/stat while the job runs (utime + stime, clock-tick resolution): the
seconds it burned over the seconds it lived, i.e. how much of a core it took.

Run from a checkout, with the ``bench`` extra installed (``pip install -e '.[bench]'``)::

    python benchmarks/sqpoll.py [--size 256M] [--seconds 2] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from _common import int_list, script, write_json

import aiopg_io
from aiopg_io.bench import Job, parse_size, prepare_file, run_job

__all__ = ["add_arguments", "main"]

BS = 4096
DEPTHS = (1, 32)
DRIVERS = ("io_uring", "io_uring_c")
_WARMUP_SECONDS = 0.3
_SEED = 3
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    mode: str  # "direct" | "warm"
    driver: str
    sqpoll: bool
    depth: int
    iops: float  # medians of the rounds
    cpu_us_per_op: float  # the process, every thread (the SQ thread included)
    sq_thread_core: float  # the SQ thread's CPU seconds per second it lived (1.0: a whole core)
    runs: list[tuple[float, float, float]] = field(default_factory=list)  # (IOPS, CPU, SQ core)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=parse_size, default=256 << 20, help="file size (default 256M)")
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per configuration")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (median reported)")
    parser.add_argument("--depths", type=int_list, default=DEPTHS, help="e.g. 1,32")
    parser.add_argument("--drivers", default=",".join(DRIVERS), help="e.g. io_uring,io_uring_c")
    parser.add_argument("--path", default=None, help="the test file (default: in the temp dir)")
    parser.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON")


class SqThreadMeter:
    """The CPU of this process's SQ poll threads, sampled from /proc while a job runs."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, float, float]] = {}  # tid -> first cpu, last cpu, t0
        self._life: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SqThreadMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        now = time.monotonic()
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            if not comm.startswith("iou-sqp"):
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
            first = self._seen.get(tid)
            self._seen[tid] = (first[0] if first else cpu, cpu, first[2] if first else now)
            self._life[tid] = now - self._seen[tid][2]

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def core_share(self) -> float:
        """CPU seconds over lifetime seconds, summed over the SQ threads seen (0 if none)."""
        return sum(
            (last - first) / self._life[t] for t, (first, last, _) in self._seen.items() if self._life[t]
        )


Sample = tuple[float, float, float]  # IOPS, CPU us per read, SQ thread's share of a core


def _one(args: argparse.Namespace, path: str, mode: str, driver: str, sqpoll: bool, depth: int) -> Sample:
    job = Job(
        path,
        rw="randread",
        bs=BS,
        iodepth=depth,
        direct=mode == "direct",
        size=args.size,
        runtime=args.seconds,
        ramp=_WARMUP_SECONDS,
        driver=f"{driver}:sqpoll={int(sqpoll)}",
        loop="asyncio",
        seed=_SEED,
    )
    with SqThreadMeter() as meter:
        r = run_job(job)
    return r.iops, r.cpu_us_per_op, meter.core_share()


def main(args: argparse.Namespace) -> int:
    drivers = [d for d in args.drivers.split(",") if d]
    for d in drivers:
        reason = aiopg_io.drivers.unavailable_reason(d, direct=True)
        if reason is not None:
            print(f"{d} cannot run here: {reason}", file=sys.stderr)
            return 1
    path = args.path or os.path.join(tempfile.gettempdir(), "aiopg_io-bench-sqpoll.dat")
    print(f"preparing {args.size / (1 << 20):.0f} MiB file {path} ...", flush=True)
    prepare_file(path, args.size, warm=True)
    plan = [(m, d, s) for m in ("direct", "warm") for d in drivers for s in (False, True)]
    samples: dict[tuple[str, str, bool, int], list[Sample]] = {}
    try:
        for rep in range(max(1, args.repeat)):
            for mode, driver, sqpoll in plan:
                if mode == "warm":
                    prepare_file(path, args.size, warm=True)
                for depth in args.depths:
                    s = _one(args, path, mode, driver, sqpoll, depth)
                    samples.setdefault((mode, driver, sqpoll, depth), []).append(s)
                    print(
                        f"  [{rep + 1}] {mode:6} {driver:10} sqpoll={int(sqpoll)} QD{depth:<3} "
                        f"{s[0]:>9,.0f} IOPS {s[1]:>7.1f} us CPU/read  SQ thread {s[2]:.2f} core",
                        flush=True,
                    )
    finally:
        os.unlink(path)
    results = [
        Result(
            mode,
            driver,
            sqpoll,
            depth,
            statistics.median(r[0] for r in runs),
            statistics.median(r[1] for r in runs),
            statistics.median(r[2] for r in runs),
            runs,
        )
        for (mode, driver, sqpoll, depth), runs in samples.items()
    ]
    print(f"\n{'medians':28}{'IOPS':>10}{'CPU us/read':>13}{'SQ core':>9}   on/off: IOPS, CPU")
    for r in results:
        key = (r.mode, r.driver, r.depth, False)
        off = next((o for o in results if (o.mode, o.driver, o.depth, o.sqpoll) == key), None)
        vs = ""
        if r.sqpoll and off is not None and off.iops and off.cpu_us_per_op:
            vs = f"   {r.iops / off.iops:.2f}x, {r.cpu_us_per_op / off.cpu_us_per_op:.2f}x"
        name = f"{r.mode} {r.driver} sqpoll={int(r.sqpoll)} QD{r.depth}"
        print(f"{name:28}{r.iops:>10,.0f}{r.cpu_us_per_op:>13.1f}{r.sq_thread_core:>9.2f}{vs}")
    if args.json:
        write_json(args.json, "sqpoll", args, BS, results)
    return 0


if __name__ == "__main__":
    script(__doc__, add_arguments, main, prog="python benchmarks/sqpoll.py")
