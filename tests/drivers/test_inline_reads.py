"""The page-cache fast path through the file API: a buffered read the cache holds is done
inline by ``IOContext.run`` (``Driver.try_inline``), with no submission, and is still a
schedule point and a cancellation point on asyncio, uvloop and trio."""

from __future__ import annotations

import os
import random
from pathlib import Path

import anyio
import pytest

import aiopg_io
from aiopg_io.drivers.io_uring import IoUringDriver

_REASON = IoUringDriver.unavailable_reason()
pytestmark = [
    pytest.mark.skipif(_REASON is not None, reason=f"io_uring cannot run here: {_REASON}"),
    pytest.mark.anyio,
]

PAGE = 4096


def _cached_file(path: Path, pages: int) -> bytes:
    data = random.Random(pages).randbytes(pages * PAGE)
    path.write_bytes(data)  # just written: every page is in the page cache
    return data


def _hits(f: aiopg_io.AsyncFile) -> int:
    return dict(f.driver_statistics().extra)["fast_path_hits"]


@pytest.mark.parametrize("fast_path", ["1", "0"], ids=["nowait", "ring-only"])
async def test_cached_reads_skip_the_ring(tmp_path: Path, fast_path: str) -> None:
    p = tmp_path / "cached.bin"
    data = _cached_file(p, 32)
    async with aiopg_io.open(p, "rb", driver=f"io_uring:nowait_fast_path={fast_path}") as f:
        before = f.driver_statistics()
        hits = _hits(f)
        buf = bytearray(PAGE)
        for i in range(32):
            assert await f.preadinto(buf, i * PAGE) == PAGE
            assert buf == data[i * PAGE : (i + 1) * PAGE]
        got = await f.preadv([bytearray(100), bytearray(PAGE)], 5)
        assert got == 100 + PAGE
        after = f.driver_statistics()
        if fast_path == "1":
            assert _hits(f) - hits == 33
            assert after.submit_calls == before.submit_calls  # nothing went to the ring
        else:
            assert _hits(f) == hits == 0
            assert after.submit_calls > before.submit_calls
        assert after.completed - before.completed == 33


async def test_read_partly_cached_is_finished_on_the_ring(tmp_path: Path) -> None:
    """The cache holds the first half of the range only: the inline read takes that half,
    the ring reads the rest, and the caller gets every byte once, in order."""
    p = tmp_path / "half.bin"
    data = _cached_file(p, 2048)  # 8 MiB: small files sit in one large folio, dropped whole
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)  # clean pages can be dropped
        os.posix_fadvise(fd, 1024 * PAGE, 1024 * PAGE, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    async with aiopg_io.open(p, "rb", driver="io_uring") as f:
        before, hits = f.driver_statistics(), _hits(f)
        assert await f.pread(2048 * PAGE, 0) == data
        after = f.driver_statistics()
        assert after.completed - before.completed == 1
        if _hits(f) == hits:  # DONTNEED is advice: had the kernel kept the pages, all was inline
            assert after.short_transfers > before.short_transfers  # the cached half, inline
            assert after.submit_calls > before.submit_calls  # the rest, on the ring


async def test_a_cached_read_is_a_cancellation_point(tmp_path: Path) -> None:
    p = tmp_path / "c.bin"
    _cached_file(p, 2)
    async with aiopg_io.open(p, "rb", driver="io_uring") as f:
        hits = _hits(f)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await f.pread(PAGE, 0)
            pytest.fail("a cancelled scope must stop at the read")  # pragma: no cover
        assert scope.cancelled_caught
        # The read may have happened (it was done inline before the checkpoint), as the
        # guide says of any cancelled read; the file works on.
        assert _hits(f) - hits in (0, 1)
        assert len(await f.pread(PAGE, PAGE)) == PAGE


async def test_cached_reads_let_other_tasks_run(tmp_path: Path) -> None:
    """A task reading cached pages in a loop never parks, but every read is a schedule
    point, so a task that only yields keeps pace instead of starving."""
    p = tmp_path / "fair.bin"
    _cached_file(p, 4)
    ticks_seen: list[int] = []
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await anyio.sleep(0)

    async with aiopg_io.open(p, "rb", driver="io_uring") as f:
        hits = _hits(f)
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            await anyio.sleep(0)
            buf = bytearray(PAGE)
            for i in range(200):
                await f.preadinto(buf, (i % 4) * PAGE)
                ticks_seen.append(ticks)
            done = True
        assert _hits(f) - hits == 200
    assert ticks_seen[-1] >= 150, f"the other task ran only {ticks_seen[-1]} times in 200 reads"
