"""Benchmark: WAL group commit, durable commits/s and commit latency (issue 5).

Measures, in a fresh directory each:

1. ``group``: ``--committers`` tasks (64) committing ``--size``-byte records (128) for
   ``--seconds`` through :class:`aiopg_io.wal.WAL`: commits/s, p50/p99 latency, commits per
   sync (the group-commit factor).
2. ``naive``: one task doing pwrite + fdatasync per record through the same library
   (``aiopg_io.open``, same driver): what group commit is measured against.
3. ``single``: one committer on the WAL against one pwrite + fdatasync per record on a
   preallocated, zero-filled file (as many bytes per write as a commit puts on disk; timed
   once the WAL's background preallocation is done), both through the library and as bare
   ``os`` calls (the floor one commit can reach), interleaved in short slices so
   shared-disk noise hits all three alike, with the process CPU per commit of each; and
   the linked op alone (``AsyncFile.pwritev_sync``, one op for the write and its
   fdatasync), which is what a lone commit issues; the library's pair is two ops.
4. ``pg_test_fsync``'s fdatasync ops/s on the same directory, when the binary is installed
   (``/usr/lib/postgresql/*/bin``).

Nothing here is a read loop, so aiopg_io's engine is not used: commits and
write + fdatasync pairs are timed one by one. Results: docs/benchmarks.md.

Run from a checkout (``--loop uvloop`` or ``trio`` needs the ``bench`` extra:
``pip install -e '.[bench]'``; ``pg_test_fsync`` comes with PostgreSQL's server package)::

    python benchmarks/wal.py [--dir D] [--driver worker] [--loop asyncio|uvloop|trio] [--seconds 3]
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from _common import LOOPS, run_on, script

import aiopg_io
from aiopg_io.wal import WAL

_RAW_FILE_SIZE = 64 * 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=None, help="where to put the WAL (default: a temp dir under .)")
    parser.add_argument("--driver", default=None, help="driver name (default: auto)")
    parser.add_argument("--loop", default="asyncio", choices=LOOPS)
    parser.add_argument("--committers", type=int, default=64)
    parser.add_argument("--size", type=int, default=128, help="record payload bytes")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--sync-method", default="fdatasync", choices=["fdatasync", "o_dsync", "fsync"])
    parser.add_argument("--direct", action="store_true")
    parser.add_argument("--no-pg-test-fsync", action="store_true")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _run_for(
    seconds: float, workers: int, one: Callable[[], Awaitable[Any]]
) -> tuple[int, list[float]]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        clock = time.perf_counter
        while clock() < deadline:
            t0 = clock()
            await one()
            latencies.append(clock() - t0)

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)
    return len(latencies), latencies


async def _group(args: argparse.Namespace, directory: str, workers: int) -> dict[str, float]:
    payload = os.urandom(args.size)
    async with WAL.open(
        directory, driver=args.driver, sync_method=args.sync_method, direct=args.direct, segments_ahead=2
    ) as wal:
        await _run_for(0.3, workers, lambda: wal.commit(payload))  # warm: segments, threads
        before = wal.statistics()
        t0, cpu0 = time.perf_counter(), time.process_time()
        n, lat = await _run_for(args.seconds, workers, lambda: wal.commit(payload))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        after = wal.statistics()
    syncs = max(1, after.syncs - before.syncs)
    return {
        "commits_per_s": n / elapsed,
        "p50_ms": _pct(lat, 0.5) * 1e3,
        "p99_ms": _pct(lat, 0.99) * 1e3,
        "commits_per_sync": n / syncs,
        "syncs_per_s": syncs / elapsed,
        "cpu_us_per_commit": cpu / max(1, n) * 1e6,
        "writes_per_round": (after.writes - before.writes) / max(1, after.flush_rounds - before.flush_rounds),
    }


async def _raw(args: argparse.Namespace, directory: str, seconds: float) -> dict[str, float]:
    """One writer, pwrite + fdatasync per record, on a preallocated zero-filled file."""
    path = os.path.join(directory, "raw.dat")
    size = min(_RAW_FILE_SIZE, 16 * 1024 * 1024)
    with open(path, "wb") as f:
        f.write(bytes(size))
        f.flush()
        os.fsync(f.fileno())
    payload = os.urandom(args.size)
    async with aiopg_io.open(path, "r+b", driver=args.driver) as f:
        pos = 0

        async def one() -> None:
            nonlocal pos
            await f.pwrite(payload, pos)
            await f.fdatasync()
            pos = (pos + len(payload)) % (size - len(payload))

        await _run_for(0.3, 1, one)
        t0, cpu0 = time.perf_counter(), time.process_time()
        n, lat = await _run_for(seconds, 1, one)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    os.unlink(path)
    return {
        "commits_per_s": n / elapsed,
        "p50_ms": _pct(lat, 0.5) * 1e3,
        "p99_ms": _pct(lat, 0.99) * 1e3,
        "cpu_us_per_commit": cpu / max(1, n) * 1e6,
    }


def _pg_test_fsync(directory: str, seconds: float) -> float | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_test_fsync"))
    on_path = shutil.which("pg_test_fsync")
    if on_path:
        found.append(on_path)
    if not found:
        return None
    out = subprocess.run(
        [found[-1], "-f", os.path.join(directory, "pg_test_fsync.out"), "-s", str(max(1, int(seconds)))],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    # The first "fdatasync" line is the one-8kB-write section, as PostgreSQL documents it.
    m = re.search(r"^\s*fdatasync\s+([\d.,]+) ops/sec", out, re.MULTILINE)
    return float(m.group(1).replace(",", "")) if m else None


async def _single_vs_raw(args: argparse.Namespace, directory: str) -> dict[str, dict[str, float]]:
    """One committer vs one write + fdatasync (through the library, and bare os calls),
    interleaved in short slices so a disk shared with other load treats them alike."""
    payload = os.urandom(args.size)
    path = os.path.join(directory, "raw.dat")
    size = 16 * 1024 * 1024
    with open(path, "wb") as fh:
        fh.write(bytes(size))
        fh.flush()
        os.fsync(fh.fileno())
    lat: dict[str, list[float]] = {"wal": [], "library": [], "linked": [], "os": []}
    cpu = dict.fromkeys(lat, 0.0)  # process CPU seconds (all threads, io_uring's workers too)
    process_time = time.process_time
    slices = max(4, int(args.seconds * 5))
    clock = time.perf_counter
    async with (
        WAL.open(
            os.path.join(directory, "wal"),
            driver=args.driver,
            sync_method=args.sync_method,
            direct=args.direct,
        ) as wal,
        aiopg_io.open(path, "r+b", driver=args.driver) as f,
    ):
        fd = f.fileno()
        pos = 0
        # Like with like: the references write as many bytes per op as a commit puts on disk
        # (record header + payload, 8-aligned; a page header every 8 KiB aside), and no slice
        # is timed while the WAL's background preallocation (a 16 MiB zero-fill + fsync at
        # open) still competes for the disk.
        for _ in range(200):
            if wal.statistics().segments_created > wal.segments_ahead:
                break
            await anyio.sleep(0.01)
        record = len(payload) + 64
        for _ in range(20):
            lsn = await wal.commit(payload)
            record = min(record, wal.insert_lsn - lsn)
        payload = os.urandom(record)
        wal_payload = payload[: args.size]
        for _ in range(slices):
            end, c0 = clock() + 0.2 / 4, process_time()
            while clock() < end:
                t0 = clock()
                await wal.commit(wal_payload)
                lat["wal"].append(clock() - t0)
            end, c1 = clock() + 0.2 / 4, process_time()
            while clock() < end:
                t0 = clock()
                await f.pwrite(payload, pos)
                await f.fdatasync()
                lat["library"].append(clock() - t0)
                pos = (pos + len(payload)) % (size - len(payload))
            end, c2 = clock() + 0.2 / 4, process_time()
            while clock() < end:
                t0 = clock()
                await f.pwritev_sync([payload], pos)
                lat["linked"].append(clock() - t0)
                pos = (pos + len(payload)) % (size - len(payload))
            end, c3 = clock() + 0.2 / 4, process_time()
            while clock() < end:
                t0 = clock()
                os.pwrite(fd, payload, pos)
                os.fdatasync(fd)
                lat["os"].append(clock() - t0)
                pos = (pos + len(payload)) % (size - len(payload))
            c4 = process_time()
            for k, spent in zip(lat, (c1 - c0, c2 - c1, c3 - c2, c4 - c3), strict=True):
                cpu[k] += spent
    os.unlink(path)
    return {
        k: {
            "p50_ms": _pct(v, 0.5) * 1e3,
            "p99_ms": _pct(v, 0.99) * 1e3,
            "cpu_us_per_commit": cpu[k] / max(1, len(v)) * 1e6,
        }
        for k, v in lat.items()
    }


async def _bench(args: argparse.Namespace, base: str) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}

    def fresh(name: str) -> str:
        d = os.path.join(base, name)
        os.makedirs(d)
        return d

    results["group"] = await _group(args, fresh("group"), args.committers)
    raw_dir = fresh("raw")
    results["naive"] = await _raw(args, raw_dir, args.seconds)
    single = await _single_vs_raw(args, fresh("single"))
    results["single"], results["library"], results["raw"] = single["wal"], single["library"], single["os"]
    results["linked"] = single["linked"]
    return results


def main(args: argparse.Namespace) -> int:
    base = tempfile.mkdtemp(prefix="aiopg-wal-bench-", dir=args.dir or ".")
    try:
        results = run_on(args.loop, _bench, args, base)
        pg = None if args.no_pg_test_fsync else _pg_test_fsync(base, args.seconds)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    g, s, naive = results["group"], results["single"], results["naive"]
    print(
        f"WAL commit benchmark: {args.committers} committers x {args.size}-byte records, {args.seconds:g} s, "
        f"loop={args.loop} driver={args.driver or 'auto'} sync_method={args.sync_method} direct={args.direct}"
    )
    print(
        f"  group commit : {g['commits_per_s']:10.0f} commits/s  p50 {g['p50_ms']:.3f} ms  "
        f"p99 {g['p99_ms']:.3f} ms  {g['commits_per_sync']:.1f} commits/sync  "
        f"{g['syncs_per_s']:.0f} syncs/s  {g['cpu_us_per_commit']:.1f} us CPU/commit  "
        f"{g['writes_per_round']:.2f} writes/round"
    )
    print(
        f"  naive loop   : {naive['commits_per_s']:10.0f} commits/s  p50 {naive['p50_ms']:.3f} ms  "
        f"p99 {naive['p99_ms']:.3f} ms  {naive['cpu_us_per_commit']:.1f} us CPU/commit  "
        "(pwrite + fdatasync per record, same library)"
    )
    print(f"  group / naive: {g['commits_per_s'] / naive['commits_per_s']:.1f}x")
    raw, lib, linked = results["raw"], results["library"], results["linked"]
    print(
        f"  one committer: p50 {s['p50_ms']:.3f} ms; one write+fdatasync through the library p50 "
        f"{lib['p50_ms']:.3f} ms ({s['p50_ms'] / lib['p50_ms']:.2f}x); os.pwrite+os.fdatasync p50 "
        f"{raw['p50_ms']:.3f} ms ({s['p50_ms'] / raw['p50_ms']:.2f}x)  [interleaved]"
    )
    print(
        f"  linked op    : pwritev_sync p50 {linked['p50_ms']:.3f} ms "
        f"({linked['p50_ms'] / raw['p50_ms']:.2f}x the os calls)  [interleaved]"
    )
    print(
        f"  CPU per commit: one committer {s['cpu_us_per_commit']:.1f} us; library write+fdatasync "
        f"{lib['cpu_us_per_commit']:.1f} us; linked {linked['cpu_us_per_commit']:.1f} us; "
        f"os calls {raw['cpu_us_per_commit']:.1f} us"
    )
    if pg is not None:
        print(f"  pg_test_fsync fdatasync (8 kB writes), same filesystem: {pg:.0f} ops/s")
    elif not args.no_pg_test_fsync:
        print("  pg_test_fsync: not installed (apt-get install postgresql-<ver> provides it)")
    return 0


if __name__ == "__main__":
    script(__doc__, add_arguments, main, prog="python benchmarks/wal.py")
