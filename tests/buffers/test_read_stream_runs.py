"""Read streams taken a run at a time (``stream.runs()``, aiopg_io/buffers/_read_stream.py)
on every loop x driver: the right pages in order, at most ``io_combine_limit`` a run, and no
pin left behind when a run is dropped, cancelled or fails."""

from __future__ import annotations

import errno
import gc
from pathlib import Path

import anyio
import pytest

from aiopg_io.buffers import BlockOutOfRangeError, BufferPool, PageRun
from aiopg_io.errors import ClosedError

from ._util import PS, faulty_relation, make_relation, page_bytes

pytestmark = pytest.mark.anyio


def check_run(run: PageRun) -> list[int]:
    """The run's block numbers, each page compared with what the file holds."""
    assert len(run) == run.nblocks
    for i, data in enumerate(run):
        assert bytes(data) == page_bytes(run.blockno + i)
        assert bytes(run[i]) == page_bytes(run.blockno + i)
    return list(range(run.blockno, run.blockno + run.nblocks))


async def test_runs_give_every_page_in_order_within_the_combine_limit(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 100)
    async with BufferPool(48, PS, driver=driver) as pool:  # smaller than the file: buffers reused
        rel = await pool.open(path)
        with await pool.read_page(rel, 30):  # a hit in the middle splits a read
            pass
        got: list[int] = []
        sizes = []
        previous: PageRun | None = None
        async with pool.read_stream(rel, range(100), max_ios=4, io_combine_limit=6) as stream:
            async for run in stream.runs():
                if previous is not None:
                    assert previous.released  # taking the next run unpinned this one
                assert not run.released
                got += check_run(run)
                sizes.append(run.nblocks)
                assert pool.statistics().pinned <= stream.max_pinned + run.nblocks
                previous = run
        assert got == list(range(100))
        assert max(sizes) == 6 and all(1 <= n <= 6 for n in sizes)
        assert sizes.count(6) > 10  # combined, not page by page
        stats = pool.statistics()
        assert stats.blocks_per_read <= 6
        assert stats.pinned == 0
        pool._check_invariants()


async def test_pages_and_runs_mix_on_one_stream(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 24)
    async with BufferPool(32, PS, driver=driver) as pool:
        rel = await pool.open(path)
        got = []
        stream = pool.read_stream(rel, range(24), max_ios=2, io_combine_limit=8)
        async with stream:
            while True:
                try:
                    page = await stream.__anext__()
                except StopAsyncIteration:
                    break
                with page:
                    assert bytes(page.data) == page_bytes(page.blockno)
                    got.append(page.blockno)
                try:
                    run = await stream.next_run()  # the rest of that read, or the next one
                except StopAsyncIteration:
                    break
                with run:
                    got += check_run(run)
        assert got == list(range(24))
        assert pool.statistics().pinned == 0
        pool._check_invariants()


async def test_a_run_marked_dirty_reaches_the_file(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 8)
    async with BufferPool(16, PS, driver=driver) as pool:
        rel = await pool.open(path)
        sizes = []
        async for run in pool.read_stream(rel, range(8), io_combine_limit=8).runs():
            with run:
                for data in run:
                    data[:4] = b"edit"
                if run.nblocks == 1:
                    run.mark_dirty(-1)  # the last page, counted from the end
                else:
                    run.mark_dirty(0)
                    run.mark_dirty()  # every page
                sizes.append(run.nblocks)
            with pytest.raises(ClosedError, match="released"):
                run[0]
            with pytest.raises(ClosedError, match="released"):
                run.mark_dirty()
        assert sizes[0] == 1 and sum(sizes) == 8  # the ramp starts at one page
        assert pool.statistics().dirty == 8
        await pool.flush()
    data = path.read_bytes()
    for b in range(8):
        assert data[b * PS : (b + 1) * PS] == b"edit" + page_bytes(b)[4:]


async def test_runs_dropped_half_consumed_release_their_pins(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 64)
    async with BufferPool(40, PS, driver=driver) as pool:
        rel = await pool.open(path)
        stream = pool.read_stream(rel, range(64), max_ios=4, io_combine_limit=4)
        async for run in stream.runs():
            if run.blockno >= 20:
                break
        assert pool.statistics().pinned > 1  # the run held and the look-ahead
        await stream.aclose()
        assert run.released
        assert pool.statistics().pinned == 0
        # Abandoned without a close: the stream's operations and the run give their pins back.
        stream = pool.read_stream(rel, range(64), max_ios=4, io_combine_limit=4)
        async for run in stream.runs():
            if run.blockno >= 20:
                break
        with pytest.warns(ResourceWarning, match="never released"):
            del stream, run
            gc.collect()
        assert pool.statistics().pinned == 0
        pool._check_invariants()
        async for run in pool.read_stream(rel, range(64)).runs():
            check_run(run)
        assert pool.statistics().pinned == 0


async def test_cancelled_runs_leave_the_pool_consistent(data_dir: Path, driver: str) -> None:
    path, injector = faulty_relation(data_dir, 32, driver, delay=0.05, times=None)
    async with BufferPool(16, PS, driver=injector) as pool:
        rel = await pool.open(path)
        with anyio.move_on_after(0.01) as scope:
            async for run in pool.read_stream(rel, range(32)).runs():
                run.release()
        assert scope.cancelled_caught
        assert pool.statistics().pinned == 0
        pool._check_invariants()
        got = []
        async for run in pool.read_stream(rel, range(32)).runs():
            got += check_run(run)
        assert got == list(range(32))
        assert pool.statistics().pinned == 0
        pool._check_invariants()


async def test_a_failing_read_raises_from_runs_and_leaves_the_pool_consistent(
    data_dir: Path, driver: str
) -> None:
    path, injector = faulty_relation(data_dir, 32, driver, nth=3, errno=errno.EIO)
    async with BufferPool(24, PS, driver=injector) as pool:
        rel = await pool.open(path)
        got: list[int] = []
        stream = pool.read_stream(rel, range(32), max_ios=2, io_combine_limit=4)
        with pytest.raises(OSError, match="Input/output error") as info:
            async for run in stream.runs():
                got += check_run(run)
        assert info.value.errno == errno.EIO
        assert stream.closed
        assert got == list(range(len(got))) and len(got) < 32
        assert pool.statistics().pinned == 0
        pool._check_invariants()
        failed = len(got)
        with await pool.read_page(rel, failed) as page:  # the failed read left no page behind
            assert bytes(page.data) == page_bytes(failed)
        with pytest.raises(BlockOutOfRangeError, match=r"block 40 is past the end of .*32 blocks"):
            async for run in pool.read_stream(rel, [0, 1, 2, 40]).runs():
                check_run(run)
        assert pool.statistics().pinned == 0
        pool._check_invariants()


@pytest.mark.parametrize("blocks", [range(3, 90), range(95, 200), range(9, 2)], ids=repr)
async def test_a_range_of_blocks_is_read_as_any_iterable_of_them(
    data_dir: Path, driver: str, blocks: range
) -> None:
    """A ``range`` of step 1 is taken as a counter (a pending read grows by many blocks at
    a time): the runs, the reads and the errors must be those of the same block numbers
    given one by one, with hits in the way and past the end of the relation."""
    path = make_relation(data_dir / "rel", 100)

    async def scan(source: object) -> tuple[list[tuple[int, int] | str], tuple[int, ...]]:
        async with BufferPool(40, PS, driver=driver) as pool:
            rel = await pool.open(path)
            for b in (20, 21, 60):  # hits that split reads
                with await pool.read_page(rel, b):
                    pass
            got: list[tuple[int, int] | str] = []
            try:
                async for run in pool.read_stream(rel, source, io_combine_limit=8).runs():  # type: ignore[arg-type]
                    check_run(run)
                    got.append((run.blockno, run.nblocks))
            except BlockOutOfRangeError as exc:
                got.append(str(exc))
            s = pool.statistics()
            return got, (s.reads, s.blocks_read, s.hits, s.misses, s.look_ahead_distance)

    assert await scan(blocks) == await scan(iter(list(blocks)))
