"""Benchmark: 4 KiB random reads through the io_uring driver, against fio, aiofile, aiofiles
and the worker driver (issue 4).

One file (1 GiB by default), random 4 KiB-aligned offsets, N reads in flight (N tasks, each
awaiting one ``preadinto`` after another), a few seconds per configuration after a short
warm-up; every configuration runs ``--repeat`` times and the median IOPS is reported.

- O_DIRECT: aiopg_io io_uring (asyncio, uvloop, trio) and the worker driver, against
  ``fio --ioengine=io_uring --direct=1 --rw=randread --bs=4k --iodepth=N``.
- Buffered, page cache warm (the file is read through once first): aiopg_io io_uring with
  and without the RWF_NOWAIT fast path, the worker driver, aiofile (caio, itself io_uring in
  C) and aiofiles (a thread hop per call; one handle per task, ``seek`` + ``readinto``, since
  it has no positional read).

Every aiopg_io, aiofile and aiofiles contender runs on aiopg_io's engine
(``aiopg_io.bench``), so each reads through the same loop; fio runs the same job itself.
Results and the commands that produced them: docs/benchmarks.md.

Run from a checkout, with the ``bench`` extra (aiofile, aiofiles, trio, uvloop) installed
(``pip install -e '.[bench]'``) and fio on the PATH for the direct baseline::

    python benchmarks/uring.py [--size 1G] [--seconds 3] [--repeat 3] [--json out.json]

``--warm-cpu`` runs the compiled path's comparison instead (issue 14): page cache warm, 4 KiB
random reads at each depth on asyncio (and at 32 on trio): ``io_uring_c``, the pure
``io_uring``, aiofile on caio's defaults and with ``sqpoll=False`` (where caio has the
option) and aiofiles, in interleaved rounds; medians of IOPS and CPU per read, and the
ratios against caio and aiofiles::

    python benchmarks/uring.py --warm-cpu --size 256M --seconds 0.8 --repeat 3
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from _common import caio_sqpoll_option, fio, int_list, open_aiofile, script, write_json

import aiopg_io
from aiopg_io.bench import Job, Opener, parse_size, prepare_file, run_job

__all__ = ["add_arguments", "main"]

BS = 4096
DEPTHS = (1, 8, 32, 128)
_WARMUP_SECONDS = 0.3
_SEED = 2

# Targets from issue 4 (the pure driver) and issue 14 (io_uring_c), at 32 in flight.
TARGETS = {
    "direct/asyncio vs fio": 0.85,
    "direct/trio vs fio": 0.80,
    "direct/asyncio io_uring_c vs fio": 0.95,
    "direct/uvloop io_uring_c vs fio": 0.95,
    "direct/trio io_uring_c vs fio": 0.90,
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="file size (default 1G)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per configuration")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration (median reported)")
    parser.add_argument("--depths", type=int_list, default=DEPTHS, help="e.g. 1,8,32,128")
    parser.add_argument("--path", default=None, help="the test file (default: in the temp dir)")
    parser.add_argument("--keep-file", action="store_true", help="keep (and reuse) the test file")
    parser.add_argument("--only", choices=("direct", "buffered"), default=None, help="run one half only")
    parser.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON")
    parser.add_argument(
        "--warm-cpu",
        action="store_true",
        help="the compiled path's comparison instead: warm reads, io_uring_c vs pure, caio, aiofiles",
    )
    parser.add_argument(
        "--contenders",
        default=None,
        help="run only these contenders, by name, comma-separated "
        "(e.g. 'aiopg_io io_uring,aiopg_io io_uring_c,fio io_uring')",
    )
    parser.add_argument(
        "--loops",
        default=None,
        help="run aiopg_io's contenders on these loops only, comma-separated (e.g. 'trio'; "
        "fio runs regardless)",
    )


Sample = tuple[float, float]  # (reads per second, CPU microseconds per read)


def _job(args: argparse.Namespace, path: str, depth: int, direct: bool, driver: str, loop: str) -> Job:
    return Job(
        path,
        rw="randread",
        bs=BS,
        iodepth=depth,
        direct=direct,
        size=args.size,
        runtime=args.seconds,
        ramp=_WARMUP_SECONDS,
        driver=driver,
        loop=loop,
        seed=_SEED,
    )


# -- the plan --------------------------------------------------------------------------------


_Run = Callable[[int], Sample]  # depth -> one run


def _plan(args: argparse.Namespace, path: str) -> list[tuple[str, str, str, _Run]]:
    def ours(loop: str, direct: bool, driver: str, opener: Opener | None = None) -> _Run:
        def one(depth: int) -> Sample:
            r = run_job(_job(args, path, depth, direct, driver, loop), opener)
            return r.iops, r.cpu_us_per_op

        return one

    def other(name: str, opener: Opener | None = None) -> _Run:
        return ours("asyncio", False, name, opener)

    def by_fio(depth: int) -> Sample:
        r = fio(_job(args, path, depth, True, "fio", "asyncio"))
        if r is None:
            raise RuntimeError("fio --ioengine=io_uring failed on this file")
        return r.iops, r.cpu_us_per_op

    plan: list[tuple[str, str, str, _Run]] = []
    compiled = aiopg_io.drivers.unavailable_reason("io_uring_c", direct=True) is None
    if args.only in (None, "direct"):
        for loop in ("asyncio", "uvloop", "trio"):
            plan.append(("direct", "aiopg_io io_uring", loop, ours(loop, True, "io_uring")))
        if compiled:
            for loop in ("asyncio", "uvloop", "trio"):
                plan.append(("direct", _C_DIRECT, loop, ours(loop, True, "io_uring_c")))
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
            plan.append(("direct", "fio io_uring", "-", by_fio))
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
        plan.append(("buffered", "aiofile (caio)", "asyncio", other("aiofile", open_aiofile)))
        plan.append(("buffered", "aiofiles", "asyncio", other("aiofiles")))
    if args.contenders:
        names = {w.strip() for w in args.contenders.split(",")}
        plan = [entry for entry in plan if entry[1] in names]
    if args.loops:
        loops = {w.strip() for w in args.loops.split(",")} | {"-"}
        plan = [entry for entry in plan if entry[2] in loops]
    return plan


def _find(results: list[Result], key: tuple[str, str, str], depth: int) -> Result | None:
    for r in results:
        if (r.mode, r.contender, r.loop, r.depth) == (*key, depth):
            return r
    return None


_C_DIRECT = "aiopg_io io_uring_c"
_OURS_DIRECT = ("direct", "aiopg_io io_uring")
_OURS_BUFFERED = ("buffered", "aiopg_io io_uring")
# name -> (ours, theirs)
_PAIRS: dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]] = {
    "direct/asyncio vs fio": ((*_OURS_DIRECT, "asyncio"), ("direct", "fio io_uring", "-")),
    "direct/uvloop vs fio": ((*_OURS_DIRECT, "uvloop"), ("direct", "fio io_uring", "-")),
    "direct/trio vs fio": ((*_OURS_DIRECT, "trio"), ("direct", "fio io_uring", "-")),
    "direct/asyncio io_uring_c vs fio": (("direct", _C_DIRECT, "asyncio"), ("direct", "fio io_uring", "-")),
    "direct/uvloop io_uring_c vs fio": (("direct", _C_DIRECT, "uvloop"), ("direct", "fio io_uring", "-")),
    "direct/trio io_uring_c vs fio": (("direct", _C_DIRECT, "trio"), ("direct", "fio io_uring", "-")),
    "direct/asyncio io_uring_c vs pure": (("direct", _C_DIRECT, "asyncio"), (*_OURS_DIRECT, "asyncio")),
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


def _cpu_spread(results: list[Result]) -> dict[str, float]:
    """Per contender and loop: the highest CPU per read over the depths run, divided by the
    lowest (the issue's "CPU per op within 1.3x from QD1 to QD128")."""
    by_row: dict[str, list[float]] = {}
    for r in results:
        if r.cpu_us_per_op > 0:
            by_row.setdefault(f"{r.mode} {r.contender} {r.loop}", []).append(r.cpu_us_per_op)
    return {row: max(v) / min(v) for row, v in by_row.items() if len(v) > 1}


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


# -- --warm-cpu: the compiled path against the pure path, caio and aiofiles (issue 14) ----------

#: Targets from issue 14, page cache warm, 32 in flight (IOPS ratios).
WARM_TARGETS = {
    "io_uring_c/asyncio vs caio": 1.5,
    "io_uring_c/trio vs caio": 1.0,
    "io_uring_c/asyncio vs aiofiles": 25.0,
    "io_uring_c/asyncio vs pure": 1.0,
}
_WARM_TRIO_DEPTH = 32
_C, _PURE, _CAIO, _CAIO_NOPOLL, _AIOFILES = (
    "aiopg_io io_uring_c",
    "aiopg_io io_uring (pure)",
    "aiofile/caio defaults",
    "aiofile/caio sqpoll=False",
    "aiofiles",
)


def _warm_plan(args: argparse.Namespace, path: str) -> list[tuple[str, str, tuple[int, ...], _Run]]:
    def run(loop: str, driver: str, opener: Opener | None = None) -> _Run:
        def one(depth: int) -> Sample:
            r = run_job(_job(args, path, depth, False, driver, loop), opener)
            return r.iops, r.cpu_us_per_op

        return one

    depths = tuple(args.depths)
    plan: list[tuple[str, str, tuple[int, ...], _Run]] = [
        (_C, "asyncio", depths, run("asyncio", "io_uring_c")),
        (_PURE, "asyncio", depths, run("asyncio", "io_uring")),
        (_CAIO, "asyncio", depths, run("asyncio", "aiofile", open_aiofile)),
    ]
    if caio_sqpoll_option():
        plan.append(
            (
                _CAIO_NOPOLL,
                "asyncio",
                depths,
                run("asyncio", "aiofile", functools.partial(open_aiofile, sqpoll=False)),
            )
        )
    plan.append((_AIOFILES, "asyncio", depths, run("asyncio", "aiofiles")))
    plan.append((_C, "trio", (_WARM_TRIO_DEPTH,), run("trio", "io_uring_c")))
    plan.append((_PURE, "trio", (_WARM_TRIO_DEPTH,), run("trio", "io_uring")))
    return plan


def _warm_cpu(args: argparse.Namespace, path: str) -> int:
    for name in ("io_uring_c", "io_uring"):
        reason = aiopg_io.drivers.unavailable_reason(name)
        if reason is not None:
            print(f"{name} cannot run here: {reason}", file=sys.stderr)
            return 1
    print(f"preparing {args.size / (1 << 20):.0f} MiB file {path} (page cache warm) ...", flush=True)
    prepare_file(path, args.size, warm=True)
    plan = _warm_plan(args, path)
    samples: dict[tuple[str, str, int], list[Sample]] = {}
    try:
        # Interleaved: each round visits every depth and, within it, every contender, so a
        # burst of load from elsewhere lands on all of them.
        for rnd in range(max(1, args.repeat)):
            for depth in args.depths:
                for contender, loop, depths, one in plan:
                    if depth not in depths:
                        continue
                    iops, cpu = sample = one(depth)
                    samples.setdefault((contender, loop, depth), []).append(sample)
                    print(
                        f"  [{rnd + 1}] {contender:27} {loop:8} QD{depth:<4} {iops:>10,.0f} IOPS "
                        f"{cpu:>7.2f} us CPU/read",
                        flush=True,
                    )
    finally:
        if not args.keep_file:
            os.unlink(path)
    results = [
        Result(
            "buffered",
            contender,
            loop,
            depth,
            statistics.median(s[0] for s in runs),
            statistics.median(s[1] for s in runs),
            runs,
        )
        for (contender, loop, depth), runs in samples.items()
    ]
    print()
    _print_table(results, args.depths, "iops")
    print()
    _print_table(results, args.depths, "cpu")

    def get(contender: str, loop: str, depth: int) -> Result | None:
        return _find(results, ("buffered", contender, loop), depth)

    pairs = {
        "io_uring_c/asyncio vs caio": (_C, "asyncio", _CAIO),
        "io_uring_c/asyncio vs caio sqpoll=False": (_C, "asyncio", _CAIO_NOPOLL),
        "io_uring_c/asyncio vs aiofiles": (_C, "asyncio", _AIOFILES),
        "io_uring_c/asyncio vs pure": (_C, "asyncio", _PURE),
        "pure/asyncio vs caio": (_PURE, "asyncio", _CAIO),
        "io_uring_c/trio vs caio": (_C, "trio", _CAIO),
        "pure/trio vs caio": (_PURE, "trio", _CAIO),
    }
    ratios: dict[str, dict[int, dict[str, float]]] = {}
    print("\nIOPS ratio ours/theirs (target at QD32) | CPU per read theirs/ours (> 1: we spend less)")
    for name, (ours_name, loop, theirs_name) in pairs.items():
        for depth in args.depths:
            ours, theirs = get(ours_name, loop, depth), get(theirs_name, "asyncio", depth)
            if ours is None or theirs is None or not theirs.iops or not ours.cpu_us_per_op:
                continue
            by_iops, by_cpu = ours.iops / theirs.iops, theirs.cpu_us_per_op / ours.cpu_us_per_op
            ratios.setdefault(name, {})[depth] = {"iops": by_iops, "cpu": by_cpu}
            target = WARM_TARGETS.get(name) if depth == 32 else None
            goal = "" if target is None else f"[>= {target}x] {'ok' if by_iops >= target else 'MISSED'}"
            print(f"  {name:40} QD{depth:<4} {by_iops:>6.2f}x {goal:18} | {by_cpu:>5.2f}x")
    flat: dict[str, float] = {}
    for contender, loop in ((_C, "asyncio"), (_PURE, "asyncio")):
        cpus = [r.cpu_us_per_op for d in args.depths if (r := get(contender, loop, d)) is not None]
        if len(cpus) > 1:
            flat[contender] = max(cpus) / min(cpus)
            ok = "ok" if flat[contender] <= 1.3 else "MISSED"
            print(
                f"  CPU per read, highest / lowest over the depths: {contender} "
                f"{flat[contender]:.2f}x [<= 1.3x] {ok}"
            )
    if args.json:
        # ratios: iops ours/theirs; cpu theirs/ours per read
        extra = {"ratios": ratios, "cpu_spread_over_depths": flat, "targets_at_32": WARM_TARGETS}
        write_json(args.json, "uring --warm-cpu", args, BS, results, **extra)
    return 0


def main(args: argparse.Namespace) -> int:
    path = args.path or os.path.join(tempfile.gettempdir(), "aiopg_io-bench-uring.dat")
    if args.warm_cpu:
        return _warm_cpu(args, path)
    reason = aiopg_io.drivers.unavailable_reason("io_uring", direct=True)
    if reason is not None:
        print(f"io_uring cannot run here: {reason}", file=sys.stderr)
        return 1
    print(f"preparing {args.size / (1 << 20):.0f} MiB file {path} ...", flush=True)
    prepare_file(path, args.size, warm=False)
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
                    prepare_file(path, args.size, warm=True)
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
    spread = _cpu_spread(results)
    print("\nCPU per read, highest over lowest across the depths run (target <= 1.3x)")
    for row, ratio in spread.items():
        print(f"  {row:60} {ratio:>6.2f}x")
    by_depth = {d: _ratios(results, d) for d in args.depths}
    for depth, at in by_depth.items():
        if depth == 32:
            continue
        shown = {n: r for n, r in at.items() if r["iops"] is not None and "fio" in n}
        if shown:
            print(f"\nat {depth} in flight: IOPS ratio vs fio | CPU per read, fio / ours")
            for name, r in shown.items():
                print(f"  {name:38} {r['iops']:>7.2f}x | {r['cpu'] or 0:>6.2f}x")
    ratios = _ratios(results)
    print("\nat 32 in flight: IOPS ratio (target) | CPU per read, theirs / ours")
    for name, r in ratios.items():
        if r["iops"] is None:
            continue
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
        # ratios_at_32: iops ours/theirs; cpu theirs/ours per read
        extra = {"ratios_at_32": ratios, "ratios_by_depth": by_depth, "cpu_spread": spread}
        write_json(args.json, "uring", args, BS, results, **extra, targets=TARGETS, notes=notes)
    return 0


if __name__ == "__main__":
    script(__doc__, add_arguments, main, prog="python benchmarks/uring.py")
