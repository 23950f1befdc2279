"""``python -m aiopg_io bench``: one workload in fio's vocabulary, across drivers and loops.

    python -m aiopg_io bench --rw randread --bs 4k --iodepth 1,8,32 --direct 1 \\
        --size 1g --runtime 5 --driver io_uring,worker --loop asyncio,trio

Comma lists in ``--driver``, ``--iodepth`` and ``--loop`` run every combination, one after
the other on the same file, and each row's ratio is against the first driver listed at the
same depth and loop.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from ._engine import RW_MODES, Job, JobResult, parse_size, prepare_file, run_job

__all__ = ["add_arguments", "main"]


def _list(kind: type, text: str) -> list[object]:
    return [kind(x) for x in text.split(",") if x]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rw", choices=RW_MODES, default="randread")
    parser.add_argument("--bs", type=parse_size, default=4096, help="block size (default 4k)")
    parser.add_argument("--iodepth", default="32", help="ops in flight; a comma list compares")
    parser.add_argument("--direct", type=int, choices=(0, 1), default=0, help="1: O_DIRECT")
    parser.add_argument("--size", type=parse_size, default=256 << 20, help="file size (default 256m)")
    parser.add_argument("--runtime", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--ramp_time", type=float, default=0.3, help="seconds run before measuring")
    parser.add_argument("--driver", default="auto", help="driver name(s), comma separated")
    parser.add_argument("--loop", default="asyncio", help="asyncio, uvloop, trio; comma separated")
    parser.add_argument("--filename", help="the file to use (default: a temporary file in .)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def _render(results: list[JobResult]) -> str:
    first: dict[tuple[int, str], float] = {}
    lines = [
        f"  {'driver':<10}{'loop':<9}{'in flight':>9}{'IOPS':>11}{'MiB/s':>10}"
        f"{'p50 µs':>9}{'p99 µs':>9}{'ratio':>8}"
    ]
    for r in results:
        key = (r.job.iodepth, r.job.loop)
        base = first.setdefault(key, r.iops)
        ratio = f"{r.iops / base:>7.2f}x" if base else f"{'-':>8}"  # a run too short for one op
        lines.append(
            f"  {r.driver:<10}{r.job.loop:<9}{r.job.iodepth:>9}{r.iops:>11,.0f}{r.mib_per_s:>10.1f}"
            f"{r.lat_p50_us:>9.1f}{r.lat_p99_us:>9.1f}{ratio}"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    drivers = [str(d) for d in _list(str, args.driver)]
    depths = [int(str(d)) for d in _list(int, args.iodepth)]
    loops = [str(x) for x in _list(str, args.loop)]
    temporary = args.filename is None
    if temporary:
        fd, filename = tempfile.mkstemp(prefix=".aiopg_io-bench-", dir=".")
        os.close(fd)
    else:
        filename = args.filename
    try:
        prepare_file(filename, args.size, warm=not args.direct)
        results = []
        for loop in loops:
            for depth in depths:
                for driver in drivers:
                    job = Job(
                        filename,
                        rw=args.rw,
                        bs=args.bs,
                        iodepth=depth,
                        direct=bool(args.direct),
                        size=args.size,
                        runtime=args.runtime,
                        ramp=args.ramp_time,
                        driver=driver,
                        loop=loop,
                    )
                    results.append(run_job(job))
    finally:
        if temporary:
            os.unlink(filename)
    mode = "direct" if args.direct else "buffered"
    print(f"  {args.rw} bs={args.bs} {mode} size={args.size} runtime={args.runtime}s")
    print(_render(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.as_dict() for r in results], f, indent=2)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m aiopg_io.bench.job")
    add_arguments(p)
    raise SystemExit(main(p.parse_args()))
