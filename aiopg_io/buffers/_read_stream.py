"""Read streams: pinned pages of a relation in a given order, read ahead and combined.

After PostgreSQL's src/backend/storage/aio/read_stream.c. The consumer asks for pages one
at a time (``async for page in stream``), or for the pages of one combined read at once
(``async for run in stream.runs()``: a :class:`PageRun`); the stream looks ahead in its
list of block numbers, pins what is already in the pool and starts reads for what is not,
so that the I/O for later pages runs while the consumer works on earlier ones.

**Runs.** The stream queues what each ``start_read_buffers`` call returned (a
:class:`ReadBuffersOperation`: one combined read of up to ``io_combine_limit`` blocks, or
one block found in the pool), as read_stream.c keeps its ``ios[]`` beside its buffer queue.
Taken page by page, each operation hands out one :class:`Page` per step; taken as a run,
all its pages not yet taken come out in one step with one pass over their pins, which is
what lets a scan run at the device's speed rather than at Python's per-page speed. Both
ways of taking may be mixed on one stream; the look-ahead is the same.

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

**Pins.** Every look-ahead page is pinned by the stream; the page (or run) handed to the
consumer is unpinned when the consumer takes the next one, leaves its ``with page:``, or
closes the stream. Look-ahead never waits for the pool: it takes only buffers that are free now, and
waits (or raises NoUnpinnedBuffersError) only when the stream has nothing pinned at all.

**Completions** are handled where they are reaped: the pool's read callback marks the
buffers valid and wakes the stream if it waits (no task is spawned per read), and a step
whose pages are ready does not await at all.

**Errors** are delivered in order: a block past the end of the relation, or a read that
failed, raises when the consumer reaches that block, not when the look-ahead met it.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable, Iterator
from typing import TYPE_CHECKING

from .errors import BlockOutOfRangeError, at_least_one, combine_limit

if TYPE_CHECKING:
    from ._pool import BufferPool, Page, PageRun, ReadBuffersOperation, Relation

__all__ = ["ReadStream"]


class ReadStream:
    """An async iterator of pinned :class:`Page` objects (:meth:`runs`: of :class:`PageRun`
    objects); also an async context manager (leaving it, or :meth:`close`, releases every
    pin it holds)."""

    def __init__(
        self,
        pool: BufferPool,
        rel: Relation,
        blocks: Iterable[int] | AsyncIterable[int],
        *,
        max_ios: int,
        io_combine_limit: int,
    ) -> None:
        max_ios = at_least_one("max_ios", max_ios)
        io_combine_limit = combine_limit("io_combine_limit", io_combine_limit)
        self._pool = pool
        self._rel = rel
        self._ablocks: AsyncIterator[int] | None = None
        self._sblocks: Iterator[int] | None = None
        # A range of step 1 (a sequential scan) is kept as a counter, [_span_next, _span_stop):
        # the look-ahead then grows a pending read by as many blocks as fit at once, instead
        # of one step of its loop per block.
        self._span = False
        self._span_next = self._span_stop = 0
        if isinstance(blocks, AsyncIterable):
            self._ablocks = blocks.__aiter__()
        elif type(blocks) is range and blocks.step == 1:
            self._span = True
            self._span_next, self._span_stop = blocks.start, max(blocks.start, blocks.stop)
        else:
            self._sblocks = iter(blocks)
        self.max_ios = max_ios
        self.max_pinned = max(1, min(max_ios * io_combine_limit, pool.stream_pin_limit()))
        self.io_combine_limit = min(io_combine_limit, self.max_pinned)
        self.distance = 1
        # What start_read_buffers returned, in block order, or an error to raise in its
        # place; _pinned counts the pages the queue holds (not taken yet).
        self._queue: deque[ReadBuffersOperation | BaseException] = deque()
        self._pinned = 0
        self._ios_in_progress = 0
        self._pending_start = 0
        self._pending_n = 0
        self._unget: int | None = None
        self._end = False
        self._current: Page | PageRun | None = None
        self._closed = False
        self._may_wait = False
        self._unsubmitted = False  # reads started by this look-ahead, not yet submitted
        pool.last_distance = self.distance

    def __repr__(self) -> str:
        return (
            f"<ReadStream {self._rel.path!r} distance={self.distance} pinned={self._pinned} "
            f"ios={self._ios_in_progress}{' closed' if self._closed else ''}>"
        )

    @property
    def closed(self) -> bool:
        """Closed: by :meth:`close`, at its end, or after an error it raised."""
        return self._closed

    # -- consumer side ----------------------------------------------------------------------

    def __aiter__(self) -> ReadStream:
        return self

    async def __anext__(self) -> Page:
        op = await self._next_op()
        page = op.take()
        self._pinned -= 1
        if op.taken == op.nblocks:
            self._queue.popleft()
        self._current = page
        if self._wants_look_ahead():
            await self._look_ahead()
        return page

    def runs(self) -> AsyncIterator[PageRun]:
        """The stream's pages a run at a time: ``async for run in stream.runs()``. Each run
        is the pages of one combined read (up to ``io_combine_limit`` consecutive blocks),
        or one page found in the pool, or the rest of a read whose first pages were taken
        one at a time. The run is unpinned when the next one is taken (as a page is), when
        the consumer releases it or leaves its ``with run:``, or when the stream closes."""
        return _Runs(self)

    async def next_run(self) -> PageRun:
        """The next run (see :meth:`runs`); StopAsyncIteration at the end."""
        op = await self._next_op()
        run = op.take_run()
        self._pinned -= run.nblocks
        self._queue.popleft()
        self._current = run
        if self._wants_look_ahead():
            await self._look_ahead()
        return run

    async def _next_op(self) -> ReadBuffersOperation:
        """Release what the consumer holds; the operation at the head of the queue, waited
        for (its pages are valid), or StopAsyncIteration at the end."""
        if self._closed:
            raise StopAsyncIteration
        current = self._current
        if current is not None:
            self._current = None
            current.release()
        try:
            if not self._queue:
                await self._look_ahead(may_wait=True)
                if not self._queue:
                    self.close()
                    raise StopAsyncIteration
            head = self._queue[0]
            if isinstance(head, BaseException):
                self._queue.popleft()
                raise head
            if head.taken == 0 and head.needs_wait:
                # On an error or a cancellation the operation stays queued: close releases it.
                await self._pool.wait_read_buffers(head)
                if head.started_read:
                    self._ios_in_progress -= 1
                    self.distance = min(self.distance * 2, self.max_pinned)
                    self._pool.last_distance = self.distance
        except StopAsyncIteration:
            raise
        except BaseException:
            self.close()
            raise
        return head

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
        while self._queue:
            op = self._queue.popleft()
            if not isinstance(op, BaseException):
                op.release()
        self._pinned = 0

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            # Abandoned mid-way (a `break` out of `async for`): each read operation dropped
            # with the queue gives its pins back.
            self._closed = True
            self._queue.clear()

    # -- look-ahead -------------------------------------------------------------------------

    def _wants_look_ahead(self) -> bool:
        """Whether :meth:`_look_ahead` would do anything now: checked in line, so that a
        step with nothing to start costs no coroutine."""
        if self._ios_in_progress >= self.max_ios:
            return False
        if self._pending_n and (self._end or not self._queue or self._pending_n >= self.io_combine_limit):
            return True
        return not self._end and self._pinned + self._pending_n < self.distance

    async def _next_block(self) -> int | None:
        if self._unget is not None:
            b, self._unget = self._unget, None
            return b
        if self._span:
            return self._next_of_span()
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

    def _next_of_span(self) -> int | None:
        b = self._span_next
        if b >= self._span_stop:
            return None
        self._span_next = b + 1
        return b

    def _grow_from_span(self) -> None:
        """Add to the pending read, which ends where the span goes on, every block of the
        span that the loop of :meth:`_look_ahead` would add one by one before it stopped:
        up to ``io_combine_limit``, the distance, or the span's end."""
        room = min(
            self.io_combine_limit - self._pending_n,
            self.distance - self._pinned - self._pending_n,
            self._span_stop - self._span_next,
        )
        if room > 0:
            self._pending_n += room
            self._span_next += room

    async def _look_ahead(self, *, may_wait: bool = False) -> None:
        """read_stream_look_ahead: fill the queue up to ``distance`` pins and ``max_ios`` reads,
        then submit the reads started (read_stream.c runs its look-ahead in batch mode and
        submits at its end): the consumer may go on without yielding to the loop.

        Only a stream with nothing pinned, not even the consumer's page, ``may_wait`` for a
        buffer (or raise NoUnpinnedBuffersError): otherwise looking ahead is optional work.
        An error closes the stream (it is raised to the consumer)."""
        self._may_wait = may_wait
        try:
            sblocks = self._sblocks
            while (
                not self._end
                and self._ios_in_progress < self.max_ios
                and self._pinned + self._pending_n < self.distance
            ):
                if self._pending_n == self.io_combine_limit:
                    if not await self._start_pending_read():
                        return
                    continue
                b: int | None
                if self._unget is not None:
                    b = await self._next_block()
                elif self._span:
                    b = self._next_of_span()
                elif sblocks is not None:
                    # The block numbers of an iterable, without a coroutine per block.
                    try:
                        b = operator.index(next(sblocks))
                    except StopIteration:
                        b = None
                else:
                    b = await self._next_block()
                if b is None:
                    self._end = True
                    break
                if self._pending_n and self._pending_start + self._pending_n == b:
                    self._pending_n += 1
                    if self._span:
                        self._grow_from_span()
                    continue
                while self._pending_n:
                    if not await self._start_pending_read() or self._ios_in_progress >= self.max_ios:
                        self._unget = b  # no room or no I/O slot: keep it for next time
                        return
                self._pending_start = b
                self._pending_n = 1
                if self._span:
                    self._grow_from_span()
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
        except BaseException:
            self.close()
            raise
        finally:
            if self._unsubmitted:
                self._unsubmitted = False
                if not self._rel.closed:
                    self._rel.file.submit_staged()

    async def _start_pending_read(self) -> bool:
        """read_stream_start_pending_read: one ``start_read_buffers`` call for the pending
        blocks, which pins the first if it is a hit, else starts one read of the consecutive
        missing blocks from it. False when the pool has no buffer free now and the stream
        holds others to return meanwhile."""
        pool = self._pool
        start = self._pending_start
        try:
            op = await pool.start_read_buffers(
                self._rel, start, self._pending_n, wait=self._may_wait and not self._queue
            )
        except BlockOutOfRangeError as exc:
            self._queue.append(exc)  # raised when the consumer gets there
            self._advance(1)
            return True
        if op is None:
            return False
        self._queue.append(op)
        self._pinned += op.nblocks
        if op.started_read:
            self._ios_in_progress += 1
            self._unsubmitted = True
        elif not op.needs_wait and self.distance > 1:
            self.distance -= 1
            pool.last_distance = self.distance
        self._advance(op.nblocks)
        return True

    def _advance(self, n: int) -> None:
        self._pending_start += n
        self._pending_n -= n


class _Runs:
    """``stream.runs()``: the same stream, a :class:`PageRun` per step."""

    __slots__ = ("_stream",)

    def __init__(self, stream: ReadStream) -> None:
        self._stream = stream

    def __aiter__(self) -> _Runs:
        return self

    def __anext__(self) -> Awaitable[PageRun]:
        return self._stream.next_run()
