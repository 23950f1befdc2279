"""Writing dirty pages: write-back of buffers about to be reused, and checkpoints.

The writing half of PostgreSQL's bufmgr.c (``FlushBuffer``, ``BufferSync``) and the job of
its bgwriter, for the pool in ``_pool.py``, which owns a :class:`PageWriter` and calls it
when the clock sweep finds a dirty victim and for :meth:`BufferPool.flush`:

- **Write-back**: before a dirty victim can be reused it is written, together with the
  other dirty buffers the hand will reach soon (bgwriter's job), adjacent blocks combined
  into one vectored write. Write-back does not sync; the relation is remembered as needing
  one, and the next checkpoint syncs it. ``dirty`` is cleared when a write starts, so a page
  changed and marked dirty again while it is being written stays dirty for the next write
  (``BM_JUST_DIRTIED``).
- **What a write sends**: the page as it was when its write started. A buffer nobody has
  pinned cannot change while it is written (a new pin waits for the write to end, as for a
  read). A pinned one can: its holder may change it while the write is in flight, and the
  kernel, a worker thread or the device reads the buffer at any time until the write
  completes, so the file could get a mix of the two versions (a torn page that no
  checkpoint would repair). A pinned page is therefore written from a copy taken when its
  write starts; PostgreSQL gets the same from the share content lock a write takes (a
  change needs the exclusive one) and copies the page when it checksums it
  (``PageSetChecksumCopy``). A change made across an await of its own is not one change to
  the pool: a write that starts during that await sends the page half-changed (docs/guide.md,
  "The buffer pool").
- **Checkpoints** follow BufferSync: every page dirty when ``flush`` starts is marked
  (``BM_CHECKPOINT_NEEDED``, see :class:`Checkpoint`), and the relations are synced only
  once each marked page has been written by a write that completed, whoever issued it: the
  checkpoint itself, or a write-back that an eviction began meanwhile (fsync(2) covers the
  writes completed before it; a write still in flight may be lost). A checkpoint that finds
  another one's fdatasync of a relation in flight waits for it to end.
- **A file the pool created** has a directory entry that is not durable until its directory
  is fsynced (fsync(2)); the next checkpoint does that, so after ``flush`` the file survives
  a power cut along with its pages.

Facts relied on:
- After ``fdatasync`` fails, dirty data may be lost and the error may not be reported again
  (fsync(2); PostgreSQL's "fsyncgate", 2018). A relation whose sync failed refuses further
  checkpoints instead of retrying one that would wrongly succeed.
- fdatasync(2) also flushes "metadata needed for a subsequent data retrieval", which
  includes a file size grown by ``extend``.
- A write's buffer belongs to the I/O until the write completes: io_uring and POSIX AIO
  read it asynchronously (with O_DIRECT the device reads it by DMA), a worker thread reads
  it while the loop runs on.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import anyio

from .._direct import aligned_buffer
from .._paths import fsync_directory
from ..drivers import DriverFactory
from ._descriptors import BufferDesc, ClockSweep, InFlightIO, InFlightWrite, io_views

if TYPE_CHECKING:
    from .._glue import Park
    from ._pool import Relation

__all__ = ["WRITEBACK_BATCH", "Checkpoint", "PageWriter"]

#: Buffers written back in one batch when a dirty victim is found (PostgreSQL's
#: bgwriter_lru_maxpages is 100 per round; a smaller batch keeps the first reuse quick).
WRITEBACK_BATCH = 32
#: Most writes (runs of adjacent dirty blocks) in flight at once for one batch.
_WRITES_IN_FLIGHT = 64


class _Window:
    """The writes of one batch in flight: :meth:`wait_below` returns once fewer than ``n``
    are; each completion calls :meth:`ended`."""

    __slots__ = ("_new_park", "_park", "in_flight")

    def __init__(self, park: Callable[[], Park]) -> None:
        self.in_flight = 0
        self._new_park = park
        self._park: Park | None = None

    def ended(self) -> None:
        self.in_flight -= 1
        park, self._park = self._park, None
        if park is not None:
            park.set()

    async def wait_below(self, n: int) -> None:
        while self.in_flight >= n:
            park = self._park = self._new_park()
            await park.wait()


class Checkpoint:
    """One running :meth:`BufferPool.flush`: the pages dirty when it began, each until a
    write that holds the page's bytes as of then has completed, whoever issued it.

    PostgreSQL's BufferSync marks every dirty buffer ``BM_CHECKPOINT_NEEDED`` when it starts
    and syncs only after each of them was written, by the checkpointer or by a backend that
    evicted it meanwhile. Waiting only for the writes in flight when the checkpoint starts is
    not enough: an eviction that starts while it waits clears ``dirty`` on a page dirtied
    before the checkpoint, which then neither writes that page nor waits for the write, and
    may sync before the write lands (a checkpointed page lost to a power cut, issue 20).

    ``bit`` is its flag in a buffer's ``checkpoint_needed`` and a write's ``carries``; it is
    handed to another checkpoint only once this one has taken it off every buffer and write.
    """

    __slots__ = ("bit", "pending")

    def __init__(self, bit: int) -> None:
        self.bit = bit
        # buffer -> the tag (rel_id, blockno) of the page it held when marked; a buffer
        # holding another page by now was dropped with its relation (a written page may be
        # evicted, but is no longer pending).
        self.pending: dict[BufferDesc, tuple[int, int]] = {}


_rel_and_block = operator.attrgetter("rel.rel_id", "blockno")
_block = operator.attrgetter("blockno")


def _runs(descs: list[BufferDesc], limit: int) -> Iterator[list[BufferDesc]]:
    """Adjacent blocks of one relation (every buffer holds a page), in order, in runs of at
    most ``limit``: each yielded as soon as it is whole, so the first write starts before
    the last run is found (the device works while the rest are gathered)."""
    rel = descs[0].rel if descs else None
    # One relation (the common case) sorts by block number alone: int keys, no tuple each.
    key = _block if all(d.rel is rel for d in descs) else _rel_and_block
    last: list[BufferDesc] = []
    next_block = -1
    for d in sorted(descs, key=key):
        if d.blockno == next_block and d.rel is rel and len(last) < limit:
            last.append(d)
        else:
            if last:
                yield last
            last = [d]
            rel = d.rel
        next_block = d.blockno + 1
    if last:
        yield last


class PageWriter:
    """Writes a pool's dirty buffers: :meth:`write_back` for the sweep, :meth:`checkpoint`
    for ``flush``. ``io_started`` and ``io_ended`` are the pool's accounting of I/Os in
    flight (what a task waiting for a buffer waits on); the counters feed its statistics."""

    def __init__(
        self,
        arena: memoryview,
        descs: list[BufferDesc],
        sweep: ClockSweep,
        *,
        page_size: int,
        write_combine_limit: int,
        driver: str | DriverFactory | None,
        io_started: Callable[[], None],
        io_ended: Callable[[InFlightIO], None],
        park: Callable[[], Park],
    ) -> None:
        self._arena = arena
        self._descs = descs
        self._sweep = sweep
        self._page_size = page_size
        self._write_combine_limit = write_combine_limit
        self._driver = driver
        self._io_started = io_started
        self._io_ended = io_ended
        self._park = park
        self._checkpoints: dict[int, Checkpoint] = {}  # running ones, by bit
        self.writebacks = 0  # dirty buffers written so that a buffer could be reused
        self.writes = 0  # write I/Os issued
        self.blocks_written = 0
        self.syncs = 0  # fdatasync calls

    # -- write-back -------------------------------------------------------------------------

    async def write_back(self, victim: BufferDesc) -> None:
        """Write ``victim`` (dirty, unpinned) and the dirty buffers the hand reaches next."""
        batch = [victim]
        for d in self._sweep.dirty_ahead(WRITEBACK_BATCH):
            if d is not victim:
                batch.append(d)
            if len(batch) == WRITEBACK_BATCH:
                break
        self.writebacks += len(batch)
        await self._write_buffers(batch)

    async def _write_buffers(self, descs: list[BufferDesc]) -> None:
        """Write valid buffers (adjacent ones combined) and mark their relations for sync.
        Buffers whose write fails stay dirty; the first error is raised after all ended.

        The runs go out in block order, up to ``_WRITES_IN_FLIGHT`` at once, a new one as
        each completes (the look-ahead of a read stream, turned to writing); no task is
        spawned per write: each completion does its bookkeeping where it is reaped. Each
        write takes along the checkpoints waiting for its buffers (``checkpoint_needed``)
        and, once it has completed, tells them; one that fails hands them back, so a
        checkpoint never counts a page as written before a write of it is done. Cancelled,
        it starts no more writes but still waits for those in flight: they own the buffers
        (and the ``io`` marks that keep the buffers from being reused) until they end."""
        io = InFlightWrite()
        carries = io.carries
        pinned: list[BufferDesc] = []
        for d in descs:
            d.io = io
            d.dirty = False
            if d.checkpoint_needed:
                carries[d] = d.checkpoint_needed
                d.checkpoint_needed = 0
            if d.refcount:
                pinned.append(d)
        copies = self._copies(pinned) if pinned else {}
        self._io_started()
        errors: list[BaseException] = []
        window = _Window(self._park)
        try:
            for run in _runs(descs, self._write_combine_limit):
                rel = run[0].rel
                assert rel is not None
                if rel.sync_error is not None:
                    self._unwritten(run, io)
                    errors.append(sync_failed(rel))
                    continue
                if window.in_flight >= _WRITES_IN_FLIGHT:
                    await window.wait_below(_WRITES_IN_FLIGHT)
                await self._start_run(rel, run, copies, io, errors, window)
            await window.wait_below(1)
        finally:
            if window.in_flight:
                with anyio.CancelScope(shield=True):
                    await window.wait_below(1)
            # A run that never started (cancelled before it) wrote nothing.
            self._unwritten(list(io.carries), io)
            for d in descs:
                d.io = None
            self._io_ended(io)
        if errors:
            raise errors[0]

    async def _start_run(
        self,
        rel: Relation,
        run: list[BufferDesc],
        copies: dict[BufferDesc, memoryview],
        io: InFlightWrite,
        errors: list[BaseException],
        window: _Window,
    ) -> None:
        """Start the write of one run; its completion (:meth:`_run_done`) ends it."""
        if copies and any(d in copies for d in run):
            views = [copies.get(d, d.data) for d in run]
        else:
            views = io_views(self._arena, run, self._page_size)

        def done(nbytes: int, error: OSError | None) -> None:
            self._run_done(run, io, errors, error)
            window.ended()

        window.in_flight += 1
        try:
            await rel.file.start_pwritev(views, run[0].blockno * self._page_size, done)
        except BaseException as exc:
            window.in_flight -= 1
            self._unwritten(run, io)  # never started
            if not isinstance(exc, Exception):
                raise
            errors.append(exc)

    def _run_done(
        self, run: list[BufferDesc], io: InFlightWrite, errors: list[BaseException], error: OSError | None
    ) -> None:
        """A run's write ended (a completion callback: nothing here may raise)."""
        if error is not None:
            self._unwritten(run, io)  # may or may not have reached the file: write it again
            errors.append(error)
            return
        rel = run[0].rel
        assert rel is not None
        rel.needs_sync = True
        carries = io.carries
        if carries:
            checkpoints = self._checkpoints
            for d in run:
                bits = carries.pop(d, 0)
                while bits:
                    bit = bits & -bits
                    bits ^= bit
                    ckpt = checkpoints.get(bit)
                    if ckpt is not None:
                        ckpt.pending.pop(d, None)  # written
        self.writes += 1
        self.blocks_written += len(run)

    def _copies(self, pinned: list[BufferDesc]) -> dict[BufferDesc, memoryview]:
        """What to write instead of the buffer itself, fixed now, in the step that cleared
        ``dirty``: a copy of each pinned buffer (see the module doc); the others are written
        from the arena. The copies are one aligned allocation, so they suit O_DIRECT as the
        arena does."""
        copies: dict[BufferDesc, memoryview] = {}
        ps = self._page_size
        space = aligned_buffer(len(pinned) * ps)
        for i, d in enumerate(pinned):
            copy = space[i * ps : (i + 1) * ps]
            copy[:] = d.data
            copies[d] = copy
        return copies

    def _unwritten(self, run: list[BufferDesc], io: InFlightWrite) -> None:
        for d in run:
            d.dirty = True
            d.checkpoint_needed |= io.carries.pop(d, 0)

    # -- checkpoints ------------------------------------------------------------------------

    async def checkpoint(self, rels: list[Relation], only: Relation | None) -> None:
        """Write every page (of ``only``, or of all relations) dirty now, or wait for the
        write that writes it meanwhile; then fdatasync each of ``rels`` written since its
        last sync, and fsync the directory of each one the pool created."""
        ckpt = self._begin()
        bit = ckpt.bit
        pending = ckpt.pending
        todo: list[BufferDesc] = []  # the first round of _write_pending, found on the way
        for d in self._descs:
            rel = d.rel
            if rel is None or (only is not None and rel is not only) or not d.valid:
                continue
            io = d.io
            if d.dirty:
                d.checkpoint_needed |= bit
                if io is None:
                    todo.append(d)
            elif isinstance(io, InFlightWrite):
                # Clean while being written: no change since that write began, so it holds
                # the page as of now; it is ours to wait for.
                io.carries[d] = io.carries.get(d, 0) | bit
            else:
                continue
            pending[d] = (rel.rel_id, d.blockno)
        try:
            await self._write_pending(ckpt, todo)
        finally:
            self._end(ckpt)
        synced_dirs: set[str] = set()  # one fsync per directory per checkpoint
        for r in rels:
            if r.sync_error is not None:
                raise sync_failed(r)
            if r.needs_sync and not r.closed:
                r.needs_sync = False
                done = r.sync_done = anyio.Event()
                try:
                    await r.file.fdatasync()
                except OSError as exc:
                    r.sync_error = exc
                    raise
                finally:
                    done.set()
                self.syncs += 1
            elif r.sync_done is not None and not r.sync_done.is_set():
                # Another checkpoint's fdatasync is in flight, submitted after the writes this
                # one waited for completed: it covers them, but only once it has completed.
                await r.sync_done.wait()
                if r.sync_error is not None:
                    raise sync_failed(r)
            if r.needs_dir_sync and not r.closed:
                directory = os.path.dirname(os.path.abspath(r.path))
                if directory not in synced_dirs:
                    await fsync_directory(directory, self._driver)
                    synced_dirs.add(directory)
                r.needs_dir_sync = False

    def _begin(self) -> Checkpoint:
        """A new checkpoint, with the lowest bit no running one holds."""
        bit = 1
        while bit in self._checkpoints:
            bit <<= 1
        ckpt = self._checkpoints[bit] = Checkpoint(bit)
        return ckpt

    def _end(self, ckpt: Checkpoint) -> None:
        """Take ``ckpt``'s bit off what still holds it (a checkpoint cut short by an error or
        a cancellation: the pages still pending, on their buffers or on the write in flight
        that carries them), so the next checkpoint given the bit inherits none of it."""
        for d in ckpt.pending:
            _drop_bit(d, ckpt.bit)
        del self._checkpoints[ckpt.bit]

    async def _write_pending(self, ckpt: Checkpoint, todo: list[BufferDesc]) -> None:
        """Until no page of ``ckpt`` is pending: write those idle now (dirty, pinned or not),
        else wait for a write of one in flight, issued by anyone (a write-back, another
        checkpoint). A write that fails leaves its pages dirty and pending: one by another
        task is retried here, one of ours raises. ``todo``: the pages idle when ``ckpt``
        was marked, with no await since (the first round, without looking again)."""
        pending = ckpt.pending
        bit = ckpt.bit
        if todo:
            await self._write_buffers(todo)
        while pending:
            todo = []
            busy: InFlightIO | None = None
            for d in list(pending):
                rel_id, blockno = pending[d]
                if d.blockno != blockno or d.rel is None or d.rel.rel_id != rel_id:
                    del pending[d]  # dropped with its relation
                    _drop_bit(d, bit)
                elif d.io is not None:
                    busy = d.io
                else:
                    d.checkpoint_needed |= bit  # there already; so the write we issue reports back
                    todo.append(d)
            if todo:
                await self._write_buffers(todo)
            elif busy is not None:
                await busy.wait(self._park)


def _drop_bit(desc: BufferDesc, bit: int) -> None:
    """A checkpoint no longer waits for ``desc``: off its buffer, and off the write in flight
    that carries it for that checkpoint."""
    desc.checkpoint_needed &= ~bit
    io = desc.io
    if isinstance(io, InFlightWrite) and desc in io.carries:
        io.carries[desc] &= ~bit


def sync_failed(rel: Relation) -> OSError:
    """The error every later write or checkpoint of ``rel`` raises once an fdatasync failed."""
    err = rel.sync_error
    assert err is not None
    out = OSError(
        err.errno,
        f"an earlier fdatasync of {rel.path!r} failed ({err.strerror}); pages written before it may be "
        "lost and will not be reported again, so this relation takes no more checkpoints (PostgreSQL "
        "PANICs here): close it and recover from the WAL or a copy",
        rel.path,
    )
    out.__cause__ = err
    return out
