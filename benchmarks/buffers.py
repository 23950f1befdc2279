"""Benchmark: the buffer pool's read streams, random page reads and checkpoint writes.

Modes (``--modes``, all by default), each contender once per round, rounds interleaved,
medians printed with CPU µs per page (process user + sys over the pages):

1. ``seq``: a sequential scan of one file with ``direct=True`` through ``read_stream``
   (max_ios=16, io_combine_limit=16), page at a time and a run at a time (``runs()``),
   against fio reading the same file sequentially in 128 KiB blocks at iodepth 16 (target
   >= 0.95x fio) and the file API doing the same; ``--variants`` adds the scan with
   io_combine_limit=1 and with max_ios=1, to show what combining and concurrency buy.
2. ``random``: random page reads through the pool at a ~10% hit rate (the pool holds a
   tenth of the file), 32 tasks in flight, against the same reads through the file API's
   ``preadinto``, task for task (target >= 0.95x).
3. ``writeback``: a checkpoint (``flush``: writes and one fdatasync) of ``--writeback-mib``
   of dirty pages, against fio writing as much sequentially, 128 KiB at iodepth 16, direct
   (no fsync at its end: the checkpoint's fdatasync after direct writes costs well under a
   millisecond); ``--write-combine 16,64`` makes one checkpoint contender per
   ``write_combine_limit``.

The file-API contenders run on aiopg_io's engine (``aiopg_io.bench``). Results:
docs/benchmarks.md.

Run from a checkout, on a filesystem that takes O_DIRECT, with fio on the PATH for the
baseline (``--backend uvloop`` or ``trio`` needs the ``bench`` extra:
``pip install -e '.[bench]'``)::

    python benchmarks/buffers.py --size-mib 256 [--dir D] [--repeat 3] [--modes seq,random,writeback]
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
from aiopg_io.buffers import BufferPool, ReadStream

PAGE = 8192


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024 = 1 GiB)")
    parser.add_argument("--dir", default=None, help="where to put the file (a disk that takes O_DIRECT)")
    parser.add_argument("--driver", default=None, help="aiopg_io driver (default: auto)")
    parser.add_argument("--backend", default="asyncio", choices=LOOPS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--random-reads", type=int, default=20000)
    parser.add_argument("--skip-fio", action="store_true")
    parser.add_argument(
        "--modes", default="seq,random,writeback", help="comma list of seq, random, writeback (default: all)"
    )
    parser.add_argument("--variants", action="store_true", help="also scan with combine=1 and max_ios=1")
    parser.add_argument("--writeback-mib", type=int, default=64, help="dirty pages a checkpoint writes")
    parser.add_argument(
        "--write-combine",
        default=None,
        help="comma list of the pool's write_combine_limit for the checkpoint, each a contender "
        "(default: the pool's default)",
    )
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


def _cpu() -> float:
    """Process CPU time (user + system, every thread) in seconds, to the nanosecond:
    os.times() counts in clock ticks (10 ms), a tenth of a 256 MiB checkpoint's CPU."""
    return time.process_time()


async def _scan(
    path: str, driver: str | None, max_ios: int, combine: int, runs: bool
) -> tuple[float, float, dict[str, Any]]:
    """One scan of the whole file: (seconds, CPU seconds, statistics)."""
    async with BufferPool(1024, PAGE, direct=True, driver=driver) as pool:
        rel = await pool.open(path)
        t0, c0 = time.perf_counter(), _cpu()
        stream = pool.read_stream(rel, range(rel.nblocks), max_ios=max_ios, io_combine_limit=combine)
        if runs:
            async for run in stream.runs():
                run.release()
        else:
            async for page in stream:
                page.release()
        elapsed, cpu = time.perf_counter() - t0, _cpu() - c0
        s = pool.statistics()
        return elapsed, cpu, {"reads": s.reads, "blocks_per_read": round(s.blocks_per_read, 2)}


async def _random_pool(
    path: str, driver: str | None, blocks: list[int], tasks: int
) -> tuple[float, float, float]:
    """``blocks`` read through ``read_page`` by ``tasks`` tasks: (seconds, CPU seconds, hit rate)."""
    nblocks = os.path.getsize(path) // PAGE
    async with BufferPool(max(64, nblocks // 10), PAGE, direct=True, driver=driver) as pool:
        rel = await pool.open(path)
        # Warm the pool so the hit rate is the steady state's (about the pool/file ratio).
        async for page in pool.read_stream(rel, range(pool.nbuffers)):
            page.release()
        before = pool.statistics()
        t0, c0 = time.perf_counter(), _cpu()

        async def worker(mine: list[int]) -> None:
            for b in mine:
                (await pool.read_page(rel, b)).release()

        async with anyio.create_task_group() as tg:
            for k in range(tasks):
                tg.start_soon(worker, blocks[k::tasks])
        elapsed, cpu = time.perf_counter() - t0, _cpu() - c0
        s = pool.statistics()
        hits = s.hits - before.hits
        return elapsed, cpu, hits / max(1, hits + s.misses - before.misses)


async def _checkpoint(
    path: str, driver: str | None, nblocks: int, write_combine: int | None
) -> tuple[float, float]:
    """Dirty every page of the first ``nblocks`` (all held by the pool), then time one
    checkpoint: its writes and its fdatasync. (seconds, CPU seconds)."""
    kw = {} if write_combine is None else {"write_combine_limit": write_combine}
    async with BufferPool(nblocks, PAGE, direct=True, driver=driver, **kw) as pool:
        rel = await pool.open(path)
        async for page in pool.read_stream(rel, range(nblocks)):
            with page:
                page.data[:8] = os.urandom(8)
                page.mark_dirty()
        t0, c0 = time.perf_counter(), _cpu()
        await pool.flush()
        return time.perf_counter() - t0, _cpu() - c0


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def main(args: argparse.Namespace) -> int:
    size = args.size_mib << 20
    directory = args.dir or os.getcwd()
    tmp = tempfile.mkdtemp(prefix="aiopg_io-bench-buffers-", dir=directory)
    path = os.path.join(tmp, "relation")
    npages = size // PAGE
    wb_blocks = min(npages, (args.writeback_mib << 20) // PAGE)
    results: dict[str, Any] = {"size_bytes": size, "driver": args.driver or "auto", "backend": args.backend}
    modes = set(args.modes.split(","))
    write_combines: list[int | None] = (
        [int(x) for x in args.write_combine.split(",")] if args.write_combine else [None]
    )
    has_runs = hasattr(ReadStream, "runs")
    scans = [("read_stream pages (max_ios=16, combine=16)", 16, 16, False)]
    if has_runs:
        scans.append(("read_stream runs (max_ios=16, combine=16)", 16, 16, True))
    if args.variants:
        scans += [
            ("read_stream io_combine_limit=1", 16, 1, False),
            ("read_stream max_ios=1 (no look-ahead I/O concurrency)", 1, 16, False),
        ]
    # name -> (seconds per round, CPU seconds per round, pages per round)
    timed: dict[str, tuple[list[float], list[float], int]] = {}

    def record(name: str, seconds: float, cpu: float, pages: int) -> None:
        t, c, _ = timed.setdefault(name, ([], [], pages))
        t.append(seconds)
        c.append(cpu)

    try:
        prepare_file(path, size, warm=False)
        seq = _seq_job(args, path, size)
        wb = _job(
            args,
            path,
            wb_blocks * PAGE,
            rw="write",
            bs=128 * 1024,
            iodepth=16,
            number_ios=wb_blocks * PAGE // (128 * 1024),
        )
        random_job = _random_job(args, path, size, 32)
        blocks = [off // PAGE for off in offsets(random_job)[: args.random_reads]]
        hit = 0.0
        extra: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeat):  # interleaved rounds: every contender once per round
            if "seq" in modes:
                if not args.skip_fio:
                    r = fio(seq, ("io_uring", "libaio", "psync"))
                    if r is not None:
                        record(
                            "fio seq read 128 KiB x16",
                            size / r.bytes_per_s,
                            r.cpu_us_per_op * (size // (128 << 10)) / 1e6,
                            npages,
                        )
                j = run_job(seq)
                record("file API preadinto 128 KiB x16", j.seconds, j.cpu_us_per_op * j.ops / 1e6, npages)
                for name, max_ios, combine, runs in scans:
                    elapsed, cpu, stats = run_on(
                        args.backend, _scan, path, args.driver, max_ios, combine, runs
                    )
                    record(name, elapsed, cpu, npages)
                    extra[name] = stats
            if "random" in modes:
                t, c, hit = run_on(args.backend, _random_pool, path, args.driver, blocks, 32)
                record("random read_page x32", t, c, len(blocks))
                j = run_job(random_job)
                record(
                    "random preadinto x32 (file API)", j.seconds, j.cpu_us_per_op * j.ops / 1e6, len(blocks)
                )
            if "writeback" in modes:
                if not args.skip_fio:
                    r = fio(wb, ("io_uring", "libaio", "psync"))
                    if r is not None:
                        n = wb_blocks * PAGE // (128 << 10)
                        record(
                            "fio seq write 128 KiB x16",
                            wb_blocks * PAGE / r.bytes_per_s,
                            r.cpu_us_per_op * n / 1e6,
                            wb_blocks,
                        )
                for wc in write_combines:
                    t, c = run_on(args.backend, _checkpoint, path, args.driver, wb_blocks, wc)
                    label = "" if wc is None else f", write_combine_limit={wc}"
                    record(f"checkpoint of {wb_blocks} dirty pages (+ fdatasync{label})", t, c, wb_blocks)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    refs = {
        "fio seq read 128 KiB x16": {n for n in timed if "read_stream" in n or n.startswith("file API")},
        "random preadinto x32 (file API)": {"random read_page x32"},
        "fio seq write 128 KiB x16": {n for n in timed if n.startswith("checkpoint")},
    }
    rows = []
    for name, (t, c, pages) in timed.items():
        secs = _median(t)
        row: dict[str, Any] = {
            "pages_per_s": pages / secs,
            "mib_per_s": pages * PAGE / secs / 2**20,
            "cpu_us_per_page": _median(c) / pages * 1e6,
            "rounds_s": [round(x, 4) for x in t],
            **extra.get(name, {}),
        }
        for ref, members in refs.items():
            if name in members and ref in timed:
                row["vs"] = ref
                row["ratio"] = _median(timed[ref][0]) / secs
        results[name] = row
        rows.append((name, row))
    width = max((len(n) for n, _ in rows), default=10)
    print(
        f"buffer pool, {args.size_mib} MiB file, driver={results['driver']}, {args.backend}, "
        f"median of {args.repeat} interleaved rounds"
    )
    for name, row in rows:
        ratio = f"  {row['ratio']:.2f}x {row['vs']}" if "ratio" in row else ""
        print(
            f"  {name:<{width}}  {row['mib_per_s']:>8.1f} MiB/s {row['pages_per_s']:>9.0f} pages/s "
            f"{row['cpu_us_per_page']:>6.2f} CPU us/page{ratio}"
        )
    results["random_pool_hit_rate"] = hit
    text = json.dumps(results, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    script(__doc__, add_arguments, main, prog="python benchmarks/buffers.py")
