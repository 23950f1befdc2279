"""The IOContext (aiopg_io/_context.py): one driver per loop, one submission per tick, the
cap on ops in flight, cancellation of staged ops, and its lifetime (the last user closes it).

Its ownership rule (WrongLoopError from another loop, thread or fork child) is checked with
the rest of the edge table in tests/test_edges.py (rows 5 to 7).
"""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest

import aiopg_io
from aiopg_io._context import live_contexts
from tests.conftest import open_fds

pytestmark = pytest.mark.anyio


def rand(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


async def test_files_share_one_context_and_release_it(driver: str, tmp_path: Path) -> None:

    before = open_fds()
    p = tmp_path / "s.bin"
    p.write_bytes(b"abc")
    async with aiopg_io.open(p, "rb", driver=driver) as f1, aiopg_io.open(p, "rb", driver=driver) as f2:
        assert f1._ctx is f2._ctx
        assert len(live_contexts()) == 1
        assert await f1.pread(3, 0) == await f2.pread(3, 0) == b"abc"
    assert live_contexts() == []
    assert open_fds() == before


async def test_one_submission_per_tick(tmp_path: Path) -> None:
    """32 tasks issuing a read in the same tick reach the driver as one batch."""
    p = tmp_path / "b.bin"
    p.write_bytes(rand(32 * 4096, 6))
    async with aiopg_io.open(p, "rb", driver="worker") as f:
        ready = anyio.Event()
        out: list[bytes] = []

        async def reader(i: int) -> None:
            await ready.wait()
            out.append(await f.pread(4096, i * 4096))

        async with anyio.create_task_group() as tg:
            for i in range(32):
                tg.start_soon(reader, i)
            await anyio.sleep(0.01)
            before = f._ctx.driver.statistics()
            ready.set()
        after = f._ctx.driver.statistics()
    assert len(out) == 32
    assert after.submitted - before.submitted == 32
    assert after.submit_calls - before.submit_calls == 1


async def test_cancel_before_submission_never_reaches_the_driver(
    tmp_path: Path, anyio_backend_name: str
) -> None:
    """trio checks for cancellation as the task parks, so a cancelled scope never submits.
    anyio's asyncio backend delivers a cancel one loop iteration later, after the end-of-tick
    submission: there the op runs or is cancelled by the driver, and either way is over."""
    p = tmp_path / "c.bin"
    p.write_bytes(b"x" * 4096)
    async with aiopg_io.open(p, "rb", driver="worker") as f:
        before = f._ctx.driver.statistics().submitted
        with anyio.CancelScope() as scope:
            scope.cancel()
            await f.pread(10, 0)
        assert scope.cancelled_caught
        stats = f._ctx.driver.statistics()
        assert stats.in_flight == 0
        if anyio_backend_name == "trio":
            assert stats.submitted == before


async def test_many_waiters_over_the_in_flight_cap(tmp_path: Path) -> None:
    """More ops than the context admits: callers wait for a slot, none fails."""
    p = tmp_path / "cap.bin"
    p.write_bytes(bytes(range(256)) * 16)
    async with aiopg_io.open(p, "rb", driver="worker:threads=2") as f:
        f._ctx.max_in_flight = 4
        out: list[bytes] = []

        async def one(i: int) -> None:
            out.append(await f.pread(16, (i % 256) * 16))

        async with anyio.create_task_group() as tg:
            for i in range(500):
                tg.start_soon(one, i)
        assert len(out) == 500
        assert f._ctx.driver.statistics().extra == (("threads", 2),)
