"""Read streams: pinned pages of a relation in a given order, read ahead and combined.

After PostgreSQL's src/backend/storage/aio/read_stream.c. The consumer asks for pages one
at a time; the stream looks ahead in its list of block numbers, pins what is already in
the pool and starts reads for what is not, so that the I/O for later pages runs while the
consumer works on earlier ones.

**Combining.** Consecutive block numbers are gathered into a *pending read* of up to
``io_combine_limit`` blocks. When it is started, its first block decides: a block already
in the pool (a hit) is pinned on its own and the rest stays pending; otherwise as many
consecutive missing blocks as buffers can be claimed for become one ``preadv``. So a hit
in the middle of a run splits it into a read before, the hit, and a read after.

**Distance.** How many pages to keep pinned ahead of the consumer adapts::

    distance starts at 1 (assume the data is cached: behaviour A below)
    a read had to be waited for  ->  distance = min(distance * 2, max_pinned)
    a block was found in the pool ->  distance = max(distance - 1, 1)

It grows fast and decays slowly, as read_stream.c's essay puts it: a cached scan pins one
page ahead and does no speculative work (A); a scan that meets uncached blocks widens
quickly until ``max_ios`` reads of ``io_combine_limit`` blocks are in flight together
(B and C: with real asynchronous I/O, as in PostgreSQL 18, concurrency itself is the point,
so sequential reads also go beyond one combined read). ``max_pinned`` is
``max_ios * io_combine_limit``, capped by the pool's fair share for a stream
(:meth:`BufferPool.stream_pin_limit`), and ``io_combine_limit`` is capped by it in turn.

**Pins.** Every look-ahead page is pinned by the stream; the page handed to the consumer
is unpinned when the consumer takes the next one, leaves its ``with page:``, or closes the
stream. Look-ahead never waits for the pool: it takes only buffers that are free now, and
waits (or raises NoUnpinnedBuffersError) only when the stream has nothing pinned at all.

**Errors** are delivered in order: a block past the end of the relation, or a read that
failed, raises when the consumer reaches that block, not when the look-ahead met it.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .._glue import current_task_identity
from ._pool import Page
from .errors import BlockOutOfRangeError

if TYPE_CHECKING:
    from ._descriptors import BufferDesc
    from ._pool import BufferPool, InFlightIO, Relation

__all__ = ["ReadStream"]


class _Entry:
    """One block the stream has pinned (or an error to deliver in its place)."""

    __slots__ = ("blockno", "desc", "error", "io", "io_head", "own_io", "owner")

    def __init__(
        self,
        blockno: int,
        desc: BufferDesc | None,
        owner: Any,
        io: InFlightIO | None = None,
        *,
        own_io: bool = False,
        io_head: bool = False,
        error: BaseException | None = None,
    ) -> None:
        self.blockno = blockno
        self.desc = desc
        self.owner = owner
        self.io = io  # the read filling it when pinned, ours or another task's
        self.own_io = own_io
        self.io_head = io_head  # the first block of a read this stream started
        self.error = error


class ReadStream:
    """An async iterator of pinned :class:`Page` objects; also an async context manager
    (leaving it, or :meth:`close`, releases every pin it holds)."""

    def __init__(
        self,
        pool: BufferPool,
        rel: Relation,
        blocks: Iterable[int] | AsyncIterable[int],
        *,
        max_ios: int,
        io_combine_limit: int,
    ) -> None:
        max_ios = operator.index(max_ios)
        io_combine_limit = operator.index(io_combine_limit)
        if max_ios < 1:
            raise ValueError(f"max_ios {max_ios} must be at least 1")
        if io_combine_limit < 1:
            raise ValueError(f"io_combine_limit {io_combine_limit} must be at least 1")
        self._pool = pool
        self._rel = rel
        self._ablocks: AsyncIterator[int] | None = None
        self._sblocks: Iterator[int] | None = None
        if isinstance(blocks, AsyncIterable):
            self._ablocks = blocks.__aiter__()
        else:
            self._sblocks = iter(blocks)
        self.max_ios = max_ios
        self.max_pinned = max(1, min(max_ios * io_combine_limit, pool.stream_pin_limit()))
        self.io_combine_limit = min(io_combine_limit, self.max_pinned)
        self.distance = 1
        self._queue: deque[_Entry] = deque()
        self._ios_in_progress = 0
        self._pending_start = 0
        self._pending_n = 0
        self._unget: int | None = None
        self._end = False
        self._current: Page | None = None
        self._closed = False
        self._may_wait = False
        pool._streams.add(self)
        pool.last_distance = self.distance

    def __repr__(self) -> str:
        return (
            f"<ReadStream {self._rel.path!r} distance={self.distance} pinned={len(self._queue)} "
            f"ios={self._ios_in_progress}{' closed' if self._closed else ''}>"
        )

    # -- consumer side ----------------------------------------------------------------------

    def __aiter__(self) -> ReadStream:
        return self

    async def __anext__(self) -> Page:
        if self._closed:
            raise StopAsyncIteration
        if self._current is not None:
            self._current.release()
            self._current = None
        try:
            if not self._queue:
                await self._look_ahead(may_wait=True)
                if not self._queue:
                    self.close()
                    raise StopAsyncIteration
            page = await self._take(self._queue.popleft())
            self._current = page
            await self._look_ahead()
        except StopAsyncIteration:
            raise
        except BaseException:
            self.close()
            raise
        return page

    async def __aenter__(self) -> ReadStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Release every pin the stream holds (reads in flight finish in the background)."""
        if self._closed:
            return
        self._closed = True
        if self._current is not None:
            self._current.release()
            self._current = None
        pool = self._pool
        while self._queue:
            e = self._queue.popleft()
            if e.desc is not None:
                pool._unpin(e.desc, e.owner)
        pool._streams.discard(self)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            # Abandoned mid-way (a `break` out of `async for`): give the pins back.
            self._closed = True
            for e in self._queue:
                if e.desc is not None:
                    self._pool._unpin(e.desc, e.owner, notify=False)
            self._queue.clear()

    async def _take(self, entry: _Entry) -> Page:
        pool = self._pool
        desc = entry.desc
        if desc is None:
            assert entry.error is not None
            raise entry.error
        io = entry.io
        if io is not None and not io.done.is_set():
            try:
                await io.done.wait()
            except BaseException:
                pool._unpin(desc, entry.owner)
                raise
        if entry.io_head:
            self._ios_in_progress -= 1
            self.distance = min(self.distance * 2, self.max_pinned)
            pool.last_distance = self.distance
        if desc.valid:
            return Page(pool, desc, entry.owner)
        pool._unpin(desc, entry.owner)
        if entry.own_io and io is not None and io.error is not None:
            raise io.error
        # Another task's read of it failed: read it ourselves, as that task would retry.
        return await pool.read_page(self._rel, entry.blockno)

    # -- look-ahead -------------------------------------------------------------------------

    async def _next_block(self) -> int | None:
        if self._unget is not None:
            b, self._unget = self._unget, None
            return b
        if self._sblocks is not None:
            try:
                return operator.index(next(self._sblocks))
            except StopIteration:
                return None
        assert self._ablocks is not None
        try:
            return operator.index(await self._ablocks.__anext__())
        except StopAsyncIteration:
            return None

    async def _look_ahead(self, *, may_wait: bool = False) -> None:
        """read_stream_look_ahead: fill the queue up to ``distance`` pins and ``max_ios`` reads.

        Only a stream with nothing pinned, not even the consumer's page, ``may_wait`` for a
        buffer (or raise NoUnpinnedBuffersError): otherwise looking ahead is optional work."""
        self._may_wait = may_wait
        while (
            not self._end
            and self._ios_in_progress < self.max_ios
            and len(self._queue) + self._pending_n < self.distance
        ):
            if self._pending_n == self.io_combine_limit:
                if not await self._start_pending_read():
                    return
                continue
            b = await self._next_block()
            if b is None:
                self._end = True
                break
            if self._pending_n and self._pending_start + self._pending_n == b:
                self._pending_n += 1
                continue
            while self._pending_n:
                if not await self._start_pending_read() or self._ios_in_progress >= self.max_ios:
                    self._unget = b  # no room or no I/O slot: keep it for next time
                    return
            self._pending_start = b
            self._pending_n = 1
        # A pending read is not started just because the distance is reached: it gets the
        # chance to grow to io_combine_limit while the consumer moves on. But it starts when
        # full, when the stream ended, or when nothing else is pinned to return meanwhile.
        while (
            self._pending_n
            and self._ios_in_progress < self.max_ios
            and (self._pending_n >= self.io_combine_limit or self._end or not self._queue)
        ):
            if not await self._start_pending_read():
                return
            if self._queue and not self._end:
                break

    async def _start_pending_read(self) -> bool:
        """read_stream_start_pending_read: pin the first pending block if it is a hit, else
        start one read of the consecutive missing blocks from it. False when the pool has no
        buffer free now and the stream holds others to return meanwhile."""
        pool = self._pool
        rel = self._rel
        start = self._pending_start
        me = current_task_identity()
        while True:
            if start < 0 or start >= rel.nblocks:
                try:
                    pool._check_block(rel, start)
                except BlockOutOfRangeError as exc:
                    self._queue.append(_Entry(start, None, me, error=exc))
                self._advance(1)
                return True
            mapping = pool._mapping
            rel_id = rel.rel_id
            desc = mapping.get((rel_id, start))
            if desc is not None:
                desc.pin()
                pool._count_pin(me)
                pool.hits += 1
                self._queue.append(_Entry(start, desc, me, desc.io))
                if desc.io is None and self.distance > 1:
                    self.distance -= 1
                    pool.last_distance = self.distance
                self._advance(1)
                return True
            want = 1
            limit = min(self._pending_n, rel.nblocks - start)
            while want < limit and (rel_id, start + want) not in mapping:
                want += 1
            claimed: list[BufferDesc] = []
            first = await pool._get_victim(me, wait=self._may_wait and not self._queue)
            if first is None:
                return False
            claimed.append(first)
            while len(claimed) < want:
                d = pool._claim_clean_now(me)
                if d is None:
                    break
                claimed.append(d)
            # The awaits above let other tasks run: they may have read some of these blocks.
            n = 0
            if not rel.closed:
                while n < len(claimed) and start + n < rel.nblocks and (rel_id, start + n) not in mapping:
                    n += 1
            for d in claimed[n:]:
                pool._unpin(d, me)
            if n == 0:
                pool._check_rel(rel)
                continue  # the first block is a hit now
            descs = claimed[:n]
            pool.misses += n
            io = pool._start_read(rel, start, descs)
            pool._spawn_read(rel, start, descs, io)
            for i, d in enumerate(descs):
                self._queue.append(_Entry(start + i, d, me, io, own_io=True, io_head=i == 0))
            self._ios_in_progress += 1
            self._advance(n)
            return True

    def _advance(self, n: int) -> None:
        self._pending_start += n
        self._pending_n -= n
