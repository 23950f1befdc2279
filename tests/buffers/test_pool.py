"""The buffer pool and read streams on every loop x every driver."""

from __future__ import annotations

import errno
import gc
import mmap
import os
import re
import sys
import warnings
from pathlib import Path

import anyio
import pytest

from aiopg_io._direct import buffer_address
from aiopg_io.buffers import (
    BlockOutOfRangeError,
    BufferPool,
    NoUnpinnedBuffersError,
    Page,
    RelationSizeError,
)
from aiopg_io.errors import AiopgIOError, ClosedError
from aiopg_io.testing import Fault, FaultInjector, PowerLossSimulator
from tests.conftest import open_fds

from ._util import PS, faulty_relation, make_relation, page_bytes, read_into

pytestmark = pytest.mark.anyio


async def test_read_modify_flush_reopen(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 8)
    fds = open_fds()
    async with BufferPool(4, PS, direct=True, driver=driver) as pool:
        rel = await pool.open(path)
        assert rel.nblocks == 8
        for b in range(8):
            with await pool.read_page(rel, b) as page:
                assert page.blockno == b
                assert bytes(page.data) == page_bytes(b)
                if b % 2:
                    page.data[:5] = b"dirty"
                    page.mark_dirty()
        await pool.flush()
        on_disk = path.read_bytes()
        for b in range(8):
            want = b"dirty" + page_bytes(b)[5:] if b % 2 else page_bytes(b)
            assert on_disk[b * PS : (b + 1) * PS] == want
        stats = pool.statistics()
        assert stats.syncs == 1 and stats.dirty == 0 and stats.pinned == 0
        assert stats.evictions >= 4 and stats.writebacks >= 1
        await pool.close_relation(rel)
        rel = await pool.open(path)
        with await pool.read_page(rel, 3) as page:
            assert bytes(page.data[:5]) == b"dirty"
    assert open_fds() == fds


async def test_open_same_file_twice_gives_one_relation_and_create(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 2)
    async with BufferPool(4, PS, driver=driver) as pool:
        assert await pool.open(path) is await pool.open(str(path))
        with pytest.raises(FileNotFoundError):
            await pool.open(data_dir / "missing")
        new = await pool.open(data_dir / "new", create=True)
        assert new.nblocks == 0
        assert await pool.extend(new, 3) == 0
        with await pool.read_page(new, 2) as page:
            assert bytes(page.data) == bytes(PS)
    assert (data_dir / "new").stat().st_size == 3 * PS


async def test_file_not_whole_pages_is_refused(data_dir: Path, driver: str) -> None:
    path = data_dir / "odd"
    path.write_bytes(b"x" * (PS * 2 + 100))
    fds = open_fds()
    async with BufferPool(4, PS, driver=driver) as pool:
        with pytest.raises(RelationSizeError, match=r"8292 bytes, not a whole number of 4096-byte pages"):
            await pool.open(path)
    assert issubclass(RelationSizeError, AiopgIOError) and issubclass(RelationSizeError, ValueError)
    assert open_fds() == fds


async def test_block_past_end_is_a_clear_error(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 4)
    async with BufferPool(4, PS, driver=driver) as pool:
        rel = await pool.open(path)
        with pytest.raises(BlockOutOfRangeError, match=r"block 4 is past the end of .* which has 4 blocks"):
            await pool.read_page(rel, 4)
        with pytest.raises(BlockOutOfRangeError, match=r"block -1 .* never negative"):
            await pool.read_page(rel, -1)
        # A stream delivers the pages before the bad block, then raises, in order.
        got = []
        with pytest.raises(BlockOutOfRangeError, match=r"block 9 is past the end"):
            async for page in pool.read_stream(rel, [0, 1, 2, 9, 3]):
                with page:
                    got.append(page.blockno)
        assert got == [0, 1, 2]
        assert pool.statistics().pinned == 0


async def test_no_stale_bytes_after_a_failed_read_or_extend(data_dir: Path, driver: str) -> None:
    path, injector = faulty_relation(data_dir, 3, driver, nth=2, errno=errno.EIO)
    async with BufferPool(1, PS, driver=injector) as pool:
        rel = await pool.open(path)
        with await pool.read_page(rel, 0) as page:
            assert bytes(page.data) == page_bytes(0)
            kept = page
        with pytest.raises(ClosedError, match="was released"):
            kept.data  # noqa: B018
        with pytest.raises(OSError, match="Input/output error"):
            await pool.read_page(rel, 1)  # the one buffer held block 0 a moment ago
        assert bytes(pool._arena) == bytes(PS)  # nothing of block 0 left behind
        with await pool.read_page(rel, 1) as page:  # the pool retries with a fresh read
            assert bytes(page.data) == page_bytes(1)
        first = await pool.extend(rel, 2)
        with await pool.read_page(rel, first + 1) as page:
            assert bytes(page.data) == bytes(PS)


async def test_a_created_relation_survives_a_power_cut_after_flush(
    data_dir: Path, driver: str, power_loss: object
) -> None:
    sim: PowerLossSimulator = power_loss(driver)  # type: ignore[operator]
    path = data_dir / "new"
    async with BufferPool(4, PS, driver=sim) as pool:
        rel = await pool.open(path, create=True)
        assert await pool.extend(rel, 3) == 0
        with await pool.read_page(rel, 1) as page:
            page.data[:] = page_bytes(1)
            page.mark_dirty()
        await pool.flush()
        with await pool.read_page(rel, 2) as page:  # after the checkpoint: may be lost
            page.data[:] = page_bytes(2)
            page.mark_dirty()
        await pool.flush(rel)
        again = await pool.open(path, create=True)  # exists now: opened, not created
        assert again is rel
    assert sim.unsynced() == {}  # closing checkpointed
    # "drop": every change and directory entry not made durable is undone.
    report = sim.crash(seed=1, policy="drop")
    assert report.entries == ()  # the file's entry was made durable by the checkpoint
    assert path.read_bytes() == bytes(PS) + page_bytes(1) + page_bytes(2)


async def test_short_read_of_a_file_cut_outside_the_pool(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 3)
    async with BufferPool(1, PS, driver=driver) as pool:
        rel = await pool.open(path)
        with await pool.read_page(rel, 0):
            pass
        os.truncate(path, PS)
        with pytest.raises(
            BlockOutOfRangeError,
            match=r"the file is 4096 bytes now, shorter than the 3 blocks the pool knows of",
        ):
            await pool.read_page(rel, 2)
        assert bytes(pool._arena) == bytes(PS)


async def test_two_tasks_one_absent_block_one_read(data_dir: Path, driver: str) -> None:
    path, injector = faulty_relation(data_dir, 4, driver, delay=0.05)
    async with BufferPool(4, PS, driver=injector) as pool:
        rel = await pool.open(path)
        seen: list[bytes] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_into, seen, pool, rel, 2)
            tg.start_soon(read_into, seen, pool, rel, 2)
        stats = pool.statistics()
        assert seen == [page_bytes(2)] * 2
        assert (stats.reads, stats.misses, stats.hits) == (1, 1, 1)


async def test_every_buffer_pinned_raises_instead_of_hanging(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 8)
    async with BufferPool(3, PS, driver=driver) as pool:
        rel = await pool.open(path)
        pages = [await pool.read_page(rel, b) for b in range(3)]
        with pytest.raises(
            NoUnpinnedBuffersError, match=r"no unpinned buffers available: 3 of the pool's 3 buffers"
        ):
            await pool.read_page(rel, 5)
        assert issubclass(NoUnpinnedBuffersError, RuntimeError)
        # A hit needs no buffer.
        with await pool.read_page(rel, 1) as again:
            assert bytes(again.data) == page_bytes(1)
        pages[0].release()
        with await pool.read_page(rel, 5) as page:
            assert bytes(page.data) == page_bytes(5)
        for p in pages:
            p.release()


async def test_two_tasks_that_pin_everything_do_not_hang(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 8)
    async with BufferPool(4, PS, driver=driver) as pool:
        rel = await pool.open(path)
        outcomes: list[str] = []

        async def greedy(blocks: list[int], hold: anyio.Event, go: anyio.Event) -> None:
            pages = [await pool.read_page(rel, b) for b in blocks]
            hold.set()
            await go.wait()
            try:
                with await pool.read_page(rel, blocks[0] + 4):
                    outcomes.append("read")
            except NoUnpinnedBuffersError:
                outcomes.append("error")
            finally:
                for p in pages:
                    p.release()

        a, b, go = anyio.Event(), anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(greedy, [0, 1], a, go)
            tg.start_soon(greedy, [2, 3], b, go)
            await a.wait()
            await b.wait()
            go.set()
        # One of them must fail (waiting could not help), the other then gets its buffer.
        assert sorted(outcomes) == ["error", "read"]


async def test_many_tasks_on_few_buffers(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 24)
    async with BufferPool(3, PS, driver=driver) as pool:
        rel = await pool.open(path)

        async def worker(k: int) -> None:
            for i in range(12):
                b = (k * 7 + i * 5) % 24
                with await pool.read_page(rel, b) as page:
                    assert page.data[0] == page_bytes(b)[0]
                    await anyio.sleep(0)
                    assert bytes(page.data) == page_bytes(b)

        async with anyio.create_task_group() as tg:
            for k in range(10):
                tg.start_soon(worker, k)
        stats = pool.statistics()
        assert stats.pinned == 0 and stats.hits + stats.misses == 120
        pool._check_invariants()


async def test_dirty_victims_are_written_back_in_batches(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 16)
    async with BufferPool(8, PS, driver=driver) as pool:
        rel = await pool.open(path)
        for b in range(8):
            with await pool.read_page(rel, b) as page:
                page.data[:4] = b"%04d" % b
                page.mark_dirty()
        with await pool.read_page(rel, 8):  # needs a victim: all eight are dirty
            pass
        stats = pool.statistics()
        assert stats.writebacks == 8 and stats.writes == 1  # one batch, one combined write
        assert stats.syncs == 0  # write-back does not sync; the checkpoint does
        data = path.read_bytes()
        assert [data[b * PS : b * PS + 4] for b in range(8)] == [b"%04d" % b for b in range(8)]
        await pool.flush()
        assert pool.statistics().syncs == 1


async def test_a_miss_reuses_the_dirty_victim_at_the_clock_hand(data_dir: Path, driver: str) -> None:
    # read_page's miss takes one step of the sweep in line; when that step stops at a dirty
    # victim, the victim is the one written back and reused (not the next one the hand finds).
    path = make_relation(data_dir / "rel", 3)
    async with BufferPool(2, PS, driver=driver) as pool:
        rel = await pool.open(path)
        for b in (0, 1):
            with await pool.read_page(rel, b) as page:
                page.data[:1] = b"x"
                page.mark_dirty()
        # The hand passes both (usage 1 -> 0), then stops at block 0's buffer.
        with await pool.read_page(rel, 2) as page:
            assert bytes(page.data) == page_bytes(2)
        before = pool.statistics()
        assert before.evictions == 1 and before.writebacks == 2
        (await pool.read_page(rel, 1)).release()  # still in the pool
        assert pool.statistics().hits == before.hits + 1
        (await pool.read_page(rel, 0)).release()  # the one evicted
        assert pool.statistics().misses == before.misses + 1
        assert path.read_bytes()[:1] == b"x" and path.read_bytes()[PS : PS + 1] == b"x"


async def test_page_changed_during_a_write_stays_dirty(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 2)
    injector = FaultInjector(Fault(kind="writes", path="rel", delay=0.05), driver=driver)
    async with BufferPool(2, PS, driver=injector) as pool:
        rel = await pool.open(path)
        page = await pool.read_page(rel, 0)
        page.data[:3] = b"one"
        page.mark_dirty()
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.flush)
            await anyio.sleep(0.01)  # the write is in flight now
            page.data[:3] = b"two"
            page.mark_dirty()
        assert pool.statistics().dirty == 1
        page.release()
        await pool.flush()
        assert path.read_bytes()[:3] == b"two"


async def test_small_pool_stream_never_errors(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 30)
    async with BufferPool(2, PS, driver=driver) as pool:
        rel = await pool.open(path)
        async for page in pool.read_stream(rel, range(30)):
            with page:
                assert bytes(page.data) == page_bytes(page.blockno)
                page.data[0] = 0
                page.mark_dirty()
        await pool.flush()
        assert pool.statistics().evictions >= 28
    data = path.read_bytes()
    assert all(data[b * PS] == 0 and data[b * PS + 1 : (b + 1) * PS] == page_bytes(b)[1:] for b in range(30))


async def test_closed_pool_and_relation(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 2)
    pool = BufferPool(2, PS, driver=driver)
    with pytest.raises(RuntimeError, match="enter the pool first"):
        await pool.open(path)
    async with pool:
        rel = await pool.open(path)
        page = await pool.read_page(rel, 0)
        with pytest.raises(RuntimeError, match="still has 1 pinned pages"):
            await pool.close_relation(rel)
        page.release()
        await rel.aclose()
        with pytest.raises(ClosedError, match="is closed"):
            await pool.read_page(rel, 0)
    with pytest.raises(ClosedError, match="the buffer pool is closed"):
        await pool.open(path)


async def test_cancelled_reads_leave_the_pool_consistent(data_dir: Path, driver: str) -> None:
    path, injector = faulty_relation(data_dir, 16, driver, delay=0.05, times=None)
    async with BufferPool(8, PS, driver=injector) as pool:
        rel = await pool.open(path)
        with anyio.move_on_after(0.01) as scope:
            await pool.read_page(rel, 3)
        assert scope.cancelled_caught
        with anyio.move_on_after(0.01) as scope:
            async for page in pool.read_stream(rel, range(16)):
                page.release()
        assert scope.cancelled_caught
        pool._check_invariants()
        assert pool.statistics().pinned == 0
        with await pool.read_page(rel, 3) as page:
            assert bytes(page.data) == page_bytes(3)
        async for page in pool.read_stream(rel, range(16)):
            with page:
                assert bytes(page.data) == page_bytes(page.blockno)
        pool._check_invariants()


async def test_a_task_waiting_for_a_cancelled_read_reads_the_page_itself(data_dir: Path, driver: str) -> None:
    """A miss of ``read_page`` reads with the file's awaited read and does the completion
    work itself when it returns. Cancelled meanwhile, the read has still ended when the
    cancellation arrives: the page is dropped as a failed read's, and a task that waited
    for that read reads the block itself, with the right bytes, no pin left behind."""
    path, injector = faulty_relation(data_dir, 16, driver, delay=0.05)
    async with BufferPool(8, PS, driver=injector) as pool:
        rel = await pool.open(path)
        got: list[bytes] = []
        async with anyio.create_task_group() as tg:
            with anyio.move_on_after(0.02) as scope:
                tg.start_soon(
                    read_into, got, pool, rel, 3
                )  # starts once this task awaits: finds the read in flight
                await pool.read_page(rel, 3)
            assert scope.cancelled_caught
        assert got == [page_bytes(3)]
        stats = pool.statistics()
        assert stats.pinned == 0 and stats.reads == stats.misses == 2  # the retry is a miss too
        pool._check_invariants()
        with await pool.read_page(rel, 3) as page:
            assert bytes(page.data) == page_bytes(3)


async def test_a_task_waiting_for_a_failed_read_reads_the_page_itself(data_dir: Path, driver: str) -> None:
    """read_page's miss maps the page and marks its I/O before the read: a second task that
    wants the block meanwhile waits for that read instead of issuing its own. The read fails:
    the error goes to the task that read, the page is left invalid (zeros, unmapped) and
    unpinned, and the waiter, finding it invalid, reads the block itself (PostgreSQL's retry
    after WaitIO)."""
    path, injector = faulty_relation(data_dir, 8, driver, errno=errno.EIO, delay=0.05)
    async with BufferPool(4, PS, driver=injector) as pool:
        rel = await pool.open(path)
        got: list[bytes] = []
        failed: list[BaseException] = []

        async def first() -> None:
            try:
                await pool.read_page(rel, 5)
            except OSError as exc:
                failed.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await anyio.sleep(0.01)  # first's read is in flight (held by the fault's delay)
            assert pool._mapping[(rel.rel_id, 5)].io is not None
            tg.start_soon(read_into, got, pool, rel, 5)
        assert len(failed) == 1 and failed[0].errno == errno.EIO
        assert got == [page_bytes(5)]
        stats = pool.statistics()
        assert stats.pinned == 0 and stats.reads == 2 and injector.injected == 1
        pool._check_invariants()


async def test_a_page_under_read_is_never_a_victim(data_dir: Path, driver: str) -> None:
    """While read_page's read of a page is in flight, the buffer it fills is pinned and under
    I/O: other misses on a pool of two buffers reuse only the other one, and the page read
    arrives whole."""
    path, injector = faulty_relation(data_dir, 8, driver, delay=0.2)
    async with BufferPool(2, PS, driver=injector) as pool:
        rel = await pool.open(path)
        slow: list[bytes] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_into, slow, pool, rel, 0)
            await anyio.sleep(0.01)
            held = pool._mapping[(rel.rel_id, 0)]
            assert held.io is not None and held.refcount == 1
            for b in range(1, 8):
                with await pool.read_page(rel, b) as page:
                    # Its buffer may be taken only once the slow read has ended and the reader
                    # let it go (a loaded machine can outlast the delay): never while it is out.
                    assert page._desc is not held or slow
                    assert bytes(page.data) == page_bytes(b)
        assert slow == [page_bytes(0)]
        stats = pool.statistics()
        assert stats.pinned == 0 and stats.misses == 8 and stats.evictions == 6
        pool._check_invariants()


async def test_a_failed_sync_is_never_retried(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 2)
    injector = FaultInjector(Fault(kind="fdatasync", path="rel", errno=errno.EIO), driver=driver)
    fds = open_fds()
    with pytest.raises(OSError, match=r"an earlier fdatasync of .* failed .* takes no more checkpoints"):
        async with BufferPool(4, PS, driver=injector) as pool:
            rel = await pool.open(path)
            with await pool.read_page(rel, 0) as page:
                page.data[0] = 0
                page.mark_dirty()
            with pytest.raises(OSError, match="Input/output error"):
                await pool.flush()
            with pytest.raises(OSError, match=r"an earlier fdatasync of .* failed"):
                await pool.flush()  # a retry could succeed without the lost pages: refused
    assert open_fds() == fds


async def test_start_and_wait_read_buffers(data_dir: Path, driver: str) -> None:
    """The two calls the read stream is built on, by their contract: a hit alone, else one
    read of the consecutive misses (up to a hit, the count asked, the end); pages handed
    out in order after the wait; release gives back the rest."""
    path = make_relation(data_dir / "rel", 10)
    async with BufferPool(8, PS, driver=driver) as pool:
        rel = await pool.open(path)
        with await pool.read_page(rel, 4):
            pass
        before = pool.statistics()
        op = await pool.start_read_buffers(rel, 1, 8)
        assert op is not None
        assert (op.blockno, op.nblocks, op.started_read, op.needs_wait) == (1, 3, True, True)  # 1..3
        with pytest.raises(RuntimeError, match="wait_read_buffers"):
            op.take()  # not before the wait
        hit = await pool.start_read_buffers(rel, 4, 8)
        assert hit is not None
        assert (hit.nblocks, hit.started_read, hit.needs_wait) == (1, False, False)
        await pool.wait_read_buffers(op)
        await pool.wait_read_buffers(op)  # again: at once
        with op.take() as page:
            assert (page.blockno, bytes(page.data)) == (1, page_bytes(1))
        assert pool.statistics().pinned == 3  # blocks 2 and 3, and the hit
        op.release()
        op.release()
        with pytest.raises(IndexError, match="taken"):
            op.take()
        await pool.wait_read_buffers(hit)
        with hit.take() as page:
            assert bytes(page.data) == page_bytes(4)
        tail = await pool.start_read_buffers(rel, 8, 16)
        assert tail is not None and tail.nblocks == 2  # stops at the end of the relation
        del tail  # dropped: its pins are given back
        stats = pool.statistics()
        assert stats.pinned == 0
        got = (stats.hits - before.hits, stats.misses - before.misses, stats.reads - before.reads)
        assert got == (1, 5, 2)
        with pytest.raises(BlockOutOfRangeError):
            await pool.start_read_buffers(rel, 10, 1)
        with pytest.raises(ValueError, match="nblocks 0 must be at least 1"):
            await pool.start_read_buffers(rel, 0, 0)
        pool._check_invariants()


async def test_start_read_buffers_bounds_nblocks_as_io_combine_limit(data_dir: Path, driver: str) -> None:
    # PostgreSQL asserts nblocks <= MAX_IO_COMBINE_LIMIT; it used to be taken unbounded.
    path = make_relation(data_dir / "rel", 4)
    async with BufferPool(4, PS, driver=driver) as pool:
        rel = await pool.open(path)
        fds = open_fds()
        for bad, why in (
            (129, r"^nblocks 129 must be at most 128 \(blocks in one I/O: .*PG_IOV_MAX\)$"),
            (2**64, rf"^nblocks {2**64} must be at most 128 \(blocks in one I/O"),
            (0, "^nblocks 0 must be at least 1$"),
            (-1, "^nblocks -1 must be at least 1$"),
        ):
            with pytest.raises(ValueError, match=why):
                await pool.start_read_buffers(rel, 0, bad)
        with pytest.raises(TypeError, match="nblocks must be an integer, not bool"):
            await pool.start_read_buffers(rel, 0, True)
        stats = pool.statistics()
        assert (stats.pinned, stats.misses, stats.reads) == (0, 0, 0)  # nothing pinned or read
        assert open_fds() == fds
        pool._check_invariants()
        op = await pool.start_read_buffers(rel, 0, 128)  # the bound itself: to the end, 4 blocks
        assert op is not None and op.nblocks == 4
        await pool.wait_read_buffers(op)
        for i in range(4):
            with op.take() as page:
                assert bytes(page.data) == page_bytes(i)
        assert pool.statistics().pinned == 0


async def test_start_read_buffers_without_waiting_for_a_buffer(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 4)
    async with BufferPool(2, PS, driver=driver) as pool:
        rel = await pool.open(path)
        a = await pool.read_page(rel, 0)
        b = await pool.read_page(rel, 1)
        assert await pool.start_read_buffers(rel, 2, 2, wait=False) is None  # nothing pinned
        with pytest.raises(NoUnpinnedBuffersError):
            await pool.start_read_buffers(rel, 2, 2)  # waiting cannot help: only we hold pins
        b.release()
        op = await pool.start_read_buffers(rel, 2, 2, wait=False)
        assert op is not None and op.nblocks == 1  # as many as are free now
        await pool.wait_read_buffers(op)
        with op.take() as page:
            assert bytes(page.data) == page_bytes(2)
        a.release()


async def test_the_glue_names_each_task_as_current_task_identity() -> None:
    """The pool records a pin's holder with its loop glue's ``task_identity`` (asked on
    every pin); it must name the same task as :func:`current_task_identity` does, in each
    task, so that a holder that ended is still recognised as ended."""
    from aiopg_io._glue import current_glue, current_task_identity

    glue = current_glue()
    seen: list[tuple[object, object]] = []

    async def task() -> None:
        seen.append((glue.task_identity(), current_task_identity()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(task)
        tg.start_soon(task)
    seen.append((glue.task_identity(), current_task_identity()))
    assert all(a is b and a is not None for a, b in seen)
    assert len({id(a) for a, _ in seen}) == 3


@pytest.mark.parametrize("name", ["io_combine_limit", "write_combine_limit"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "{name} 0 must be at least 1"),
        (129, r"{name} 129 must be at most 128 \(blocks in one I/O: .*PG_IOV_MAX\)"),
        (2**64, rf"{{name}} {2**64} must be at most 128 \(blocks in one I/O: .*PG_IOV_MAX\)"),
    ],
)
def test_combine_limits_out_of_range_are_refused(name: str, value: int, message: str) -> None:
    # Both limits have PostgreSQL's bound (PG_IOV_MAX); a refused pool opens nothing.
    fds = open_fds()
    with pytest.raises(ValueError, match="^" + message.format(name=name) + "$"):
        BufferPool(4, PS, **{name: value})
    assert open_fds() == fds
    assert getattr(BufferPool(4, PS, **{name: 128}), name) == 128
    assert (BufferPool(4, PS).io_combine_limit, BufferPool(4, PS).write_combine_limit) == (16, 64)


def test_an_arena_past_sys_maxsize_or_a_bool_count_is_refused() -> None:
    # mmap used to raise OverflowError naming neither number; True was taken as 1.
    fds = open_fds()
    big = rf"^nbuffers {2**40} x page_size {2**40} is {2**80} bytes, past the largest arena, {sys.maxsize} "
    with pytest.raises(ValueError, match=big):
        BufferPool(2**40, 2**40)
    for kwargs in (
        {"nbuffers": True},
        {"nbuffers": 4, "page_size": True},
        {"nbuffers": 4, "io_combine_limit": True},
    ):
        name = next(k for k, v in kwargs.items() if v is True)
        with pytest.raises(TypeError, match=f"^{name} must be an integer, not bool$"):
            BufferPool(**kwargs)
    assert open_fds() == fds


@pytest.mark.skipif(
    not hasattr(mmap, "MADV_HUGEPAGE") or not os.path.exists("/proc/self/smaps"), reason="Linux THP advice"
)
def test_the_arena_is_private_memory_advised_for_huge_pages() -> None:
    """Shared memory (what ``mmap.mmap(-1, n)`` gives) gets no transparent huge pages, and
    every direct I/O then pins the arena 4 KiB at a time (the pool's module doc); private
    memory is copy-on-write in a fork child, so the arena is not inherited."""
    pool = BufferPool(512, PS)  # 2 MiB
    start = buffer_address(pool._arena)
    with open("/proc/self/smaps") as f:
        text = f.read()
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", text):
        lo, hi = (int(x, 16) for x in block.split(" ", 1)[0].split("-"))
        if lo <= start < hi:
            flags = re.search(r"VmFlags:(.*)", block)
            assert flags is not None
            assert "hg" in flags.group(1).split(), block  # MADV_HUGEPAGE
            assert "dc" in flags.group(1).split(), block  # MADV_DONTFORK: no copy-on-write under I/O
            assert "sh" not in flags.group(1).split(), block  # not MAP_SHARED
            assert block.split()[1].endswith("p"), block  # rw-p: private
            return
    raise AssertionError(f"no mapping holds the arena at {start:#x}")


async def test_a_task_that_ended_holding_a_pin_is_known_to_have_ended(data_dir: Path, driver: str) -> None:
    """The pool names a pin's holder at each pin (on asyncio the Task, a C call; elsewhere the
    task's coroutine): a holder that ended can never release its pin, so a task that needs
    a buffer then raises NoUnpinnedBuffersError instead of waiting for it forever."""
    path = make_relation(data_dir / "rel", 4)
    async with BufferPool(2, PS, driver=driver) as pool:
        rel = await pool.open(path)
        kept: list[Page] = []

        async def leaker() -> None:
            kept.append(await pool.read_page(rel, 0))  # ends holding the pin

        async with anyio.create_task_group() as tg:
            tg.start_soon(leaker)
        mine = await pool.read_page(rel, 1)
        with anyio.fail_after(10):  # a guard only: a holder taken for alive would hang here
            with pytest.raises(NoUnpinnedBuffersError, match=r"2 of the pool's 2 buffers are pinned"):
                await pool.read_page(rel, 2)
        mine.release()
        kept[0].release()
        with await pool.read_page(rel, 2) as page:
            assert bytes(page.data) == page_bytes(2)
        pool._check_invariants()


async def test_pin_holders_name_each_task_apart() -> None:
    """What the pool records as a pin's holder is the same object throughout one task and
    differs between tasks, and is known to have ended once its task has, on every loop."""
    from aiopg_io._glue import current_glue
    from aiopg_io.buffers._pool import _pin_owner

    owner, ended = _pin_owner(current_glue())
    seen: list[tuple[object, object]] = []

    async def task() -> None:
        first = owner()
        await anyio.sleep(0)
        seen.append((first, owner()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(task)
        tg.start_soon(task)
    seen.append((owner(), owner()))
    assert all(a is b and a is not None for a, b in seen)
    assert len({id(a) for a, _ in seen}) == 3
    assert [ended(a) for a, _ in seen] == [True, True, False]  # the two tasks ended


async def test_a_page_dropped_unreleased_warns_and_gives_its_pin_back(data_dir: Path, driver: str) -> None:
    """A page is a Page before and after its release; dropped unreleased (from a miss, a hit
    or an operation's take) it warns and unpins; dropped released it warns of nothing."""
    path = make_relation(data_dir / "rel", 4)
    async with BufferPool(2, PS, driver=driver) as pool:
        rel = await pool.open(path)
        miss = await pool.read_page(rel, 0)
        hit = await pool.read_page(rel, 0)
        assert isinstance(miss, Page) and isinstance(hit, Page)
        hit.release()
        assert isinstance(hit, Page) and hit.released
        with pytest.raises(ClosedError, match=r"page 0 of .* was released"):
            hit.data  # noqa: B018
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            del hit
            gc.collect()
        with pytest.warns(ResourceWarning, match=r"page 0 of .* was never released"):
            del miss
            gc.collect()
        assert pool.statistics().pinned == 0
        op = await pool.start_read_buffers(rel, 1, 1)
        assert op is not None
        await pool.wait_read_buffers(op)
        taken = op.take()
        assert isinstance(taken, Page) and bytes(taken.data) == page_bytes(1)
        with pytest.warns(ResourceWarning, match=r"page 1 of .* was never released"):
            del taken
            gc.collect()
        assert pool.statistics().pinned == 0
        pool._check_invariants()
        # Both buffers are free for other blocks again.
        with await pool.read_page(rel, 2) as a, await pool.read_page(rel, 3) as b:
            assert (bytes(a.data), bytes(b.data)) == (page_bytes(2), page_bytes(3))
