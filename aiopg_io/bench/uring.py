"""Benchmark: 4 KiB random reads through the io_uring driver, against fio, aiofile, aiofiles
and the worker driver (issue 4).

One file (1 GiB by default), random 4 KiB-aligned offsets, N reads in flight (N tasks, each
awaiting one ``preadinto`` after another), a few seconds per configuration after a short
warm-up; every configuration runs ``--repeat`` times and the median IOPS is reported.

- O_DIRECT: aiopg_io io_uring (asyncio, uvloop, trio) and the worker driver, against
  ``fio --ioengine=io_uring --direct=1 --rw=randread --bs=4k --iodepth=N``.
- Buffered, page cache warm (the file is read through once first): aiopg_io io_uring with
  and without the RWF_NOWAIT fast path, the worker driver, aiofile (caio, itself io_uring in
  C) and aiofiles (a thread hop per call; one handle per task, ``seek`` + ``read``, since it
  has no positional read).

Run: ``python -m aiopg_io.bench.uring [--size 1G] [--seconds 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

import aiopg_io

__all__ = ["add_arguments", "main"]

BS = 4096
DEPTHS = (1, 8, 32, 128)
_WARMUP_SECONDS = 0.3
_OFFSETS = 1 << 16

# Targets from issue 4, at 32 in flight.
TARGETS = {
    "direct/asyncio vs fio": 0.85,
    "direct/trio vs fio": 0.80,
    "buffered/asyncio vs aiofile": 1.5,
    "buffered/asyncio vs aiofiles": 20.0,
}


@dataclass
class Result:
    mode: str  # "direct" | "buffered"
    contender: str  # e.g. "aiopg_io io_uring"
    loop: str  # "asyncio" | "uvloop" | "trio" | "-" (fio)
    depth: int
    iops: float  # median of runs
    cpu_us_per_op: float  # median of runs: process CPU time (all threads) per read
    runs: list[tuple[float, float]] = field(default_factory=list)  # (iops, cpu_us_per_op)


def _parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=_parse_size, default=1 << 30, help="file size (default 1G)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per configuration")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration (median reported)")
    parser.add_argument(
        "--depths", type=lambda s: tuple(int(x) for x in s.split(",")), default=DEPTHS, help="e.g. 1,8,32,128"
    )
    parser.add_argument("--path", default=None, help="the test file (default: in the temp dir)")
    parser.add_argument("--keep-file", action="store_true", help="keep (and reuse) the test file")
    parser.add_argument("--only", choices=("direct", "buffered"), default=None, help="run one half only")
    parser.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON")


# -- the file --------------------------------------------------------------------------------


def _ensure_file(path: str, size: int) -> None:
    try:
        if os.path.getsize(path) == size:
            return
    except OSError:
        pass
    chunk = random.Random(1).randbytes(1 << 20)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
        f.flush()
        os.fsync(f.fileno())


def _warm_page_cache(path: str) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 22):
            pass


def _offsets(size: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    blocks = size // BS
    return [rng.randrange(blocks) * BS for _ in range(_OFFSETS)]


# -- one measurement -------------------------------------------------------------------------


_Worker = Callable[[int, list[bool], list[int]], Coroutine[Any, Any, None]]


Sample = tuple[float, float]  # (reads per second, CPU microseconds per read)


async def _measure(depth: int, seconds: float, worker: _Worker) -> Sample:
    """Run ``depth`` workers; return the sample of the measured window.

    Worker ``k`` loops until ``stop[0]`` and counts its reads in ``counts[k]``. CPU time is
    the process's (every thread: the worker driver's and aiofiles' threads count), so it
    stays meaningful when other processes compete for the cores and wall-clock IOPS do not.
    """
    stop = [False]
    counts = [0] * depth
    async with anyio.create_task_group() as tg:
        for k in range(depth):
            tg.start_soon(worker, k, stop, counts)
        await anyio.sleep(_WARMUP_SECONDS)
        c0, t0, p0 = sum(counts), time.perf_counter(), time.process_time()
        await anyio.sleep(seconds)
        c1, t1, p1 = sum(counts), time.perf_counter(), time.process_time()
        stop[0] = True
    n = max(1, c1 - c0)
    return (c1 - c0) / (t1 - t0), (p1 - p0) / n * 1e6


async def _aiopg_io(
    path: str, direct: bool, driver: str, depth: int, seconds: float, offs: list[int]
) -> Sample:
    async with await aiopg_io.open(path, "rb", direct=direct, driver=driver) as f:

        async def run(k: int, stop: list[bool], counts: list[int]) -> None:
            buf = aiopg_io.aligned_buffer(BS)
            preadinto = f.preadinto
            i, n = k, len(offs)
            while not stop[0]:
                await preadinto(buf, offs[i % n])
                i += depth
                counts[k] += 1

        return await _measure(depth, seconds, run)


async def _aiofile(path: str, depth: int, seconds: float, offs: list[int]) -> Sample:
    from aiofile import AIOFile

    async with AIOFile(path, "rb") as afp:

        async def run(k: int, stop: list[bool], counts: list[int]) -> None:
            read = afp.read
            i, n = k, len(offs)
            while not stop[0]:
                await read(BS, offs[i % n])
                i += depth
                counts[k] += 1

        return await _measure(depth, seconds, run)


async def _aiofiles(path: str, depth: int, seconds: float, offs: list[int]) -> Sample:
    import aiofiles

    async def run(k: int, stop: list[bool], counts: list[int]) -> None:
        async with aiofiles.open(path, "rb", buffering=0) as f:
            i, n = k, len(offs)
            while not stop[0]:
                await f.seek(offs[i % n])
                await f.read(BS)
                i += depth
                counts[k] += 1

    return await _measure(depth, seconds, run)


def _on_loop(loop: str, fn: Callable[..., Awaitable[Sample]], *args: Any) -> Sample:
    async def go() -> Sample:
        return await fn(*args)

    if loop == "trio":
        import trio

        result: Sample = trio.run(go)
        return result
    if loop == "uvloop":
        import uvloop

        return uvloop.run(go())
    return asyncio.run(go())


def _fio(path: str, size: int, depth: int, seconds: float) -> Sample:
    cmd = [
        "fio",
        "--name=randread",
        f"--filename={path}",
        "--ioengine=io_uring",
        "--direct=1",
        f"--iodepth={depth}",
        "--rw=randread",
        f"--bs={BS}",
        f"--size={size}",
        f"--runtime={seconds}",
        f"--ramp_time={_WARMUP_SECONDS}",
        "--time_based",
        "--output-format=json",
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    report = json.loads(out[out.index("{") :])
    job = report["jobs"][0]
    ios = max(1, job["read"]["total_ios"])
    cpu_seconds = (job["usr_cpu"] + job["sys_cpu"]) / 100 * job["job_runtime"] / 1000
    return float(job["read"]["iops"]), cpu_seconds / ios * 1e6


# -- the plan --------------------------------------------------------------------------------


_Run = Callable[[int], Sample]  # depth -> one run


def _plan(args: argparse.Namespace, path: str) -> list[tuple[str, str, str, _Run]]:
    s, size = args.seconds, args.size
    offs = _offsets(size, 2)

    def ours(loop: str, direct: bool, driver: str) -> _Run:
        return lambda depth: _on_loop(loop, _aiopg_io, path, direct, driver, depth, s, offs)

    def other(fn: Callable[..., Awaitable[Sample]]) -> _Run:
        return lambda depth: _on_loop("asyncio", fn, path, depth, s, offs)

    plan: list[tuple[str, str, str, _Run]] = []
    if args.only in (None, "direct"):
        for loop in ("asyncio", "uvloop", "trio"):
            plan.append(("direct", "aiopg_io io_uring", loop, ours(loop, True, "io_uring")))
        plan.append(
            (
                "direct",
                "aiopg_io io_uring, reap_batch=0",
                "asyncio",
                ours("asyncio", True, "io_uring:reap_batch=0"),
            )
        )
        plan.append(("direct", "aiopg_io worker", "asyncio", ours("asyncio", True, "worker")))
        if shutil.which("fio"):
            plan.append(("direct", "fio io_uring", "-", lambda depth: _fio(path, size, depth, s)))
    if args.only in (None, "buffered"):
        for loop in ("asyncio", "uvloop", "trio"):
            plan.append(("buffered", "aiopg_io io_uring", loop, ours(loop, False, "io_uring")))
        plan.append(
            (
                "buffered",
                "aiopg_io io_uring, no fast path",
                "asyncio",
                ours("asyncio", False, "io_uring:nowait_fast_path=0"),
            )
        )
        plan.append(("buffered", "aiopg_io worker", "asyncio", ours("asyncio", False, "worker")))
        plan.append(("buffered", "aiofile (caio)", "asyncio", other(_aiofile)))
        plan.append(("buffered", "aiofiles", "asyncio", other(_aiofiles)))
    return plan


def _find(results: list[Result], key: tuple[str, str, str], depth: int) -> Result | None:
    for r in results:
        if (r.mode, r.contender, r.loop, r.depth) == (*key, depth):
            return r
    return None


_OURS_DIRECT = ("direct", "aiopg_io io_uring")
_OURS_BUFFERED = ("buffered", "aiopg_io io_uring")
# name -> (ours, theirs)
_PAIRS: dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]] = {
    "direct/asyncio vs fio": ((*_OURS_DIRECT, "asyncio"), ("direct", "fio io_uring", "-")),
    "direct/uvloop vs fio": ((*_OURS_DIRECT, "uvloop"), ("direct", "fio io_uring", "-")),
    "direct/trio vs fio": ((*_OURS_DIRECT, "trio"), ("direct", "fio io_uring", "-")),
    "direct/asyncio reap_batch 8 vs 0": (
        (*_OURS_DIRECT, "asyncio"),
        ("direct", "aiopg_io io_uring, reap_batch=0", "asyncio"),
    ),
    "direct/asyncio vs worker": ((*_OURS_DIRECT, "asyncio"), ("direct", "aiopg_io worker", "asyncio")),
    "buffered/asyncio vs aiofile": ((*_OURS_BUFFERED, "asyncio"), ("buffered", "aiofile (caio)", "asyncio")),
    "buffered/uvloop vs aiofile": ((*_OURS_BUFFERED, "uvloop"), ("buffered", "aiofile (caio)", "asyncio")),
    "buffered/trio vs aiofile": ((*_OURS_BUFFERED, "trio"), ("buffered", "aiofile (caio)", "asyncio")),
    "buffered/asyncio vs aiofiles": ((*_OURS_BUFFERED, "asyncio"), ("buffered", "aiofiles", "asyncio")),
    "buffered/asyncio vs worker": ((*_OURS_BUFFERED, "asyncio"), ("buffered", "aiopg_io worker", "asyncio")),
    "buffered/asyncio fast path vs none": (
        (*_OURS_BUFFERED, "asyncio"),
        ("buffered", "aiopg_io io_uring, no fast path", "asyncio"),
    ),
}


def _ratios(results: list[Result], depth: int = 32) -> dict[str, dict[str, float | None]]:
    """At ``depth``: IOPS ours/theirs, and CPU per read theirs/ours (> 1: we spend less)."""
    out: dict[str, dict[str, float | None]] = {}
    for name, (ours_key, theirs_key) in _PAIRS.items():
        ours, theirs = _find(results, ours_key, depth), _find(results, theirs_key, depth)
        if ours is None or theirs is None:
            out[name] = {"iops": None, "cpu": None}
            continue
        out[name] = {
            "iops": ours.iops / theirs.iops if theirs.iops else None,
            "cpu": theirs.cpu_us_per_op / ours.cpu_us_per_op if ours.cpu_us_per_op else None,
        }
    return out


def _print_table(results: list[Result], depths: tuple[int, ...], what: str) -> None:
    rows: dict[tuple[str, str, str], dict[int, float]] = {}
    for r in results:
        rows.setdefault((r.mode, r.contender, r.loop), {})[r.depth] = (
            r.iops if what == "iops" else r.cpu_us_per_op
        )
    fmt = "{:>10,.0f}" if what == "iops" else "{:>10.1f}"
    title = "reads per second (median)" if what == "iops" else "CPU microseconds per read (median)"
    head = f"{title:52}" + "".join(f"{'QD' + str(d):>10}" for d in depths)
    print(head)
    print("-" * len(head))
    for (mode, contender, loop), by_depth in rows.items():
        cells = "".join(fmt.format(by_depth[d]) if d in by_depth else f"{'-':>10}" for d in depths)
        print(f"{mode:9} {contender:33} {loop:8} {cells}")


def main(args: argparse.Namespace) -> int:
    path = args.path or os.path.join(tempfile.gettempdir(), "aiopg_io-bench-uring.dat")
    reason = aiopg_io.drivers.unavailable_reason("io_uring", direct=True)
    if reason is not None:
        print(f"io_uring cannot run here: {reason}", file=sys.stderr)
        return 1
    print(f"preparing {args.size / (1 << 20):.0f} MiB file {path} ...", flush=True)
    _ensure_file(path, args.size)
    notes: list[str] = []
    if not shutil.which("fio") and args.only in (None, "direct"):
        notes.append("fio not installed: no fio baseline (apt-get install fio)")
    plan = _plan(args, path)
    samples: dict[tuple[int, int], list[Sample]] = {}
    try:
        # Repetitions go round the whole plan, so a burst of load from elsewhere on the
        # machine lands on every contender rather than on one.
        for rep in range(max(1, args.repeat)):
            warmed = False
            for i, (mode, contender, loop, run) in enumerate(plan):
                if mode == "buffered" and not warmed:
                    _warm_page_cache(path)
                    warmed = True
                for depth in args.depths:
                    iops, cpu = sample = run(depth)
                    samples.setdefault((i, depth), []).append(sample)
                    print(
                        f"  [{rep + 1}] {mode:9} {contender:33} {loop:8} QD{depth:<4} "
                        f"{iops:>10,.0f} IOPS {cpu:>7.1f} us CPU/read",
                        flush=True,
                    )
    finally:
        if not args.keep_file:
            os.unlink(path)
    results = [
        Result(
            plan[i][0],
            plan[i][1],
            plan[i][2],
            depth,
            statistics.median(s[0] for s in runs),
            statistics.median(s[1] for s in runs),
            runs,
        )
        for (i, depth), runs in samples.items()
    ]
    print()
    _print_table(results, args.depths, "iops")
    print()
    _print_table(results, args.depths, "cpu")
    ratios = _ratios(results)
    print("\nat 32 in flight: IOPS ratio (target) | CPU per read, theirs / ours")
    for name, r in ratios.items():
        target = TARGETS.get(name)
        by_iops, by_cpu = r["iops"], r["cpu"]
        shown = "n/a" if by_iops is None else f"{by_iops:.2f}x"
        verdict = "" if target is None or by_iops is None else (" ok" if by_iops >= target else " MISSED")
        goal = f"[>= {target}x]{verdict}" if target else ""
        cpu_shown = "n/a" if by_cpu is None else f"{by_cpu:.2f}x"
        print(f"  {name:38} {shown:>8} {goal:22} | {cpu_shown:>7}")
    for n in notes:
        print(f"note: {n}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "benchmark": "uring",
                    "block_size": BS,
                    "file_size": args.size,
                    "seconds": args.seconds,
                    "repeat": args.repeat,
                    "kernel": os.uname().release,
                    "python": sys.version.split()[0],
                    "results": [asdict(r) for r in results],
                    "ratios_at_32": ratios,  # iops: ours/theirs; cpu: theirs/ours per read
                    "targets": TARGETS,
                    "notes": notes,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m aiopg_io.bench.uring", description=__doc__)
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
