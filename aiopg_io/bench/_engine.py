"""A small fio: one job = a workload in fio's vocabulary run through aiopg_io, or through
a reference library in its place.

``iodepth`` tasks each keep one op in flight (``preadinto``/``pwrite`` with a buffer of
their own, aligned for direct I/O), for ``runtime`` seconds after ``ramp`` seconds that are
not counted (fio's ``ramp_time``), or until ``number_ios`` ops are done (fio's
``number_ios``). The ops of a job visit one sequence of offsets (:func:`offsets`), and task
``i`` of ``iodepth`` takes ops ``i``, ``i + iodepth``, ``i + 2 * iodepth``, ...: for a
sequential job the sequence is the file front to back, wrapping at the end, so the tasks
together stream it; for a random job it is a table of random block offsets drawn from
``seed``, the same in every run of the job (so a benchmark can read the same blocks another
way). Latency is measured per op around the await, so it includes the loop's scheduling, as
a user sees it. CPU time is the process's over the measured window, every thread included (a
worker pool's, a reference library's), so CPU per op stays meaningful when other processes
compete for the cores and IOPS do not.

What the ops go through is a :class:`Target`: an aiopg_io file by default, or one of
:data:`REFERENCES` when ``driver`` names one; :func:`run_job` also takes any other opener
(the benchmarks in the source tree's ``benchmarks/`` bring aiofile that way).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import anyio

import aiopg_io
from aiopg_io import Alignment

__all__ = [
    "REFERENCES",
    "RW_MODES",
    "Job",
    "JobResult",
    "Opener",
    "Target",
    "TaskIO",
    "offsets",
    "parse_size",
    "prepare_file",
    "run_job",
]

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
    """One workload. ``runtime`` may be ``math.inf`` when ``number_ios`` ends the job; ops
    issued during ``ramp`` count towards ``number_ios`` but not in the result."""

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
    number_ios: int | None = None

    def __post_init__(self) -> None:
        if self.rw not in RW_MODES:
            raise ValueError(f"rw={self.rw!r}: must be one of {', '.join(RW_MODES)}")
        if self.loop not in LOOPS:
            raise ValueError(f"loop={self.loop!r}: must be one of {', '.join(LOOPS)}")
        if self.bs <= 0 or self.size < self.bs:
            raise ValueError(f"bs={self.bs} must be positive and at most size={self.size}")
        if self.iodepth < 1:
            raise ValueError(f"iodepth={self.iodepth} must be at least 1")
        if self.number_ios is not None and self.number_ios < 1:
            raise ValueError(f"number_ios={self.number_ios} must be at least 1 (or None: no limit)")
        if self.driver == "aiofiles" and self.loop == "trio":
            raise ValueError("aiofiles runs on asyncio only (it uses the loop's executor)")

    @property
    def is_write(self) -> bool:
        return self.rw in ("write", "randwrite")


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
    cpu_us_per_op: float  # process CPU time (every thread) per counted op
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


#: Random jobs draw at least this many offsets, so tasks rarely revisit a block in a run.
_TABLE = 1 << 16


def offsets(job: Job) -> Sequence[int]:
    """The byte offsets the ops of ``job`` visit, in order (op ``j`` at ``offsets[j % len]``)."""
    blocks = job.size // job.bs
    if not job.rw.startswith("rand"):
        return range(0, blocks * job.bs, job.bs)
    return _random_offsets(blocks, job.bs, job.seed, max(_TABLE, job.number_ios or 0))


@functools.lru_cache(maxsize=8)
def _random_offsets(blocks: int, bs: int, seed: int, count: int) -> tuple[int, ...]:
    rng = random.Random(seed)
    return tuple(rng.randrange(blocks) * bs for _ in range(count))


# -- what the ops go through -------------------------------------------------------------------


class TaskIO(Protocol):
    """The two calls a worker task makes."""

    def preadinto(self, buf: memoryview, offset: int, /) -> Awaitable[int]: ...

    def pwrite(self, buf: memoryview, offset: int, /) -> Awaitable[int]: ...


class Target(Protocol):
    """An open file, as a job sees it."""

    @property
    def driver(self) -> str:
        """What ran the ops (a driver name with ``auto`` resolved, or a reference's name)."""
        ...

    @property
    def alignment(self) -> Alignment | None:
        """Direct I/O's alignment, or None where the target does not know it."""
        ...

    def task(self) -> AbstractAsyncContextManager[TaskIO]:
        """What one worker task reads and writes through, for as long as it runs."""
        ...


#: Opens the target of a job, for the job's duration.
Opener = Callable[[Job], AbstractAsyncContextManager[Target]]


class _Library:
    """aiopg_io itself: one file, shared by every task."""

    def __init__(self, f: aiopg_io.AsyncFile) -> None:
        self._file = f

    @property
    def driver(self) -> str:
        return self._file.driver

    @property
    def alignment(self) -> Alignment | None:
        return self._file.alignment

    def task(self) -> AbstractAsyncContextManager[TaskIO]:
        return nullcontext(self._file)


@asynccontextmanager
async def open_library(job: Job) -> AsyncIterator[Target]:
    async with aiopg_io.open(
        job.filename, "r+b" if job.is_write else "rb", direct=job.direct, driver=job.driver
    ) as f:
        yield _Library(f)


def _flags(job: Job) -> int:
    flags = os.O_RDWR if job.is_write else os.O_RDONLY
    return flags | (getattr(os, "O_DIRECT", 0) if job.direct else 0)


class _ToThread:
    """``os.preadv``/``os.pwrite`` through ``anyio.to_thread.run_sync``: one hop per op."""

    driver = "to_thread"
    alignment = None

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def task(self) -> AbstractAsyncContextManager[TaskIO]:
        return nullcontext(self)

    async def preadinto(self, buf: memoryview, offset: int, /) -> int:
        return await anyio.to_thread.run_sync(os.preadv, self._fd, [buf], offset)

    async def pwrite(self, buf: memoryview, offset: int, /) -> int:
        return await anyio.to_thread.run_sync(os.pwrite, self._fd, buf, offset)


@asynccontextmanager
async def _open_to_thread(job: Job) -> AsyncIterator[Target]:
    fd = os.open(job.filename, _flags(job))
    try:
        yield _ToThread(fd)
    finally:
        os.close(fd)


class _AiofilesHandle:
    """aiofiles has no positional call: ``seek``, then ``readinto``/``write``."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def preadinto(self, buf: memoryview, offset: int, /) -> int:
        await self._handle.seek(offset)
        n: int = await self._handle.readinto(buf)
        return n

    async def pwrite(self, buf: memoryview, offset: int, /) -> int:
        await self._handle.seek(offset)
        n: int = await self._handle.write(buf)
        return n


class _Aiofiles:
    """What aiofiles users write: one handle per task (a cursor cannot be shared)."""

    driver = "aiofiles"
    alignment = None

    def __init__(self, job: Job) -> None:
        self._job = job

    @asynccontextmanager
    async def _handle(self) -> AsyncIterator[TaskIO]:
        import aiofiles

        job = self._job
        # ``opener`` so that direct=True is O_DIRECT here too; aiofiles passes it to open().
        handle = await aiofiles.open(
            job.filename,
            "r+b" if job.is_write else "rb",
            buffering=0,
            opener=lambda path, _flags_: os.open(path, _flags(job)),
        )
        try:
            yield _AiofilesHandle(handle)
        finally:
            await handle.close()

    def task(self) -> AbstractAsyncContextManager[TaskIO]:
        return self._handle()


@asynccontextmanager
async def _open_aiofiles(job: Job) -> AsyncIterator[Target]:
    yield _Aiofiles(job)


#: Reference implementations a job can name instead of a driver. ``aiofiles`` is what its
#: users write: one handle per task, ``seek`` + ``readinto``/``write`` (two thread hops per
#: op; aiofiles has no positional call). ``to_thread`` is the best a thread hop per op can
#: do: ``os.preadv``/``os.pwrite`` through ``anyio.to_thread.run_sync``, one hop per op.
REFERENCES: dict[str, Opener] = {"aiofiles": _open_aiofiles, "to_thread": _open_to_thread}


# -- the run -----------------------------------------------------------------------------------


async def _run(job: Job, opener: Opener) -> JobResult:
    align = 4096
    sequence = offsets(job)
    length = len(sequence)
    end = job.number_ios if job.number_ios is not None else sys.maxsize
    depth = job.iodepth
    async with opener(job) as target:
        if job.direct and target.alignment is not None:
            align = target.alignment.block
            if job.bs % target.alignment.offset:
                raise ValueError(
                    f"bs={job.bs} is not a multiple of the direct-I/O alignment {target.alignment.offset}"
                )
        lat: list[float] = []
        ops = 0
        counting = False
        stop = False
        running = depth
        finished = anyio.Event()
        # The workers move the window themselves (start after the ramp, stop after the
        # runtime), checking the clock at each completion: a target whose awaits never
        # yield (caio completing cached reads inline) would never let a timer task run.
        # A window in which no op completed measures nothing (no rate, no latency): a short
        # runtime on a busy machine can end before the first completion, so the window
        # closes only at a completion it counted.
        window = [0.0, 0.0, 0.0, 0.0]  # start, cpu at start, end, cpu at end
        stop_at = math.inf

        async def worker(i: int) -> None:
            nonlocal ops, running, counting, stop, stop_at
            buf = aiopg_io.aligned_buffer(job.bs, max(align, 4096))
            if job.is_write:
                buf[:] = random.Random(job.seed * 1000 + i).randbytes(job.bs)
            perf = time.perf_counter
            try:
                async with target.task() as io:
                    op = io.pwrite if job.is_write else io.preadinto
                    j = i
                    while not stop and j < end:
                        t0 = perf()
                        await op(buf, sequence[j % length])
                        t1 = perf()
                        if not counting and not stop and t1 >= ramp_end:
                            # Every completion since ramp_end is this one: the window
                            # starts there (its CPU clock starts one op late).
                            counting = True
                            window[0], window[1] = ramp_end, time.process_time()
                            stop_at = ramp_end + job.runtime
                        if counting:
                            lat.append(t1 - t0)
                            ops += 1
                            if t1 >= stop_at:
                                counting, stop = False, True
                                window[2], window[3] = t1, time.process_time()
                        j += depth
            finally:
                running -= 1
                if running == 0:
                    if counting:  # number_ios reached: the window ends with the last op
                        counting, stop = False, True
                        window[2], window[3] = time.perf_counter(), time.process_time()
                    finished.set()

        ramp_end = time.perf_counter() + job.ramp
        async with anyio.create_task_group() as tg:
            for i in range(depth):
                tg.start_soon(worker, i)
            await finished.wait()
        elapsed = window[2] - window[0] if ops else 1.0  # no op counted: rates of 0
        cpu = window[3] - window[1]
        driver = target.driver
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
        cpu_us_per_op=cpu / max(ops, 1) * 1e6,
    )


def run_job(job: Job, opener: Opener | None = None) -> JobResult:
    """Run ``job`` in a fresh event loop of the kind it names, through ``opener``'s target
    (default: the reference ``job.driver`` names, or else aiopg_io with that driver)."""
    if opener is None:
        opener = REFERENCES.get(job.driver, open_library)
    backend = "trio" if job.loop == "trio" else "asyncio"
    options: dict[str, Any] = {"use_uvloop": True} if job.loop == "uvloop" else {}
    result: JobResult = anyio.run(_run, job, opener, backend=backend, backend_options=options)
    return result
