"""Benchmark: the worker driver against aiofiles (issue 2).

4 KiB random reads, page cache warm, 32 in flight, one run, side by side under asyncio:

- ``worker``: aiopg_io's thread pool — a batch of ops per loop tick handed over in one go,
  completions reaped in batches through one eventfd, no future per op in an executor;
- ``aiofiles``: what aiofiles users write (one handle per task, ``seek`` + ``readinto``:
  two executor hops per read, since aiofiles has no positional read);
- ``to_thread``: one ``os.preadv`` per ``anyio.to_thread.run_sync`` hop, the best a hop
  per op can do, to show how much of the gap is aiofiles' and how much the hop's.

All three run through aiopg_io's engine (``aiopg_io.bench``), the same read loop. Target
(issue 2): worker >= 2x aiofiles. Results: docs/benchmarks.md.

Run from a checkout, with the ``bench`` extra (aiofiles) installed
(``pip install -e '.[bench]'``)::

    python benchmarks/core.py [--size 256m] [--runtime 3] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile

from _common import script

from aiopg_io.bench import Job, JobResult, parse_size, prepare_file, run_job

__all__ = ["add_arguments", "main"]

CONTENDERS = ("worker", "aiofiles", "to_thread")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=parse_size, default=256 << 20, help="file size (default 256m)")
    parser.add_argument("--iodepth", type=int, default=32)
    parser.add_argument("--runtime", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians reported)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def main(args: argparse.Namespace) -> int:
    fd, filename = tempfile.mkstemp(prefix=".aiopg_io-bench-core-", dir=".")
    os.close(fd)
    runs: dict[str, list[JobResult]] = {c: [] for c in CONTENDERS}
    try:
        prepare_file(filename, args.size)
        for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits all alike
            for c in CONTENDERS:
                job = Job(filename, iodepth=args.iodepth, size=args.size, runtime=args.runtime, driver=c)
                runs[c].append(run_job(job))
    finally:
        os.unlink(filename)
    med = {c: statistics.median(r.iops for r in rs) for c, rs in runs.items()}
    p50 = {c: statistics.median(r.lat_p50_us for r in rs) for c, rs in runs.items()}
    print(
        f"  4 KiB random reads, warm page cache, {args.iodepth} in flight, asyncio, median of {args.repeat}"
    )
    print(f"  {'contender':<12}{'IOPS':>11}{'p50 µs':>9}{'worker is':>12}")
    for c in CONTENDERS:
        print(f"  {c:<12}{med[c]:>11,.0f}{p50[c]:>9.1f}{med['worker'] / med[c]:>11.2f}x")
    verdict = "met" if med["worker"] >= 2 * med["aiofiles"] else "MISSED"
    print(f"  target worker >= 2x aiofiles: {verdict} ({med['worker'] / med['aiofiles']:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({c: [r.as_dict() for r in rs] for c, rs in runs.items()}, f, indent=2)
    return 0


if __name__ == "__main__":
    script(__doc__, add_arguments, main, prog="python benchmarks/core.py")
