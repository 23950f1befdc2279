"""Benchmark: the buffer pool's read streams and random page reads.

1. A sequential scan of one file with ``direct=True`` through ``read_stream`` (defaults:
   max_ios=16, io_combine_limit=16, i.e. up to 16 reads of 128 KiB in flight), against fio
   reading the same file sequentially in 128 KiB blocks at iodepth 16 (the target is >= 0.9x
   fio's bandwidth); then the same scan with io_combine_limit=1 (no combining) and with
   max_ios=1 (one read in flight: no look-ahead concurrency), to show what each buys.
2. Random page reads through the pool at a ~10% hit rate (the pool holds a tenth of the
   file), 32 tasks in flight, against the same reads through the file API's ``preadinto``.

The file-API contenders (fio's pattern, and the random reads) run on aiopg_io's engine
(``aiopg_io.bench``); the random ones read the very blocks the pool reads, task for task.
Prints a table and JSON; each figure is the median of ``--repeat`` runs. Results:
docs/benchmarks.md.

Run from a checkout, on a filesystem that takes O_DIRECT, with fio on the PATH for the
baseline (``--backend uvloop`` or ``trio`` needs the ``bench`` extra:
``pip install -e '.[bench]'``)::

    python benchmarks/buffers.py --size-mib 256 [--dir D] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

import anyio
from _common import LOOPS, fio, run_on, script

from aiopg_io.bench import Job, offsets, prepare_file, run_job
from aiopg_io.buffers import BufferPool

PAGE = 8192


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024 = 1 GiB)")
    parser.add_argument("--dir", default=None, help="where to put the file (a disk that takes O_DIRECT)")
    parser.add_argument("--driver", default=None, help="aiopg_io driver (default: auto)")
    parser.add_argument("--backend", default="asyncio", choices=LOOPS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--random-reads", type=int, default=20000)
    parser.add_argument("--skip-fio", action="store_true")
    parser.add_argument("--json", default=None, help="also write the JSON here")


def _job(args: argparse.Namespace, path: str, size: int, **pattern: Any) -> Job:
    """A direct-I/O job over the whole file that ends after its ``number_ios``."""
    return Job(
        path,
        direct=True,
        size=size,
        runtime=math.inf,
        ramp=0,
        driver=args.driver or "auto",
        loop=args.backend,
        **pattern,
    )


def _seq_job(args: argparse.Namespace, path: str, size: int) -> Job:
    """fio's sequential pattern: 16 in flight, 128 KiB each, the file once."""
    bs = 128 * 1024
    return _job(args, path, size, rw="read", bs=bs, iodepth=16, number_ios=size // bs)


def _random_job(args: argparse.Namespace, path: str, size: int, tasks: int) -> Job:
    """``--random-reads`` page reads at random pages, ``tasks`` in flight."""
    return _job(
        args, path, size, rw="randread", bs=PAGE, iodepth=tasks, seed=42, number_ios=args.random_reads
    )


async def _scan(path: str, driver: str | None, max_ios: int, combine: int) -> tuple[float, dict[str, Any]]:
    async with BufferPool(1024, PAGE, direct=True, driver=driver) as pool:
        rel = await pool.open(path)
        t0 = time.perf_counter()
        async for page in pool.read_stream(
            rel, range(rel.nblocks), max_ios=max_ios, io_combine_limit=combine
        ):
            page.release()
        elapsed = time.perf_counter() - t0
        s = pool.statistics()
        return elapsed, {"reads": s.reads, "blocks_per_read": round(s.blocks_per_read, 2)}


async def _random_pool(path: str, driver: str | None, blocks: list[int], tasks: int) -> tuple[float, float]:
    nblocks = os.path.getsize(path) // PAGE
    async with BufferPool(max(64, nblocks // 10), PAGE, direct=True, driver=driver) as pool:
        rel = await pool.open(path)
        # Warm the pool so the hit rate is the steady state's (about the pool/file ratio).
        async for page in pool.read_stream(rel, range(pool.nbuffers)):
            page.release()
        before = pool.statistics()
        t0 = time.perf_counter()

        async def worker(mine: list[int]) -> None:
            for b in mine:
                (await pool.read_page(rel, b)).release()

        async with anyio.create_task_group() as tg:
            for k in range(tasks):
                tg.start_soon(worker, blocks[k::tasks])
        elapsed = time.perf_counter() - t0
        s = pool.statistics()
        hits = s.hits - before.hits
        return elapsed, hits / max(1, hits + s.misses - before.misses)


def main(args: argparse.Namespace) -> int:
    size = args.size_mib << 20
    directory = args.dir or os.getcwd()
    tmp = tempfile.mkdtemp(prefix="aiopg_io-bench-buffers-", dir=directory)
    path = os.path.join(tmp, "relation")
    results: dict[str, Any] = {"size_bytes": size, "driver": args.driver or "auto", "backend": args.backend}
    try:
        prepare_file(path, size, warm=False)
        rows: list[tuple[str, float, str]] = []
        fio_bw = None
        seq = _seq_job(args, path, size)
        if not args.skip_fio:
            ran = (fio(seq, ("io_uring", "libaio", "psync")) for _ in range(args.repeat))
            runs = [r.bytes_per_s for r in ran if r is not None]
            fio_bw = statistics.median(runs) if runs else None
            results["fio_seq_128k_qd16_bytes_per_s"] = fio_bw
            if fio_bw is not None:
                rows.append(("fio seq 128 KiB x16 (direct)", fio_bw / 2**20, "MiB/s"))
        times = [run_job(seq).seconds for _ in range(args.repeat)]
        file_bw = size / statistics.median(times)
        ratio = f" ({file_bw / fio_bw:.2f}x fio)" if fio_bw else ""
        rows.append(("file API preadinto 128 KiB x16 (direct)", file_bw / 2**20, f"MiB/s{ratio}"))
        results["file_api_seq_128k_x16_bytes_per_s"] = file_bw
        for name, max_ios, combine in (
            ("read_stream (max_ios=16, combine=16)", 16, 16),
            ("read_stream io_combine_limit=1", 16, 1),
            ("read_stream max_ios=1 (no look-ahead I/O concurrency)", 1, 16),
        ):
            times = []
            extra: dict[str, Any] = {}
            for _ in range(args.repeat):
                elapsed, extra = run_on(args.backend, _scan, path, args.driver, max_ios, combine)
                times.append(elapsed)
            bw = size / statistics.median(times)
            ratio = f" ({bw / fio_bw:.2f}x fio)" if fio_bw else ""
            rows.append((name, bw / 2**20, f"MiB/s{ratio}"))
            results[name] = {"bytes_per_s": bw, "median_s": statistics.median(times), **extra}
        random_job = _random_job(args, path, size, 32)
        blocks = [off // PAGE for off in offsets(random_job)[: args.random_reads]]
        pool_t, file_t, hit = [], [], 0.0
        for _ in range(args.repeat):
            t, hit = run_on(args.backend, _random_pool, path, args.driver, blocks, 32)
            pool_t.append(t)
            file_t.append(run_job(random_job).seconds)
        pool_rate = len(blocks) / statistics.median(pool_t)
        file_rate = len(blocks) / statistics.median(file_t)
        rows.append(
            (
                f"random read_page x32 (hit rate {hit:.0%})",
                pool_rate,
                f"pages/s ({pool_rate / file_rate:.2f}x)",
            )
        )
        rows.append(("random preadinto x32 (file API)", file_rate, "pages/s"))
        results["random_pool_pages_per_s"] = pool_rate
        results["random_pool_hit_rate"] = hit
        results["random_file_pages_per_s"] = file_rate
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(
        f"buffer pool, {args.size_mib} MiB file, driver={results['driver']}, {args.backend}, "
        f"median of {args.repeat}"
    )
    for name, value, unit in rows:
        print(f"  {name:<{width}}  {value:>10.1f} {unit}")
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    script(__doc__, add_arguments, main, prog="python benchmarks/buffers.py")
