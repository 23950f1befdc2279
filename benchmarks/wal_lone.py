"""Benchmark: the ways to run a lone WAL commit's write + fdatasync (issue 15, item 2).

A lone committer issues one linked write + sync (``AsyncFile.pwritev_sync``,
``OpKind.WRITE_SYNC``). This script times that op, done each candidate way, against the
bare ``os.pwrite`` + ``os.fdatasync`` pair in the caller (the floor), op by op, in
interleaved slices (``--rounds`` rounds of ``--ops`` ops per candidate, the order rotated
each round), each candidate on a file of its own, preallocated, zero-filled and fsynced,
appended to in records of ``--size`` bytes (152: a 128-byte commit's record):

- ``os``: the bare pair, run in the event loop's thread (the reference; it blocks the loop);
- ``<driver>:link``: the driver's linked op as it is (the write with ``IOSQE_IO_LINK`` and
  the fdatasync in one submission on the ring drivers; one thread call on ``worker``);
- ``io_uring:async``: the same chain with ``IOSQE_ASYNC`` on the write (the pure driver's
  flag patched for the slice), so the kernel skips its inline attempt and queues the write
  to an io-wq worker at once;
- ``<driver>:thread``: the driver with WRITE_SYNC left out of its kinds, so the thread
  fallback (``drivers/_fallback.py``) runs the pair in one of its threads;
- ``wal``: ``WAL.commit`` of a 128-byte record by a lone committer (auto driver);
- ``wal:sync``: the same on the ``sync`` driver, which runs the write and the fdatasync in
  the loop's thread (blocking it for the device's flush, as ``os`` does): what a lone
  commit costs when nothing else needs the loop meanwhile.

Per candidate: latency p50 and p90 over all ops, process CPU per op (user + sys of every
thread, io-wq workers included) as the median of the rounds, and the paired ratios to
``os`` (round *i* against ``os``'s round *i*): median [lowest-highest]. Results:
docs/benchmarks.md, "The lone committer's ways".

Run from a checkout (``--loop uvloop`` or ``trio`` needs the ``bench`` extra:
``pip install -e '.[bench]'``)::

    python benchmarks/wal_lone.py [--dir D] [--loop asyncio|uvloop|trio] [--rounds 30] [--ops 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import anyio
from _common import LOOPS, run_on, script

import aiopg_io
from aiopg_io.drivers import Driver, DriverSpec, driver_class, unavailable_reason
from aiopg_io.drivers import io_uring as pure_uring
from aiopg_io.drivers._fallback import with_thread_fallback
from aiopg_io.drivers.base import OpKind
from aiopg_io.wal import WAL

_FILE_SIZE = 16 * 1024 * 1024
_RING_DRIVERS = ("io_uring_c", "io_uring")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=None, help="where to put the files (default: a temp dir under .)")
    parser.add_argument("--loop", default="asyncio", choices=LOOPS)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--ops", type=int, default=40, help="ops per candidate per round")
    parser.add_argument("--size", type=int, default=152, help="bytes per write (a 128-byte commit's record)")


@dataclass(frozen=True)
class _ThreadPair:
    """A driver factory: ``name`` without WRITE_SYNC, so the thread fallback runs the pair."""

    driver: str

    @property
    def key(self) -> object:
        return self

    @property
    def name(self) -> str:
        return f"{self.driver}:thread"

    def create(self) -> Driver:
        driver = driver_class(self.driver)()
        driver._kinds -= {OpKind.WRITE_SYNC}  # type: ignore[attr-defined]  # (ring drivers only)
        return with_thread_fallback(driver)


def _candidates() -> list[tuple[str, Any]]:
    """(name, driver) for each candidate that runs here."""
    out: list[tuple[str, Any]] = []
    for name in _RING_DRIVERS:
        if unavailable_reason(name) is None:
            out.append((f"{name}:link", DriverSpec(name)))
            out.append((f"{name}:thread", _ThreadPair(name)))
    if unavailable_reason("io_uring") is None:
        out.append(("io_uring:async", DriverSpec("io_uring", (("entries", 64),))))  # its own ring
    out.append(("worker:link", DriverSpec("worker")))
    return out


def _preallocated(path: str) -> str:
    with open(path, "wb") as fh:
        fh.write(bytes(_FILE_SIZE))
        fh.flush()
        os.fsync(fh.fileno())
    return path


async def _bench(args: argparse.Namespace, directory: str) -> dict[str, dict[str, list[float]]]:
    record = os.urandom(args.size)
    names = ["os", *(n for n, _ in _candidates()), "wal", "wal:sync"]
    lat: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    p50: dict[str, list[float]] = {n: [] for n in names}
    link_flags = pure_uring._LINK_WRITE_FLAGS
    clock, process_time = time.perf_counter, time.process_time
    async with AsyncExitStack() as stack:
        files: dict[str, Any] = {}
        for name, driver in _candidates():
            path = _preallocated(os.path.join(directory, name.replace(":", "-")))
            files[name] = await stack.enter_async_context(aiopg_io.open(path, "r+b", driver=driver))
        fd = os.open(_preallocated(os.path.join(directory, "os")), os.O_RDWR)
        stack.callback(os.close, fd)
        wals = {
            "wal": await stack.enter_async_context(WAL.open(os.path.join(directory, "wal"))),
            "wal:sync": await stack.enter_async_context(
                WAL.open(os.path.join(directory, "wal-sync"), driver="sync")
            ),
        }
        for wal in wals.values():
            for _ in range(200):  # no slice is timed while the WAL's preallocation runs
                if wal.statistics().segments_created > wal.segments_ahead:
                    break
                await anyio.sleep(0.01)
        pos = dict.fromkeys(names, 0)
        for f in files.values():  # warm: each driver's ring, threads and io-wq worker
            await f.pwritev_sync([record], 0)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                pure_uring._LINK_WRITE_FLAGS = link_flags | (
                    pure_uring._L.IOSQE_ASYNC if name == "io_uring:async" else 0
                )
                times = []
                c0 = process_time()
                for _ in range(args.ops):
                    off = pos[name]
                    pos[name] = (off + args.size) % (_FILE_SIZE - args.size)
                    t0 = clock()
                    if name == "os":
                        os.pwrite(fd, record, off)
                        os.fdatasync(fd)
                        await anyio.sleep(0)  # one loop pass, as an awaited op gets
                    elif name in wals:
                        await wals[name].commit(record[:128])
                    else:
                        await files[name].pwritev_sync([record], off)
                    times.append(clock() - t0)
                cpu[name].append((process_time() - c0) / args.ops * 1e6)
                p50[name].append(statistics.median(times) * 1e6)
                lat[name] += times
        pure_uring._LINK_WRITE_FLAGS = link_flags
        # Which path ran: the thread candidates' ops went to the fallback threads, the
        # others' did not.
        paths = {n: dict(f.driver_statistics().extra) for n, f in files.items()}
    for name, extra in paths.items():
        threaded = int(extra.get("fallback_ops", 0))
        if name.endswith(":thread") != (threaded >= args.rounds * args.ops):
            raise AssertionError(f"{name}: {threaded} ops in the fallback threads")
    return {"lat": lat, "cpu": cpu, "p50": p50}  # type: ignore[dict-item]


def _report(res: dict[str, Any]) -> None:
    lat, cpu, p50 = res["lat"], res["cpu"], res["p50"]
    head = f"{'candidate':16} {'p50 µs':>8} {'p90 µs':>8} {'CPU µs':>8}"
    print(f"{head}  {'p50 / os, paired':>20}  {'CPU / os':>8}")
    for name in lat:
        ops = sorted(lat[name])
        ratios = sorted(a / b for a, b in zip(p50[name], p50["os"], strict=True))
        cratios = sorted(a / b for a, b in zip(cpu[name], cpu["os"], strict=True))
        spread = f"{statistics.median(ratios):5.2f}x [{ratios[0]:.2f}-{ratios[-1]:.2f}]"
        print(
            f"{name:16} {statistics.median(ops) * 1e6:8.1f} {ops[int(len(ops) * 0.9)] * 1e6:8.1f} "
            f"{statistics.median(cpu[name]):8.1f}  {spread:>20}  {statistics.median(cratios):7.2f}x"
        )


def main(args: argparse.Namespace) -> int:
    load = os.getloadavg()[0]
    print(f"loop={args.loop} rounds={args.rounds} ops={args.ops} size={args.size} load={load:.1f}")
    with tempfile.TemporaryDirectory(prefix="aiopg-wal-lone-", dir=args.dir or ".") as d:
        res = run_on(args.loop, _bench, args, d)
    _report(res)
    print(f"load {load:.1f} -> {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    script(__doc__, add_arguments, main, "python benchmarks/wal_lone.py")
