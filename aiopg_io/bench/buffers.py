"""Benchmark: the buffer pool's read streams and random page reads.

1. A sequential scan of one file with ``direct=True`` through ``read_stream`` (defaults:
   max_ios=16, io_combine_limit=16, i.e. up to 16 reads of 128 KiB in flight), against fio
   reading the same file sequentially in 128 KiB blocks at iodepth 16 (the target is >= 0.9x
   fio's bandwidth); then the same scan with io_combine_limit=1 (no combining) and with
   max_ios=1 (one read in flight: no look-ahead concurrency), to show what each buys.
2. Random page reads through the pool at a ~10% hit rate (the pool holds a tenth of the
   file), 32 tasks in flight, against the same reads through the file API's ``preadinto``.

Run: ``python -m aiopg_io.bench.buffers --size-mib 256``. Prints a table and JSON; each
figure is the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .. import aligned_buffer
from .. import open as aio_open
from ..buffers import BufferPool

PAGE = 8192


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024 = 1 GiB)")
    parser.add_argument("--dir", default=None, help="where to put the file (a disk that takes O_DIRECT)")
    parser.add_argument("--driver", default=None, help="aiopg_io driver (default: auto)")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "uvloop", "trio"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--random-reads", type=int, default=20000)
    parser.add_argument("--skip-fio", action="store_true")
    parser.add_argument("--json", default=None, help="also write the JSON here")


def _make_file(path: str, size: int) -> None:
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
        f.flush()
        os.fsync(f.fileno())


def _fio(path: str, size: int) -> float | None:
    exe = shutil.which("fio")
    if exe is None:
        return None
    for engine in ("io_uring", "libaio", "psync"):
        cmd = [
            exe,
            "--name=seq",
            f"--filename={path}",
            "--rw=read",
            "--bs=128k",
            "--iodepth=16",
            f"--ioengine={engine}",
            "--direct=1",
            f"--size={size}",
            "--output-format=json",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            out = json.loads(proc.stdout[proc.stdout.index("{") :])
            return float(out["jobs"][0]["read"]["bw_bytes"])
    return None


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


async def _seq_file(path: str, driver: str | None) -> float:
    """fio's pattern through the file API: 16 tasks, each reading every 16th 128 KiB chunk."""
    chunk, depth = 128 * 1024, 16
    size = os.path.getsize(path)
    async with aio_open(path, "rb", direct=True, driver=driver) as f:
        t0 = time.perf_counter()

        async def worker(k: int) -> None:
            buf = aligned_buffer(chunk)
            for off in range(k * chunk, size, depth * chunk):
                await f.preadinto(buf, off)

        async with anyio.create_task_group() as tg:
            for k in range(depth):
                tg.start_soon(worker, k)
        return time.perf_counter() - t0


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


async def _random_file(path: str, driver: str | None, blocks: list[int], tasks: int) -> float:
    async with aio_open(path, "rb", direct=True, driver=driver) as f:
        t0 = time.perf_counter()

        async def worker(mine: list[int]) -> None:
            buf = aligned_buffer(PAGE)
            for b in mine:
                await f.preadinto(buf, b * PAGE)

        async with anyio.create_task_group() as tg:
            for k in range(tasks):
                tg.start_soon(worker, blocks[k::tasks])
        return time.perf_counter() - t0


def _run(args: argparse.Namespace, fn: Callable[..., Awaitable[Any]], *a: Any) -> Any:
    backend = "trio" if args.backend == "trio" else "asyncio"
    options = {"use_uvloop": True} if args.backend == "uvloop" else {}
    return anyio.run(fn, *a, backend=backend, backend_options=options)


def main(args: argparse.Namespace) -> int:
    size = args.size_mib << 20
    directory = args.dir or os.getcwd()
    tmp = tempfile.mkdtemp(prefix="aiopg_io-bench-buffers-", dir=directory)
    path = os.path.join(tmp, "relation")
    results: dict[str, Any] = {"size_bytes": size, "driver": args.driver or "auto", "backend": args.backend}
    try:
        _make_file(path, size)
        rows: list[tuple[str, float, str]] = []
        fio_bw = None
        if not args.skip_fio:
            runs = [bw for bw in (_fio(path, size) for _ in range(args.repeat)) if bw is not None]
            fio_bw = statistics.median(runs) if runs else None
            results["fio_seq_128k_qd16_bytes_per_s"] = fio_bw
            if fio_bw is not None:
                rows.append(("fio seq 128 KiB x16 (direct)", fio_bw / 2**20, "MiB/s"))
        times = [_run(args, _seq_file, path, args.driver) for _ in range(args.repeat)]
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
                elapsed, extra = _run(args, _scan, path, args.driver, max_ios, combine)
                times.append(elapsed)
            bw = size / statistics.median(times)
            ratio = f" ({bw / fio_bw:.2f}x fio)" if fio_bw else ""
            rows.append((name, bw / 2**20, f"MiB/s{ratio}"))
            results[name] = {"bytes_per_s": bw, "median_s": statistics.median(times), **extra}
        rng = random.Random(42)
        nblocks = size // PAGE
        blocks = [rng.randrange(nblocks) for _ in range(args.random_reads)]
        pool_t, file_t, hit = [], [], 0.0
        for _ in range(args.repeat):
            t, hit = _run(args, _random_pool, path, args.driver, blocks, 32)
            pool_t.append(t)
            file_t.append(_run(args, _random_file, path, args.driver, blocks, 32))
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
