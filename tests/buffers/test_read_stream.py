"""Read streams (aiopg_io/buffers/_read_stream.py) on every loop x driver: look-ahead that
ramps on misses and decays on hits, combined reads, pins released as the consumer moves."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from aiopg_io.buffers import BufferPool, Page

from ._util import PS, make_relation, page_bytes

pytestmark = pytest.mark.anyio


async def test_read_stream_ramps_on_misses_and_decays_on_hits(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 64)
    async with BufferPool(96, PS, driver=driver) as pool:
        rel = await pool.open(path)
        for b in range(32, 64):  # the second half is cached
            with await pool.read_page(rel, b):
                pass
        distances = []
        async with pool.read_stream(rel, range(64), max_ios=4, io_combine_limit=4) as stream:
            assert stream.max_pinned == 16
            async for page in stream:
                with page:
                    assert bytes(page.data) == page_bytes(page.blockno)
                    distances.append(pool.statistics().look_ahead_distance)
        ramp = distances[:32]
        assert max(ramp) == 16
        assert all(d in (1, 2, 4, 8, 16) for d in ramp[:8])
        assert ramp[: ramp.index(16) + 1] == sorted(ramp[: ramp.index(16) + 1])  # only grows while missing
        assert distances[-1] == 1  # decays one per hit
        decay = distances[32:]
        assert all(b <= a for a, b in itertools.pairwise(decay))
        stats = pool.statistics()
        assert (stats.hits, stats.misses, stats.blocks_read) == (32, 64, 64)
        assert (stats.blocks_read - 32) / (stats.reads - 32) > 2  # the stream's reads were combined
        assert stats.pinned == 0


async def test_read_stream_combines_and_splits_around_a_hit(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 40)
    async with BufferPool(64, PS, driver=driver) as pool:
        rel = await pool.open(path)
        with await pool.read_page(rel, 20):
            pass
        before = pool.statistics()
        got = []
        async for page in pool.read_stream(rel, range(40), max_ios=8, io_combine_limit=8):
            with page:
                assert bytes(page.data) == page_bytes(page.blockno)
                got.append(page.blockno)
        assert got == list(range(40))
        stats = pool.statistics()
        assert stats.blocks_read - before.blocks_read == 39  # block 20 was not read again
        assert stats.hits - before.hits == 1
        reads = stats.reads - before.reads
        assert reads < 39 / 2  # combined (a ramp of 1, 2, 4, then runs of 8)


async def test_read_stream_combine_limit_one_and_async_blocks(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 20)
    order = [5, 6, 7, 7, 0, 19, 3, 4, 5]

    async def blocks() -> AsyncIterator[int]:
        for b in order:
            await anyio.sleep(0)
            yield b

    async with BufferPool(8, PS, driver=driver) as pool:
        rel = await pool.open(path)
        got = []
        async for page in pool.read_stream(rel, blocks(), io_combine_limit=1):
            with page:
                assert bytes(page.data) == page_bytes(page.blockno)
                got.append(page.blockno)
        assert got == order
        stats = pool.statistics()
        assert stats.blocks_per_read == 1.0


async def test_read_stream_combine_limit_has_the_pools_bound(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 4)
    async with BufferPool(4, PS, driver=driver) as pool:
        rel = await pool.open(path)
        for bad, why in ((129, "must be at most 128 \\(blocks in one I/O"), (0, "must be at least 1")):
            with pytest.raises(ValueError, match=f"^io_combine_limit {bad} {why}"):
                pool.read_stream(rel, range(4), io_combine_limit=bad)
        async with pool.read_stream(rel, range(4), io_combine_limit=128) as stream:
            assert [bytes(p.data) async for p in stream] == [page_bytes(b) for b in range(4)]
        assert pool.statistics().pinned == 0


async def test_read_stream_releases_pins_as_the_consumer_moves(data_dir: Path, driver: str) -> None:
    path = make_relation(data_dir / "rel", 64)
    async with BufferPool(32, PS, driver=driver) as pool:
        rel = await pool.open(path)
        stream = pool.read_stream(rel, range(64), max_ios=4, io_combine_limit=4)
        assert stream.max_pinned == 16  # a fair share: half of the pool, then max_ios x combine
        previous: Page | None = None
        async for page in stream:  # no `with`: taking the next page unpins this one
            if previous is not None:
                assert previous.released
            assert pool.statistics().pinned <= stream.max_pinned + 1
            previous = page
            if page.blockno == 40:
                break
        assert pool.statistics().pinned > 1
        await stream.aclose()
        assert previous is not None and previous.released
        assert pool.statistics().pinned == 0
