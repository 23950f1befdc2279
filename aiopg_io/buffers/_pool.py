"""The buffer pool: pages of relation files cached in one aligned arena, pinned while used.

PostgreSQL's shared buffers (src/backend/storage/buffer/bufmgr.c) for one event loop:

- **Lookup**: a mapping table from (relation, block number) to buffer. A page found there
  is pinned and handed out as a :class:`Page`; one whose I/O is in progress
  (``BM_IO_IN_PROGRESS``) is pinned first and waited for, so two tasks asking for the same
  absent block cause one read and neither sees the page before the read is whole
  (``StartBufferIO`` / ``WaitIO``).
- **Miss**: a victim from the clock sweep (``_descriptors.py``) is claimed without an await
  between choosing and claiming it, so no other task can take it or see it half-claimed. Its
  old page leaves the mapping table then (an *eviction*). The read fills it; if the read
  fails the buffer is zeroed and unmapped, so no one ever sees the previous occupant's
  bytes through it, and a task that was waiting for it retries with a read of its own (as
  a backend does when it finds ``BM_VALID`` still clear after ``WaitIO``).
- **Dirty victims**: before a dirty victim can be reused it is written back, together with
  the other dirty buffers the hand will reach soon (the job of PostgreSQL's bgwriter),
  adjacent blocks combined into one vectored write. Write-back does not sync; the relation
  is remembered as needing one, and :meth:`BufferPool.flush` (a checkpoint) writes every
  dirty page and then ``fdatasync``\\s the relations written since the last checkpoint.
  ``dirty`` is cleared when a write starts, so a page changed and marked dirty again
  while it is being written stays dirty for the next write (``BM_JUST_DIRTIED``).
- **Checkpoints** follow BufferSync: every page dirty when ``flush`` starts is marked
  (``BM_CHECKPOINT_NEEDED``, see :class:`Checkpoint`), and the relations are synced only
  once each marked page has been written by a write that completed, whoever issued it: the
  checkpoint itself, or a write-back that an eviction began meanwhile (fsync(2) covers the
  writes completed before it; a write still in flight may be lost). A checkpoint that finds
  another one's fdatasync of a relation in flight waits for it to end.
- **Pins**: a pinned buffer, and one under I/O, is never a victim. When the sweep finds
  none, a task waits for a pin to be released or an I/O to finish, unless waiting cannot
  help: no I/O is in flight and every pin is held by tasks that are themselves waiting
  for a buffer (this one included). Then it raises NoUnpinnedBuffersError, PostgreSQL's
  "no unpinned buffers available", instead of hanging.
- **One pool per relation**: a file open as a relation in one pool of this process is refused
  to another (RelationInUseError), recognised by (``st_dev``, ``st_ino``) as ``open`` already
  does within a pool, so a symlink or relative path is caught too. Two pools would each cache
  its pages and neither would see the other's changes (PostgreSQL has one shared buffer pool
  per cluster for this reason). Closing the relation, or the pool, releases it.
- **Extension**: ``extend`` grows the file (fallocate, else ftruncate) under a per-relation
  lock, PostgreSQL's relation extension lock; new blocks read back as zeros.
- **A file the pool created** (``open(path, create=True)``) has a directory entry that is
  not durable until its directory is fsynced (fsync(2)); the next checkpoint does that,
  so after ``flush`` the file survives a power cut along with its pages. The create and the
  directory fsync are ops (:mod:`aiopg_io._paths`), which aiopg_io.testing's power-loss
  simulator records like any other (docs/testing.md): that is how it is tested.
- **No registered io_uring buffers** for the arena: the io_uring driver does not register
  buffers (its module docstring says why), so the arena goes through ``readv``/``writev``
  like any other buffer. Measured 2026-11 with liburing alone, outside the library:
  ``io_uring_register_buffers`` over an mmap arena plus ``io_uring_prep_readv_fixed`` (which
  takes an ``Iovec``, unlike ``read_fixed``) works on this kernel and gave 1.15x the IOPS of
  ``readv`` for 8 KiB O_DIRECT random reads at 32 in flight in a bare Python loop (medians
  35k -> 40k and 38k -> 45k in two runs); through the library each op costs several times
  more Python, so the gain would be smaller. If it is ever done, it belongs in the driver.

Facts relied on:
- After ``fdatasync`` fails, dirty data may be lost and the error may not be reported again
  (fsync(2); PostgreSQL's "fsyncgate", 2018). A relation whose sync failed refuses further
  checkpoints instead of retrying one that would wrongly succeed.
- fdatasync(2) also flushes "metadata needed for a subsequent data retrieval", which
  includes a file size grown by ``extend``.
- A positional read of a regular file is short only at end of file (read(2)); here that
  means the file shrank under the pool, reported as BlockOutOfRangeError.
"""

from __future__ import annotations

import contextlib
import errno
import operator
import os
import warnings
import weakref
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from .. import _paths
from .._direct import aligned_buffer
from .._glue import current_task_identity
from .._open import open as aio_open
from .._paths import fsync_directory
from ..drivers import DriverFactory
from ..errors import AlignmentError, ClosedError
from ._descriptors import BufferDesc, ClockSweep
from .errors import BlockOutOfRangeError, NoUnpinnedBuffersError, RelationInUseError, RelationSizeError

if TYPE_CHECKING:
    from .._file import AsyncFile
    from ._read_stream import ReadStream

__all__ = ["BufferPool", "BufferPoolStatistics", "Page", "Relation"]

#: Buffers written back in one batch when a dirty victim is found (PostgreSQL's
#: bgwriter_lru_maxpages is 100 per round; a smaller batch keeps the first reuse quick).
WRITEBACK_BATCH = 32
#: Most blocks combined into one read or write by default: 128 KiB of 8 KiB pages, as
#: PostgreSQL's io_combine_limit.
DEFAULT_IO_COMBINE_LIMIT = 16
#: Runs of adjacent dirty blocks written at once by a checkpoint.
_FLUSH_RUNS_IN_FLIGHT = 64

#: Every relation open in a pool of this process, by file identity (st_dev, st_ino): a second
#: pool is refused one (RelationInUseError). Weak, so a pool dropped unclosed holds nothing.
_OPEN_RELATIONS: weakref.WeakValueDictionary[tuple[int, int], Relation] = weakref.WeakValueDictionary()


def _forget_relation(rel: Relation) -> None:
    if _OPEN_RELATIONS.get(rel.key) is rel:
        del _OPEN_RELATIONS[rel.key]


def _finished(owner: Any) -> bool:
    return getattr(owner, "cr_frame", True) is None


class InFlightIO:
    """A read filling, or a write draining, one or more buffers (``BM_IO_IN_PROGRESS``)."""

    __slots__ = ("carries", "done", "error", "kind")

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "read" or "write"
        self.done = anyio.Event()
        self.error: BaseException | None = None
        # A write: the checkpoints each of its buffers not written yet is written for (see
        # Checkpoint); what is left here when the write ends was not written.
        self.carries: dict[BufferDesc, set[Checkpoint]] = {}


class Checkpoint:
    """One running :meth:`BufferPool.flush`: the pages dirty when it began, each until a
    write that holds the page's bytes as of then has completed, whoever issued it.

    PostgreSQL's BufferSync marks every dirty buffer ``BM_CHECKPOINT_NEEDED`` when it starts
    and syncs only after each of them was written, by the checkpointer or by a backend that
    evicted it meanwhile. Waiting only for the writes in flight when the checkpoint starts is
    not enough: an eviction that starts while it waits clears ``dirty`` on a page dirtied
    before the checkpoint, which then neither writes that page nor waits for the write, and
    may sync before the write lands (a checkpointed page lost to a power cut, issue 20).
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        # buffer -> the page it held when marked; a buffer holding another page by now was
        # dropped with its relation (a written page may be evicted, but is no longer pending).
        self.pending: dict[BufferDesc, tuple[Relation, int]] = {}

    def written(self, desc: BufferDesc) -> None:
        self.pending.pop(desc, None)


@dataclass(frozen=True, slots=True)
class BufferPoolStatistics:
    """A snapshot of a pool's counters (since it was created) and state."""

    nbuffers: int
    page_size: int
    pinned: int  # buffers with at least one pin now
    dirty: int  # buffers whose bytes differ from the file now
    hits: int  # blocks found in the pool (perhaps while another task was reading them)
    misses: int  # blocks that needed a read
    reads: int  # read I/Os issued (one per combined run of blocks)
    blocks_read: int
    evictions: int  # valid pages pushed out to make room
    writebacks: int  # dirty buffers written so that a buffer could be reused
    writes: int  # write I/Os issued (write-back and checkpoints)
    blocks_written: int
    syncs: int  # fdatasync calls
    look_ahead_distance: int  # of the read stream that moved last; 0 before any

    @property
    def blocks_per_read(self) -> float:
        """Mean blocks per read I/O: above 1 when reads were combined."""
        return self.blocks_read / self.reads if self.reads else 0.0

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class Relation:
    """A file of whole pages opened through a pool (``await pool.open(path)``)."""

    def __init__(
        self, pool: BufferPool, rel_id: int, path: str, file: AsyncFile, nblocks: int, key: tuple[int, int]
    ) -> None:
        self.pool = pool
        self.rel_id = rel_id
        self.path = path
        self.file = file
        self.nblocks = nblocks
        self.key = key
        self.closed = False
        self.extension_lock = anyio.Lock()
        self.needs_sync = False  # written since the last checkpoint synced it
        self.needs_dir_sync = False  # created by the pool; its directory entry is not durable yet
        self.sync_error: OSError | None = None
        self.sync_done: anyio.Event | None = None  # set when the latest fdatasync ended

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.nblocks} blocks"
        return f"<Relation {self.path!r} {state}>"

    async def aclose(self) -> None:
        """Same as ``await pool.close_relation(rel)``."""
        await self.pool.close_relation(self)


class Page:
    """A pinned page: ``data`` is valid until the pin is released (``with page:`` or
    :meth:`release`). Call :meth:`mark_dirty` after changing ``data``; a change made after
    a checkpoint started needs another ``mark_dirty`` to reach the next one."""

    __slots__ = ("__weakref__", "_data", "_desc", "_owner", "_pool", "_released", "blockno", "rel")

    def __init__(self, pool: BufferPool, desc: BufferDesc, owner: Any) -> None:
        self._pool = pool
        self._desc = desc
        self._owner = owner
        assert desc.rel is not None
        self.rel: Relation = desc.rel
        self.blockno = desc.blockno
        # A view of its own, released with the pin: using it after that raises instead of
        # reading whatever page the buffer holds by then.
        self._data = desc.data[:]
        self._released = False

    def __repr__(self) -> str:
        state = "released" if self._released else "pinned"
        return f"<Page {self.rel.path!r} block {self.blockno} {state}>"

    @property
    def data(self) -> memoryview:
        if self._released:
            raise ClosedError(f"page {self.blockno} of {self.rel.path!r} was released (unpinned)")
        return self._data

    @property
    def released(self) -> bool:
        return self._released

    def mark_dirty(self) -> None:
        if self._released:
            raise ClosedError(
                f"page {self.blockno} of {self.rel.path!r} was released; mark it dirty while it is pinned"
            )
        self._desc.dirty = True

    def release(self) -> None:
        """Unpin (idempotent)."""
        if self._released:
            return
        self._released = True
        # BufferError: the caller still holds an export of the view (numpy, ctypes): cannot revoke.
        with contextlib.suppress(BufferError):
            self._data.release()
        self._pool._unpin(self._desc, self._owner)

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        if getattr(self, "_released", True):
            return
        # PostgreSQL warns about a buffer refcount leak at end of transaction; a leaked pin
        # would keep the buffer out of reach forever.
        warnings.warn(
            f"page {self.blockno} of {self.rel.path!r} was never released",
            ResourceWarning,
            stacklevel=2,
            source=self,
        )
        self._released = True
        self._pool._unpin(self._desc, self._owner, notify=False)


def _runs(descs: list[BufferDesc], limit: int) -> list[list[BufferDesc]]:
    """Adjacent blocks of one relation, in order, in runs of at most ``limit``."""
    ordered = sorted(descs, key=lambda d: (d.rel.rel_id if d.rel else -1, d.blockno))
    runs: list[list[BufferDesc]] = []
    for d in ordered:
        if runs:
            last = runs[-1]
            tail = last[-1]
            if tail.rel is d.rel and tail.blockno + 1 == d.blockno and len(last) < limit:
                last.append(d)
                continue
        runs.append([d])
    return runs


class BufferPool:
    """``nbuffers`` pages of ``page_size`` bytes in one aligned arena; see the module doc.

    Use it as ``async with BufferPool(...) as pool:``; leaving the block checkpoints
    (flushes and syncs) and closes every relation. ``direct=True`` opens relations with
    O_DIRECT (the arena is page-aligned); ``driver`` as for :func:`aiopg_io.open`.
    """

    def __init__(
        self,
        nbuffers: int,
        page_size: int = 8192,
        *,
        direct: bool = False,
        driver: str | DriverFactory | None = None,
        io_combine_limit: int = DEFAULT_IO_COMBINE_LIMIT,
    ) -> None:
        nbuffers = operator.index(nbuffers)
        page_size = operator.index(page_size)
        if nbuffers < 1:
            raise ValueError(f"nbuffers {nbuffers} must be at least 1")
        if page_size < 1:
            raise ValueError(f"page_size {page_size} must be positive")
        if io_combine_limit < 1:
            raise ValueError(f"io_combine_limit {io_combine_limit} must be at least 1")
        self.nbuffers = nbuffers
        self.page_size = page_size
        self.direct = direct
        self.driver = driver
        self.io_combine_limit = io_combine_limit
        self._arena = aligned_buffer(nbuffers * page_size)
        arena = self._arena
        self._descs = [BufferDesc(i, arena[i * page_size : (i + 1) * page_size]) for i in range(nbuffers)]
        self._sweep = ClockSweep(self._descs)
        self._zero_page = bytes(page_size)
        self._mapping: dict[tuple[int, int], BufferDesc] = {}
        self._relations: dict[tuple[int, int], Relation] = {}
        self._next_rel_id = 0
        self._tg: anyio.abc.TaskGroup | None = None
        self._state = "new"
        self._streams: weakref.WeakSet[ReadStream] = weakref.WeakSet()
        # Who holds pins, and who waits for a buffer: enough to tell a wait that will end
        # from one that cannot.
        self._pins_by_task: dict[Any, int] = {}
        self._waiting: set[Any] = set()
        self._changed: anyio.Event | None = None
        self._io_in_flight = 0
        # Counters.
        self.hits = 0
        self.misses = 0
        self.reads = 0
        self.blocks_read = 0
        self.evictions = 0
        self.writebacks = 0
        self.writes = 0
        self.blocks_written = 0
        self.syncs = 0
        self.last_distance = 0

    def __repr__(self) -> str:
        return f"<BufferPool nbuffers={self.nbuffers} page_size={self.page_size} {self._state}>"

    # -- life -------------------------------------------------------------------------------

    async def __aenter__(self) -> BufferPool:
        if self._state != "new":
            raise RuntimeError("a BufferPool is entered once (async with pool: ...)")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._state = "open"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            if self._state == "open":
                # Like trio's aclose: finish closing even when cancelled (a checkpoint cut short
                # would drop dirty pages); the cancellation is seen after.
                with anyio.CancelScope(shield=True):
                    await self.flush()
        finally:
            self._state = "closing"
            for stream in list(self._streams):
                stream.close()
            tg, self._tg = self._tg, None
            try:
                if tg is not None:
                    # Waits for look-ahead reads in flight. They never raise, so the body's
                    # exception (re-raised by returning None) is not wrapped in a group.
                    await tg.__aexit__(None, None, None)
            finally:
                with anyio.CancelScope(shield=True):
                    for rel in list(self._relations.values()):
                        self._drop_buffers(rel, force=True)
                        rel.closed = True
                        _forget_relation(rel)
                        await rel.file.aclose()
                    self._relations.clear()
                    self._pins_by_task.clear()
                self._state = "closed"
        return None

    def _check_open(self) -> None:
        if self._state != "open":
            if self._state == "new":
                raise RuntimeError("enter the pool first: async with BufferPool(...) as pool")
            raise ClosedError(f"the buffer pool is {self._state}")

    def _check_rel(self, rel: Relation) -> None:
        self._check_open()
        if rel.pool is not self:
            raise ValueError(f"relation {rel.path!r} belongs to another pool")
        if rel.closed:
            raise ClosedError(f"relation {rel.path!r} is closed")

    def _check_block(self, rel: Relation, blockno: int) -> None:
        if blockno < 0:
            raise BlockOutOfRangeError(f"block {blockno} of {rel.path!r}: a block number is never negative")
        if blockno >= rel.nblocks:
            raise BlockOutOfRangeError(
                f"block {blockno} is past the end of {rel.path!r}, which has {rel.nblocks} blocks "
                f"(blocks 0..{rel.nblocks - 1}); extend the relation first"
            )

    # -- relations --------------------------------------------------------------------------

    async def open(self, path: str | os.PathLike[str], create: bool = False) -> Relation:
        """Open a relation file (``create``: make it, empty, if missing). Opening a file that is
        already open in this pool gives the same Relation, by any path; one open in another
        pool of this process raises RelationInUseError."""
        self._check_open()
        spath = os.fsdecode(os.fspath(path))
        created = False
        if create:
            with contextlib.suppress(FileExistsError):
                await _paths.create(spath, self.driver)
                created = True
        file: AsyncFile = await aio_open(spath, "r+b", direct=self.direct, driver=self.driver)
        try:
            st = await file.stat()
            key = (st.st_dev, st.st_ino)
            existing = self._relations.get(key)
            if existing is not None:
                await file.aclose()
                return existing
            other = _OPEN_RELATIONS.get(key)
            if other is not None and not other.closed and other.pool is not self:
                raise RelationInUseError(
                    f"{spath!r} is already open as a relation in another buffer pool of this process "
                    f"({other.pool!r} at 0x{id(other.pool):x}, opened as {other.path!r}); two pools "
                    "would each cache the file's pages and serve stale ones after the other's "
                    "checkpoint: share that pool, or close the relation there first "
                    "(close_relation, or leave its async with)"
                )
            if st.st_size % self.page_size:
                raise RelationSizeError(
                    f"{spath!r} is {st.st_size} bytes, not a whole number of {self.page_size}-byte pages "
                    f"({st.st_size // self.page_size} pages and {st.st_size % self.page_size} bytes more): "
                    "not a relation of this page size, or cut short"
                )
            align = file.alignment
            if align is not None and (self.page_size % align.offset or self.page_size % align.memory):
                raise AlignmentError(
                    f"{spath!r}: page_size {self.page_size} is not a multiple of the direct-I/O alignment "
                    f"{align.block}; use a page size that is, or direct=False"
                )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await file.aclose()
            raise
        rel = Relation(self, self._next_rel_id, spath, file, st.st_size // self.page_size, key)
        rel.needs_dir_sync = created
        self._next_rel_id += 1
        self._relations[key] = rel
        _OPEN_RELATIONS[key] = rel
        return rel

    async def close_relation(self, rel: Relation) -> None:
        """Checkpoint ``rel``, forget its pages and close its file. Its pages must not be pinned."""
        if rel.closed:
            return
        self._check_rel(rel)
        await self.flush(rel)
        while True:
            busy = [d.io for d in self._descs if d.rel is rel and d.io is not None]
            if not busy:
                break
            await busy[0].done.wait()
        pinned = sum(1 for d in self._descs if d.rel is rel and d.refcount)
        if pinned:
            raise RuntimeError(f"relation {rel.path!r} still has {pinned} pinned pages; release them first")
        if any(d.rel is rel and d.dirty for d in self._descs):
            await self.flush(rel)  # dirtied while we waited
        self._drop_buffers(rel, force=False)
        rel.closed = True
        self._relations.pop(rel.key, None)
        _forget_relation(rel)
        with anyio.CancelScope(shield=True):
            await rel.file.aclose()

    def _drop_buffers(self, rel: Relation, *, force: bool) -> None:
        for d in self._descs:
            if d.rel is rel:
                del self._mapping[(rel.rel_id, d.blockno)]
                d.rel = None
                d.valid = d.dirty = False
                d.checkpoint_needed = set()
                d.data[:] = self._zero_page
                if force:
                    d.refcount = 0  # the pool is closing: pins left behind are void
                if d.refcount == 0 and d.io is None:
                    self._sweep.release_to_freelist(d)

    async def extend(self, rel: Relation, n: int = 1) -> int:
        """Add ``n`` zeroed blocks at the end of ``rel``; returns the first new block number."""
        self._check_rel(rel)
        n = operator.index(n)
        if n < 0:
            raise ValueError(f"extend by {n} blocks: the count must be >= 0")
        async with rel.extension_lock:
            first = rel.nblocks
            if n:
                try:
                    await rel.file.fallocate(first * self.page_size, n * self.page_size)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                        raise
                    await rel.file.truncate((first + n) * self.page_size)
                rel.nblocks = first + n
                rel.needs_sync = True
            return first

    # -- pins -------------------------------------------------------------------------------

    def _count_pin(self, owner: Any) -> None:
        self._pins_by_task[owner] = self._pins_by_task.get(owner, 0) + 1

    def _unpin(self, desc: BufferDesc, owner: Any, *, notify: bool = True) -> None:
        desc.refcount -= 1
        left = self._pins_by_task.get(owner, 0) - 1
        if left > 0:
            self._pins_by_task[owner] = left
        else:
            self._pins_by_task.pop(owner, None)
        if desc.refcount == 0:
            if desc.rel is None and desc.io is None:
                self._sweep.release_to_freelist(desc)
            if notify:
                self._notify()

    def _notify(self) -> None:
        ev = self._changed
        if ev is not None:
            self._changed = None
            ev.set()

    async def _wait_for_buffer(self, me: Any) -> None:
        """Wait until a pin is released or an I/O ends; raise when that cannot happen."""
        if self._io_in_flight == 0 and all(
            t is me or t in self._waiting or _finished(t) for t in self._pins_by_task
        ):
            pinned = sum(1 for d in self._descs if d.refcount)
            mine = self._pins_by_task.get(me, 0)
            self._notify()  # the others waiting re-check: they may be stuck too
            raise NoUnpinnedBuffersError(
                f"no unpinned buffers available: {pinned} of the pool's {self.nbuffers} buffers are "
                f"pinned ({mine} pins by this task, the rest by tasks that wait for a buffer too or have "
                "ended) and no "
                "I/O is in flight to free one; release pages (with page: ...) before reading more, read "
                "fewer at once, or make the pool larger"
            )
        if self._changed is None:
            self._changed = anyio.Event()
        ev = self._changed
        self._waiting.add(me)
        try:
            await ev.wait()
        finally:
            self._waiting.discard(me)

    def _claim(self, desc: BufferDesc, me: Any) -> BufferDesc:
        """Take a reusable, clean buffer for a new page: unmapped, pinned by ``me``. No await."""
        if desc.rel is not None:
            del self._mapping[(desc.rel.rel_id, desc.blockno)]
            desc.rel = None
            self.evictions += 1
        desc.valid = False
        desc.refcount = 1
        desc.usage_count = 1
        self._count_pin(me)
        return desc

    def _claim_clean_now(self, me: Any) -> BufferDesc | None:
        """A clean victim claimed at once, or None (none free, or the next one is dirty and
        must wait for a write-back): how a look-ahead widens a read it has already begun."""
        desc = self._sweep.victim()
        if desc is None or desc.dirty:
            return None
        return self._claim(desc, me)

    async def _get_victim(self, me: Any, *, wait: bool = True) -> BufferDesc | None:
        """A buffer for a new page, claimed and pinned by ``me``; None when ``wait`` is False
        and none is free now (a look-ahead that can make do with what it has)."""
        while True:
            desc = self._sweep.victim()
            if desc is None:
                if not wait:
                    return None
                await self._wait_for_buffer(me)
                continue
            if not desc.dirty:
                return self._claim(desc, me)
            await self._write_back(desc)
            if desc.reusable and not desc.dirty and desc.usage_count == 0:
                return self._claim(desc, me)

    # -- reads ------------------------------------------------------------------------------

    async def read_page(self, rel: Relation, blockno: int) -> Page:
        """The page ``blockno`` of ``rel``, pinned: use it as ``with await pool.read_page(...) as page``."""
        self._check_rel(rel)
        blockno = operator.index(blockno)
        self._check_block(rel, blockno)
        me = current_task_identity()
        tag = (rel.rel_id, blockno)
        while True:
            desc = self._mapping.get(tag)
            if desc is not None:
                desc.pin()
                self._count_pin(me)
                io = desc.io
                if io is not None:
                    try:
                        await io.done.wait()
                    except BaseException:
                        self._unpin(desc, me)
                        raise
                if desc.valid:
                    self.hits += 1
                    return Page(self, desc, me)
                self._unpin(desc, me)  # that read failed: try one of our own
                continue
            desc = await self._get_victim(me)
            assert desc is not None
            if tag in self._mapping or rel.closed:  # someone read it while we looked for room
                self._unpin(desc, me)
                self._check_rel(rel)
                continue
            self.misses += 1
            io = self._start_read(rel, blockno, [desc])
            try:
                await self._do_read(rel, blockno, [desc], io)
            except BaseException:
                self._unpin(desc, me)
                raise
            return Page(self, desc, me)

    def _start_read(self, rel: Relation, blockno: int, descs: list[BufferDesc]) -> InFlightIO:
        """Map claimed buffers to blocks ``blockno...`` and mark them under I/O. No await."""
        io = InFlightIO("read")
        for i, d in enumerate(descs):
            d.rel = rel
            d.blockno = blockno + i
            d.valid = False
            d.io = io
            self._mapping[(rel.rel_id, blockno + i)] = d
        self._io_in_flight += 1
        self.reads += 1
        self.blocks_read += len(descs)
        return io

    async def _do_read(self, rel: Relation, blockno: int, descs: list[BufferDesc], io: InFlightIO) -> None:
        ps = self.page_size
        try:
            if len(descs) == 1:
                got = await rel.file.preadinto(descs[0].data, blockno * ps)
            else:
                got = await rel.file.preadv([d.data for d in descs], blockno * ps)
            if got != len(descs) * ps:
                size = (await rel.file.stat()).st_size
                raise BlockOutOfRangeError(
                    f"reading blocks {blockno}..{blockno + len(descs) - 1} of {rel.path!r}: the file is "
                    f"{size} bytes now, shorter than the {rel.nblocks} blocks the pool knows of; it was "
                    "truncated outside the pool"
                )
        except BaseException as exc:
            io.error = exc
            for d in descs:
                # The security property: a failed read leaves zeros, never the previous page.
                d.data[:] = self._zero_page
                del self._mapping[(rel.rel_id, d.blockno)]
                d.rel = None
                d.valid = False
                d.io = None
                if d.refcount == 0:
                    self._sweep.release_to_freelist(d)
            raise
        else:
            for d in descs:
                d.valid = True
                d.io = None
        finally:
            self._io_in_flight -= 1
            io.done.set()
            self._notify()

    def _spawn_read(self, rel: Relation, blockno: int, descs: list[BufferDesc], io: InFlightIO) -> None:
        assert self._tg is not None
        self._tg.start_soon(self._background_read, rel, blockno, descs, io)

    async def _background_read(
        self, rel: Relation, blockno: int, descs: list[BufferDesc], io: InFlightIO
    ) -> None:
        # The error is kept in io.error; the stream raises it to its consumer in order.
        with contextlib.suppress(Exception):
            await self._do_read(rel, blockno, descs, io)

    def read_stream(
        self,
        rel: Relation,
        blocks: Iterable[int] | AsyncIterable[int],
        *,
        max_ios: int = 16,
        io_combine_limit: int | None = None,
    ) -> ReadStream:
        """Pinned pages of ``blocks``, in order, read ahead and combined (see ``_read_stream``)."""
        from ._read_stream import ReadStream

        self._check_rel(rel)
        limit = self.io_combine_limit if io_combine_limit is None else io_combine_limit
        return ReadStream(self, rel, blocks, max_ios=max_ios, io_combine_limit=limit)

    def stream_pin_limit(self) -> int:
        """The most pins a new read stream may hold: a fair share of the pool, half of it for
        the first stream, a third each for two, and so on (PostgreSQL's LimitAdditionalPins)."""
        return max(1, self.nbuffers // (2 + len(self._streams)))

    # -- writes -----------------------------------------------------------------------------

    async def _write_back(self, victim: BufferDesc) -> None:
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

        Each write takes along the checkpoints waiting for its buffers (``checkpoint_needed``)
        and, once it has completed, tells them; one that fails hands them back, so a
        checkpoint never counts a page as written before a write of it is done."""
        io = InFlightIO("write")
        for d in descs:
            d.io = io
            d.dirty = False
            io.carries[d] = d.checkpoint_needed
            d.checkpoint_needed = set()
        self._io_in_flight += 1
        errors: list[BaseException] = []
        try:
            runs = _runs(descs, self.io_combine_limit)
            if len(runs) == 1:
                await self._write_run(runs[0], io, errors)
            else:
                for i in range(0, len(runs), _FLUSH_RUNS_IN_FLIGHT):
                    async with anyio.create_task_group() as tg:
                        for run in runs[i : i + _FLUSH_RUNS_IN_FLIGHT]:
                            tg.start_soon(self._write_run, run, io, errors)
        finally:
            # A run that never started (cancelled before its first step) wrote nothing.
            self._unwritten(list(io.carries), io)
            for d in descs:
                d.io = None
            self._io_in_flight -= 1
            io.done.set()
            self._notify()
        if errors:
            raise errors[0]

    def _unwritten(self, run: list[BufferDesc], io: InFlightIO) -> None:
        for d in run:
            d.dirty = True
            d.checkpoint_needed |= io.carries.pop(d, set())

    async def _write_run(self, run: list[BufferDesc], io: InFlightIO, errors: list[BaseException]) -> None:
        rel = run[0].rel
        assert rel is not None
        if rel.sync_error is not None:
            self._unwritten(run, io)
            errors.append(self._sync_failed(rel))
            return
        offset = run[0].blockno * self.page_size
        try:
            if len(run) == 1:
                await rel.file.pwrite(run[0].data, offset)
            else:
                await rel.file.pwritev([d.data for d in run], offset)
        except BaseException as exc:
            self._unwritten(run, io)  # may or may not have reached the file: write it again
            if not isinstance(exc, Exception):
                raise
            errors.append(exc)
            return
        rel.needs_sync = True
        for d in run:
            for ckpt in io.carries.pop(d, ()):
                ckpt.written(d)
        self.writes += 1
        self.blocks_written += len(run)

    def _sync_failed(self, rel: Relation) -> OSError:
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

    async def flush(self, rel: Relation | None = None) -> None:
        """A checkpoint: write every page (of ``rel``, or of all relations) dirty when it
        starts, adjacent blocks combined, or wait for the write-back that writes it meanwhile;
        then fdatasync each relation written since its last sync."""
        if rel is not None:
            self._check_rel(rel)
        else:
            self._check_open()
        rels = [rel] if rel is not None else list(self._relations.values())
        ckpt = Checkpoint()
        for d in self._descs:
            if d.rel is None or (rel is not None and d.rel is not rel) or not d.valid:
                continue
            if d.dirty:
                d.checkpoint_needed.add(ckpt)
            elif d.io is not None and d.io.kind == "write":
                # Clean while being written: no change since that write began, so it holds
                # the page as of now; it is ours to wait for.
                d.io.carries.setdefault(d, set()).add(ckpt)
            else:
                continue
            ckpt.pending[d] = (d.rel, d.blockno)
        try:
            await self._write_pending(ckpt)
        finally:
            for d in ckpt.pending:  # cut short by an error or a cancellation
                d.checkpoint_needed.discard(ckpt)
        synced_dirs: set[str] = set()  # one fsync per directory per checkpoint
        for r in rels:
            if r.sync_error is not None:
                raise self._sync_failed(r)
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
                    raise self._sync_failed(r)
            if r.needs_dir_sync and not r.closed:
                directory = os.path.dirname(os.path.abspath(r.path))
                if directory not in synced_dirs:
                    await fsync_directory(directory, self.driver)
                    synced_dirs.add(directory)
                r.needs_dir_sync = False

    async def _write_pending(self, ckpt: Checkpoint) -> None:
        """Until no page of ``ckpt`` is pending: write those idle now (dirty, pinned or not),
        else wait for a write of one in flight, issued by anyone (a write-back, another
        checkpoint). A write that fails leaves its pages dirty and pending: one by another
        task is retried here, one of ours raises."""
        while ckpt.pending:
            todo: list[BufferDesc] = []
            busy: InFlightIO | None = None
            for d, (r, blockno) in list(ckpt.pending.items()):
                if d.rel is not r or d.blockno != blockno:
                    del ckpt.pending[d]  # dropped with its relation
                    d.checkpoint_needed.discard(ckpt)
                elif d.io is not None:
                    busy = d.io
                else:
                    d.checkpoint_needed.add(ckpt)  # there already; so the write we issue reports back
                    todo.append(d)
            if todo:
                await self._write_buffers(todo)
            elif busy is not None:
                await busy.done.wait()

    # -- introspection ----------------------------------------------------------------------

    def statistics(self) -> BufferPoolStatistics:
        return BufferPoolStatistics(
            nbuffers=self.nbuffers,
            page_size=self.page_size,
            pinned=sum(1 for d in self._descs if d.refcount),
            dirty=sum(1 for d in self._descs if d.dirty),
            hits=self.hits,
            misses=self.misses,
            reads=self.reads,
            blocks_read=self.blocks_read,
            evictions=self.evictions,
            writebacks=self.writebacks,
            writes=self.writes,
            blocks_written=self.blocks_written,
            syncs=self.syncs,
            look_ahead_distance=self.last_distance,
        )

    def _check_invariants(self) -> None:
        """For tests: the mapping table, pins and free list agree."""
        for (rel_id, blockno), d in self._mapping.items():
            assert d.rel is not None and d.rel.rel_id == rel_id and d.blockno == blockno, d
        mapped = sum(1 for d in self._descs if d.rel is not None)
        assert mapped == len(self._mapping), (mapped, len(self._mapping))
        assert sum(d.refcount for d in self._descs) == sum(self._pins_by_task.values()), self._pins_by_task
        for d in self._descs:
            assert d.refcount >= 0, d
            assert not (d.dirty and not d.valid), d
