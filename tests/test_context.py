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


# -- schedule points of calls completed inline (docs/guide.md, "Schedule points") -------------


def _inline_bound(driver: str) -> int:
    """Consecutive cached reads a task may complete before another task runs: the C fast
    path's YIELD_EVERY_OPS on asyncio, else 1 (every call yields). On trio every call is a
    checkpoint, but trio runs each batch of runnable tasks in a random order, so the other
    task may run just after the reader's next step instead of before it: 2."""
    import sniffio

    if sniffio.current_async_library() == "trio":
        return 2
    if driver == "io_uring_c":
        from aiopg_io.drivers import _uring

        return int(_uring.YIELD_EVERY_OPS)
    return 1


async def _longest_run_alone(f: aiopg_io.AsyncFile, call: str, size: int, calls: int) -> int:
    """The most calls of ``call`` (each ``size`` bytes of a cached file) completed in a row
    while a ticker task, runnable all along, did not run."""
    ticks = 0
    stop = False

    async def ticker() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            await anyio.sleep(0)

    longest = run = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0)
        buf = bytearray(size)
        for i in range(calls):
            seen = ticks
            if call == "preadinto":
                assert await f.preadinto(buf, i % 2 * size) == size
            elif call == "pread":
                assert len(await f.pread(size, i % 2 * size)) == size
            else:  # the cursor: seek (no schedule point) and read or readinto
                await f.seek(i % 2 * size)
                assert (await f.readinto(buf) if call == "readinto" else len(await f.read(size))) == size
            run = run + 1 if ticks == seen else 0
            longest = max(longest, run)
        stop = True
    return longest


@pytest.mark.parametrize("call", ["preadinto", "pread", "read", "readinto"])
async def test_a_task_reading_cached_pages_lets_others_run(driver: str, tmp_path: Path, call: str) -> None:
    """Another task runs at least once every ``bound`` calls of a task that reads cached
    pages in a loop (no call parks: the page cache holds the file); the cursor calls on an
    unbuffered file, where each is one read."""
    p = tmp_path / "c.bin"
    p.write_bytes(rand(4096, 3))
    bound = _inline_bound(driver)
    async with aiopg_io.open(p, "rb", buffering=0, driver=driver) as f:
        await f.pread(4096, 0)  # cached
        longest = await _longest_run_alone(f, call, 512, 4 * bound + 4)
    assert longest < bound, f"{longest + 1} cached reads in a row with no other task run (bound {bound})"


async def test_a_large_cached_read_yields_at_once(driver: str, tmp_path: Path) -> None:
    """Reads of YIELD_EVERY_BYTES or more each yield (the rule's byte bound): another task
    runs between any two of them (on trio, within two, as above)."""
    p = tmp_path / "big.bin"
    p.write_bytes(rand(1 << 20, 4))
    async with aiopg_io.open(p, "rb", driver=driver) as f:
        await f.pread(1 << 20, 0)
        longest = await _longest_run_alone(f, "preadinto", 512 << 10, 6)
    assert longest < (2 if _inline_bound(driver) == 2 else 1)  # 2: trio, as above


async def test_a_cancellation_reaches_a_task_reading_cached_pages(driver: str, tmp_path: Path) -> None:
    """A task reading cached pages in a loop is cancelled within ``bound`` calls."""
    p = tmp_path / "c.bin"
    p.write_bytes(rand(4096, 5))
    bound = _inline_bound(driver)
    async with aiopg_io.open(p, "rb", buffering=0, driver=driver) as f:
        await f.pread(4096, 0)
        buf = bytearray(512)
        for call in ("preadinto", "pread", "read", "readinto"):
            done = 0
            await f.seek(0)
            with anyio.CancelScope() as scope:
                scope.cancel()
                for _ in range(4 * bound + 4):
                    if call == "preadinto":
                        await f.preadinto(buf, 0)
                    elif call == "pread":
                        await f.pread(512, 0)
                    elif call == "read":
                        assert len(await f.read(8)) == 8
                    else:
                        assert await f.readinto(bytearray(8)) == 8
                    done += 1
            assert scope.cancelled_caught
            assert done < bound, f"{done} cached reads completed after the cancellation (bound {bound})"
            if call in ("read", "readinto"):
                # The cancelled call's bytes were not returned: the cursor did not pass them.
                assert await f.tell() == 8 * done
