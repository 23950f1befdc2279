"""The worker driver (aiopg_io/drivers/worker.py): ops on a pool of threads, completions
signalled through one fd, queued ops cancelled without waiting for a thread."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import anyio
import pytest

import aiopg_io
from aiopg_io.drivers import Op, OpKind
from tests.conftest import open_fds

pytestmark = pytest.mark.anyio


def rand(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def test_worker_signals_a_burst_once_and_reaps_it_in_one_batch(tmp_path: Path) -> None:
    """The worker driver's completions go through one eventfd (a pipe off Linux): a burst of
    completions raises it once, and one reap returns the whole burst."""
    import select
    import sys

    from aiopg_io.drivers.worker import WorkerDriver

    data = rand(64 * 4096, 8)
    p = tmp_path / "burst.bin"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    d = WorkerDriver(threads=4)
    try:
        done_fd = d.fileno()
        if hasattr(os, "eventfd"):
            assert os.readlink(f"/proc/self/fd/{done_fd}") == "anon_inode:[eventfd]"
        bufs = [bytearray(4096) for _ in range(64)]
        ops = [Op(OpKind.READ, fd, i * 4096, (memoryview(b),), keepalive=b) for i, b in enumerate(bufs)]
        d.submit(ops)
        assert d.fileno() == done_fd  # one fd for the driver's life, whatever is in flight
        for _ in range(5000):  # until every op is done and queued for reaping (white box)
            if len(d._done) == 64:
                break
            select.select([], [], [], 0.001)
        assert select.select([done_fd], [], [], 5)[0] == [done_fd]
        if hasattr(os, "eventfd"):
            # The counter says how many times threads signalled: once for 64 completions.
            assert int.from_bytes(os.read(done_fd, 8), sys.byteorder) == 1
        reaped = d.reap()
        assert select.select([done_fd], [], [], 0)[0] == []
        assert len(reaped) == 64 and {id(o) for o in reaped} == {id(o) for o in ops}
        assert all(o.result == 4096 for o in reaped)
        assert b"".join(bufs) == data
        stats = d.statistics()
        assert (stats.reap_calls, stats.completed, stats.submit_calls, stats.in_flight) == (1, 64, 1, 0)
    finally:
        d.close()
        os.close(fd)


async def test_limiter_bounds_the_worker_threads_of_a_file(tmp_path: Path) -> None:
    """limiter= as in anyio: with the worker driver, this file's ops hold a token each while
    on a thread; a task that holds a token itself can still do I/O (the op borrows)."""
    p = tmp_path / "lim.bin"
    p.write_bytes(rand(64 * 1024, seed=6))
    limiter = anyio.CapacityLimiter(1)
    seen: list[int] = []
    async with aiopg_io.open(p, "rb", driver="worker", limiter=limiter) as f:
        assert f.limiter is limiter

        async def one(i: int) -> None:
            await f.pread(4096, i * 4096)
            seen.append(limiter.borrowed_tokens)

        async with limiter:  # the test's own token: ops must not deadlock on it
            pass
        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(one, i)
        assert limiter.borrowed_tokens == 0
        assert await f.read(3) == p.read_bytes()[:3]
    assert max(seen) <= 1


async def test_a_queued_op_is_cancelled_without_waiting_for_the_ops_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """worker: an op still queued behind a busy thread completes with ECANCELED at once when
    its task is cancelled; it does not wait for the thread (held here for up to 10 s)."""
    from aiopg_io.drivers import worker

    gate = threading.Event()
    real_perform = worker.perform
    touched: list[int] = []

    def perform(op: Op) -> None:
        touched.append(op.offset)
        if op.offset == 0:
            gate.wait(10)
        real_perform(op)

    monkeypatch.setattr(worker, "perform", perform)
    p = tmp_path / "q.bin"
    p.write_bytes(b"a" * 4096 + b"b" * 4096)
    before = open_fds()
    firsts: list[bytes] = []
    async with aiopg_io.open(p, "rb", driver="worker:threads=1") as f:

        async def first() -> None:
            firsts.append(await f.pread(10, 0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            while f._ctx.driver.statistics().submitted < 1:
                await anyio.sleep(0)
            buf = bytearray(10)
            started = anyio.current_time()
            with anyio.fail_after(5), anyio.move_on_after(0.05) as scope:
                await f.preadinto(buf, 4096)  # queued behind the held one: the one thread is busy
            assert scope.cancelled_caught
            assert anyio.current_time() - started < 2
            stats = f._ctx.driver.statistics()
            assert (stats.cancelled, stats.in_flight) == (1, 1)
            gate.set()
        assert firsts == [b"a" * 10]
        assert buf == bytes(10)  # never read into: the op never reached a thread
        assert await f.pread(10, 4096) == b"b" * 10
    assert touched == [0, 4096]  # the thread skipped the cancelled op without touching it
    assert open_fds() == before
