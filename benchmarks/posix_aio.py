"""Benchmark: 4 KiB random reads through posix_aio, beside worker and io_uring (issue 7).

One file (256 MiB by default), random 4 KiB-aligned offsets, N tasks each awaiting one
``preadinto`` after another (N reads in flight), ``--seconds`` per configuration after a short
warm-up, on one event loop (asyncio by default), through aiopg_io's engine
(``aiopg_io.bench``). Buffered runs read a warm page cache (the file is read through once
first); direct runs use O_DIRECT and aligned buffers.

Contenders: ``posix_aio`` (glibc AIO, requests on one fd spread over dup()s), ``posix_aio
serial`` (``spread_fds=0``: glibc's own one-thread-per-fd behaviour), ``worker`` and
``io_uring`` when its module exists and runs here. Results: docs/benchmarks.md.

Run from a checkout (``--loop uvloop`` or ``trio`` needs the ``bench`` extra:
``pip install -e '.[bench]'``)::

    python benchmarks/posix_aio.py [--size 256M] [--seconds 2] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass

from _common import LOOPS, int_list, script

from aiopg_io.bench import Job, parse_size, prepare_file, run_job
from aiopg_io.drivers import unavailable_reason

__all__ = ["add_arguments", "main"]

BS = 4096
DEPTHS = (1, 8, 32)
_WARMUP_SECONDS = 0.3


@dataclass
class Result:
    mode: str  # "buffered" | "direct"
    contender: str
    spec: str
    loop: str
    depth: int
    iops: float
    cpu_us_per_op: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=parse_size, default=256 << 20, help="file size (default 256M)")
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per configuration")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration (median reported)")
    parser.add_argument("--depths", type=int_list, default=DEPTHS, help="e.g. 1,8,32")
    parser.add_argument("--loop", default="asyncio", choices=LOOPS)
    parser.add_argument("--dir", default=None, help="where to create the file (default: a temp dir)")
    parser.add_argument("--json", default="bench-posix_aio.json", help="where to write the results")
    parser.add_argument("--modes", default="buffered,direct", help="buffered,direct")


def _contenders() -> list[tuple[str, str]]:
    out = [("posix_aio", "posix_aio"), ("posix_aio serial", "posix_aio:spread_fds=0"), ("worker", "worker")]
    if importlib.util.find_spec("aiopg_io.drivers.io_uring") is not None:
        out.append(("io_uring", "io_uring"))
    return out


def main(args: argparse.Namespace) -> int:
    modes = [m for m in args.modes.split(",") if m]
    tmp = tempfile.mkdtemp(prefix="aiopg_io-bench-", dir=args.dir)
    results: list[Result] = []
    try:
        path = os.path.join(tmp, "bench-posix_aio.dat")
        prepare_file(path, args.size)  # warm: for the buffered runs
        for mode in modes:
            direct = mode == "direct"
            for label, spec in _contenders():
                reason = unavailable_reason(spec.partition(":")[0], direct=direct)
                if reason is not None:
                    print(f"skip {label} ({mode}): {reason}", file=sys.stderr)
                    continue
                for depth in args.depths:
                    job = Job(
                        path,
                        rw="randread",
                        bs=BS,
                        iodepth=depth,
                        direct=direct,
                        size=args.size,
                        runtime=args.seconds,
                        ramp=_WARMUP_SECONDS,
                        driver=spec,
                        loop=args.loop,
                        seed=depth,
                    )
                    runs = [run_job(job) for _ in range(max(1, args.repeat))]
                    iops = statistics.median(r.iops for r in runs)
                    cpu = statistics.median(r.cpu_us_per_op for r in runs)
                    results.append(Result(mode, label, spec, args.loop, depth, iops, cpu))
                    print(
                        f"{mode:8} {label:17} depth {depth:3}: {iops:10.0f} IOPS  {cpu:7.1f} us CPU/op",
                        flush=True,
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(_table(results, args.depths))
    with open(args.json, "w") as out:
        json.dump(
            {
                "size": args.size,
                "seconds": args.seconds,
                "loop": args.loop,
                "results": [asdict(r) for r in results],
            },
            out,
            indent=2,
        )
    print(f"\nresults written to {args.json}")
    return 0


def _table(results: list[Result], depths: tuple[int, ...]) -> str:
    head = f"{'mode':8} {'driver':17} " + " ".join(f"{'QD ' + str(d):>10}" for d in depths)
    lines = [
        f"4 KiB random reads, median IOPS ({results[0].loop if results else '-'})",
        head,
        "-" * len(head),
    ]
    rows: dict[tuple[str, str], dict[int, float]] = {}
    for r in results:
        rows.setdefault((r.mode, r.contender), {})[r.depth] = r.iops
    for (mode, label), by_depth in rows.items():
        cells = " ".join(f"{by_depth.get(d, float('nan')):10.0f}" for d in depths)
        lines.append(f"{mode:8} {label:17} {cells}")
    worker = {(r.mode, r.depth): r.iops for r in results if r.contender == "worker"}
    ratios = [
        f"{r.mode} QD{r.depth}: {r.iops / worker[(r.mode, r.depth)]:.2f}x"
        for r in results
        if r.contender == "posix_aio" and worker.get((r.mode, r.depth))
    ]
    if ratios:
        lines.append("posix_aio / worker: " + ", ".join(ratios))
    return "\n".join(lines)


if __name__ == "__main__":
    script(__doc__, add_arguments, main, prog="python benchmarks/posix_aio.py")
