"""A small fio: one job = a workload in fio's vocabulary run through aiopg_io.

``iodepth`` tasks each keep one op in flight (``preadinto``/``pwrite`` with a buffer of
their own, aligned for direct I/O), for ``runtime`` seconds, after ``ramp`` seconds that are
not counted (fio's ``ramp_time``). Sequential jobs share one cursor, so the tasks together
stream the file front to back, wrapping at the end. Latency is measured per op around the
await, so it includes the loop's scheduling, as a user sees it.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

import aiopg_io

__all__ = ["REFERENCES", "RW_MODES", "Job", "JobResult", "parse_size", "prepare_file", "run_job"]

RW_MODES = ("read", "write", "randread", "randwrite")
LOOPS = ("asyncio", "uvloop", "trio")


class SizeError(ValueError, argparse.ArgumentTypeError):
    """A size that does not parse (an ArgumentTypeError too, so argparse shows the message)."""


def parse_size(text: str) -> int:
    """fio-style sizes: 4k, 128K, 1m, 1G, or plain bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise SizeError(f"size {text!r} is not a number with an optional K, M, G or T suffix") from None


@dataclass(frozen=True)
class Job:
    filename: str
    rw: str = "randread"
    bs: int = 4096
    iodepth: int = 32
    direct: bool = False
    size: int = 256 << 20
    runtime: float = 3.0
    ramp: float = 0.3
    driver: str = "auto"
    loop: str = "asyncio"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rw not in RW_MODES:
            raise ValueError(f"rw={self.rw!r}: must be one of {', '.join(RW_MODES)}")
        if self.loop not in LOOPS:
            raise ValueError(f"loop={self.loop!r}: must be one of {', '.join(LOOPS)}")
        if self.bs <= 0 or self.size < self.bs:
            raise ValueError(f"bs={self.bs} must be positive and at most size={self.size}")
        if self.iodepth < 1:
            raise ValueError(f"iodepth={self.iodepth} must be at least 1")
        if self.driver == "aiofiles" and self.loop == "trio":
            raise ValueError("aiofiles runs on asyncio only (it uses the loop's executor)")


@dataclass
class JobResult:
    job: Job
    driver: str  # what auto resolved to
    ops: int
    seconds: float
    iops: float
    mib_per_s: float
    lat_p50_us: float
    lat_p99_us: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["job"] = asdict(self.job)
        return d


def prepare_file(path: str, size: int, *, warm: bool = True) -> None:
    """Make ``path`` a file of ``size`` random-ish bytes (kept if already that size), and
    read it once so buffered reads start from a warm page cache when ``warm``."""
    try:
        current = os.stat(path).st_size
    except FileNotFoundError:
        current = -1
    if current != size:
        chunk = random.Random(size).randbytes(1 << 20)
        with open(path, "wb") as f:
            left = size
            while left > 0:
                left -= f.write(chunk[: min(left, len(chunk))])
            f.flush()
            os.fsync(f.fileno())
    if warm:
        with open(path, "rb", buffering=0) as f:
            while f.read(8 << 20):
                pass


#: Reference implementations a job can name instead of a driver. ``aiofiles`` is what its
#: users write: one handle per task, ``seek`` + ``read``/``write`` (two thread hops per op;
#: aiofiles has no positional call). ``to_thread`` is the best a thread hop per op can do:
#: ``os.pread``/``os.pwrite`` through ``anyio.to_thread.run_sync``, one hop per op.
REFERENCES = ("aiofiles", "to_thread")


class _Reference:
    """The aiopg_io file surface the workers use, implemented by a reference library."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.driver = job.driver
        self.alignment = None
        self._fd = -1

    async def __aenter__(self) -> _Reference:
        flags = os.O_RDWR if self.job.rw in ("write", "randwrite") else os.O_RDONLY
        self._fd = os.open(self.job.filename, flags | (getattr(os, "O_DIRECT", 0) if self.job.direct else 0))
        return self

    async def __aexit__(self, *exc: object) -> None:
        os.close(self._fd)

    async def handle(self) -> Any:
        if self.driver == "aiofiles":
            import aiofiles

            mode = "r+b" if self.job.rw in ("write", "randwrite") else "rb"
            return await aiofiles.open(self.job.filename, mode, buffering=0)
        return None

    async def preadinto(self, buf: memoryview, off: int, handle: Any) -> int:
        if handle is not None:
            await handle.seek(off)
            n: int = await handle.readinto(buf)
            return n
        return await anyio.to_thread.run_sync(os.preadv, self._fd, [buf], off)

    async def pwrite(self, buf: memoryview, off: int, handle: Any) -> int:
        if handle is not None:
            await handle.seek(off)
            n: int = await handle.write(buf)
            return n
        return await anyio.to_thread.run_sync(os.pwrite, self._fd, buf, off)


async def _run(job: Job) -> JobResult:
    align = 4096
    blocks = job.size // job.bs
    mode = "r+b" if job.rw in ("write", "randwrite") else "rb"
    is_write = job.rw in ("write", "randwrite")
    rand = job.rw.startswith("rand")
    reference = job.driver in REFERENCES
    opened: Any = _Reference(job) if reference else aiopg_io.open(
        job.filename, mode, direct=job.direct, driver=job.driver
    )
    async with opened as f:
        if job.direct and f.alignment is not None:
            align = f.alignment.block
            if job.bs % f.alignment.offset:
                raise ValueError(
                    f"bs={job.bs} is not a multiple of the direct-I/O alignment {f.alignment.offset}"
                )
        cursor = 0
        lat: list[float] = []
        ops = 0
        counting = False
        stop = False

        async def worker(i: int) -> None:
            rng = random.Random(job.seed * 1000 + i)
            buf = aiopg_io.aligned_buffer(job.bs, max(align, 4096))
            if is_write:
                buf[:] = rng.randbytes(job.bs)
            perf = time.perf_counter
            handle = await f.handle() if reference else None
            try:
                await _loop(rng, buf, perf, handle)
            finally:
                if handle is not None:
                    await handle.close()

        async def _loop(rng: random.Random, buf: memoryview, perf: Any, handle: Any) -> None:
            nonlocal cursor, ops
            while not stop:
                if rand:
                    off = rng.randrange(blocks) * job.bs
                else:
                    off = cursor
                    cursor = (cursor + job.bs) % (blocks * job.bs)
                t0 = perf()
                if reference:
                    await (f.pwrite if is_write else f.preadinto)(buf, off, handle)
                elif is_write:
                    await f.pwrite(buf, off)
                else:
                    await f.preadinto(buf, off)
                if counting:
                    lat.append(perf() - t0)
                    ops += 1

        async with anyio.create_task_group() as tg:
            for i in range(job.iodepth):
                tg.start_soon(worker, i)
            await anyio.sleep(job.ramp)
            counting = True
            t_start = time.perf_counter()
            await anyio.sleep(job.runtime)
            counting = False
            elapsed = time.perf_counter() - t_start
            stop = True
        driver = f.driver
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [lat[0] if lat else 0.0] * 99
    return JobResult(
        job=job,
        driver=driver,
        ops=ops,
        seconds=elapsed,
        iops=ops / elapsed,
        mib_per_s=ops * job.bs / elapsed / (1 << 20),
        lat_p50_us=q[49] * 1e6,
        lat_p99_us=q[98] * 1e6,
    )


def run_job(job: Job) -> JobResult:
    """Run ``job`` in a fresh event loop of the kind it names."""
    backend = "trio" if job.loop == "trio" else "asyncio"
    options: dict[str, Any] = {"use_uvloop": True} if job.loop == "uvloop" else {}
    result: JobResult = anyio.run(_run, job, backend=backend, backend_options=options)
    return result
