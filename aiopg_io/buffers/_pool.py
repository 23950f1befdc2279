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
- **Dirty victims** are written back before reuse, and :meth:`BufferPool.flush` is a
  checkpoint: both are ``_writeback.py`` (a :class:`PageWriter` the pool owns).
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
  not durable until its directory is fsynced (fsync(2)); the next checkpoint does that
  (``_writeback.py``),
  so after ``flush`` the file survives a power cut along with its pages. The create and the
  directory fsync are ops (:mod:`aiopg_io._paths`), which aiopg_io.testing's power-loss
  simulator records like any other (docs/testing.md): that is how it is tested.
- **No registered io_uring buffers** for the arena: the io_uring driver does not register
  buffers (its module docstring says why), so the arena goes through ``readv``/``writev``
  like any other buffer; what registering would save is measured in docs/benchmarks.md
  ("Registered buffers"). If it is ever done, it belongs in the driver.
- **Reads for a run of blocks** are two calls, as PostgreSQL's ``StartReadBuffers`` /
  ``WaitReadBuffers``: :meth:`BufferPool.start_read_buffers` pins what is cached or starts
  one combined read of what is not and returns a :class:`ReadBuffersOperation`;
  :meth:`BufferPool.wait_read_buffers` waits for it. The read stream (``_read_stream.py``)
  is built on these two alone.
- **read_page's per-call cost** (issue 15 asks for a file ``preadinto`` plus a hash lookup;
  docs/benchmarks.md, "read_page's per-call cost", has the measures). The miss reads through
  the file's own ``preadinto``, on ``io_uring_c`` the ring path in C like any plain call, in
  ``read_page``'s own frame; the common hit and miss are spelled out there. What is left is
  Python the pool needs per call, each step measured and none large: the checks, the
  lookup, the pin and its holder's count, for a miss one step of the clock sweep, the
  eviction, the mapping entry and an ``InFlightIO``, then the :class:`Page` and its
  ``release``. Three steps cost more than they had to and were cut: the holder's name is
  the asyncio Task (the glue's ``current_task``, a C call; the coroutine costs a Python
  frame per pin), a released Page loses its ``__del__`` (the pool hands out a
  ``_PinnedPage``; ``release`` makes it a plain Page), and a read's ``InFlightIO`` makes no
  dict (a write's, :class:`~._descriptors.InFlightWrite`, has its ``carries``). The rest
  stays Python rather than C because what C could take is not where the gap is: with the
  file stubbed, the whole hit and the whole miss cost ~1 and ~2 µs, a C lookup-and-pin or
  claim-and-map would still leave the coroutine, the Page and its release, and the pool's
  cost in a real run is as large beside the pure driver as beside the C ring; getting
  near the issue's figure needs ``read_page`` itself (its awaitable and the Page) in C, as
  the file's ``RingRun`` is, with this as its twin.

Facts relied on (those about syncing are in ``_writeback.py``):
- **The arena's memory.** A direct write (or read) pins the user pages it covers when it is
  submitted (``pin_user_pages_fast``, the kernel's GUP-fast; Documentation/core-api/pin_user_pages.rst),
  a step per base page the arena is built of: with 4 KiB pages a checkpoint of a large pool
  pins tens of thousands of distinct pages, where fio reuses one small buffer. A transparent
  huge page is pinned as one 2 MiB folio. Python's ``mmap.mmap(-1, n)`` is ``MAP_SHARED``
  (the mmap module's docs), i.e. shmem, whose THP is off unless
  ``/sys/kernel/mm/transparent_hugepage/shmem_enabled`` allows it; private anonymous memory
  gets THP under the common ``enabled=madvise`` after ``madvise(MADV_HUGEPAGE)``
  (madvise(2); Documentation/admin-guide/mm/transhuge.rst). So the arena is private and
  advised (:func:`_arena`); the saving is measured in docs/benchmarks.md. Private memory is
  copy-on-write in a fork child, and before Linux 5.19 a page the parent writes after a fork
  can move away from a direct read in flight into it (``drivers/_memory.py`` states the
  facts), so the arena is also ``MADV_DONTFORK``: a child gets no copy of it at all (the pool
  is unusable there anyway, docs/guide.md, "Fork"), and a fork does not copy its page tables
  either. Where the mmap module has no flags (Windows) the arena is its anonymous map.
- A positional read of a regular file is short only at end of file (read(2)); here that
  means the file shrank under the pool, reported as BlockOutOfRangeError.
"""

from __future__ import annotations

import contextlib
import errno
import operator
import os
import sys
import warnings
import weakref
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from .. import _paths
from .._direct import private_memory
from .._glue import Glue, Park, current_glue
from .._open import open as aio_open
from ..drivers import DriverFactory
from ..errors import AlignmentError, ClosedError
from ._descriptors import BM_MAX_USAGE_COUNT, BufferDesc, ClockSweep, InFlightIO, io_views
from ._read_stream import ReadStream
from ._writeback import PageWriter
from .errors import (
    MAX_COMBINE_LIMIT,
    BlockOutOfRangeError,
    NoUnpinnedBuffersError,
    RelationInUseError,
    RelationSizeError,
    at_least_one,
    combine_limit,
)

if TYPE_CHECKING:
    from .._file import AsyncFile

__all__ = ["BufferPool", "BufferPoolStatistics", "Page", "PageRun", "ReadBuffersOperation", "Relation"]

#: Most blocks combined into one read or write by default: 128 KiB of 8 KiB pages, as
#: PostgreSQL's io_combine_limit.
DEFAULT_IO_COMBINE_LIMIT = 16
#: Most blocks combined into one write of write-back or a checkpoint by default (64: 512 KiB
#: of 8 KiB pages). Separate from the reads' limit: a write of many blocks costs the
#: submission and completion path about what a write of a few does, and PostgreSQL's
#: io_combine_limit does not govern its writes (docs/benchmarks.md has the measure).
DEFAULT_WRITE_COMBINE_LIMIT = 64

#: Every relation open in a pool of this process, by file identity (st_dev, st_ino): a second
#: pool is refused one (RelationInUseError). Weak, so a pool dropped unclosed holds nothing.
_OPEN_RELATIONS: weakref.WeakValueDictionary[tuple[int, int], Relation] = weakref.WeakValueDictionary()


def _arena(size: int) -> memoryview:
    """The pool's buffers: private anonymous memory (page-aligned, so it suits O_DIRECT),
    not inherited by a fork child and asked for transparent huge pages (see the module doc
    for why). Where the kernel has no THP the advice is refused or ignored and the arena is
    plain 4 KiB pages."""
    return memoryview(private_memory(size, "MADV_DONTFORK", "MADV_HUGEPAGE"))


def _forget_relation(rel: Relation) -> None:
    if _OPEN_RELATIONS.get(rel.key) is rel:
        del _OPEN_RELATIONS[rel.key]


def _no_task() -> object:
    raise RuntimeError("enter the pool first: async with BufferPool(...) as pool")


def _finished(owner: Any) -> bool:
    """True when the task whose coroutine is ``owner`` has ended (its frame is gone)."""
    return getattr(owner, "cr_frame", True) is None


def _pin_owner(glue: Glue) -> tuple[Callable[[], object], Callable[[Any], bool]]:
    """What names the running task as a pin's holder, and what tells a holder that ended:
    the glue's ``current_task`` and ``task_ended`` where it has them (asyncio: the Task, a
    C call; the coroutine, ``task_identity``, costs a Python frame per pin, measured in
    docs/benchmarks.md), else ``task_identity`` and :func:`_finished`."""
    current_task: Callable[[], object] | None = getattr(glue, "current_task", None)
    ended: Callable[[Any], bool] | None = getattr(glue, "task_ended", None)
    if current_task is not None and ended is not None:
        return current_task, ended
    return glue.task_identity, _finished


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


_Pinned = TypeVar("_Pinned", bound="_Pins")


def _revoke(view: memoryview) -> None:
    """Release a view handed out with a pin, so using it after the pin raises."""
    try:
        view.release()
    except BufferError:
        pass  # the caller still holds an export of it (numpy, ctypes): it cannot be revoked


class _Pins:
    """What :class:`Page` and :class:`PageRun` share: pins handed to a caller, released once
    (by :meth:`release` or leaving ``with``), their views revoked with them, and a
    ResourceWarning for pins dropped unreleased (PostgreSQL warns about a buffer refcount
    leak at end of transaction; a leaked pin would keep its buffers out of reach forever):
    :meth:`_dropped`, the ``__del__`` of the classes whose instances hold pins."""

    __slots__ = ("_released",)
    _released: bool

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Unpin the page(s) (idempotent)."""
        if self._released:
            return
        self._released = True
        self._revoke_views()
        self._unpin(notify=True)

    def __enter__(self: _Pinned) -> _Pinned:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _dropped(self) -> None:
        if getattr(self, "_released", True):
            return
        warnings.warn(self._never_released(), ResourceWarning, stacklevel=3, source=self)
        self._released = True
        self._unpin(notify=False)

    def _revoke_views(self) -> None:
        raise NotImplementedError

    def _unpin(self, *, notify: bool) -> None:
        raise NotImplementedError

    def _never_released(self) -> str:
        raise NotImplementedError


class Page(_Pins):
    """A pinned page: ``data`` is valid until the pin is released (``with page:`` or
    :meth:`release`). Call :meth:`mark_dirty` after changing ``data``; a change made after
    a checkpoint started needs another ``mark_dirty`` to reach the next one. Make a change
    with no await in it: a write that begins during an await may take the page half-changed
    (docs/guide.md, "Changing a page")."""

    # The pool hands a page out as a _PinnedPage (a Page with the __del__ that warns of a
    # pin dropped unreleased) and release() makes it a plain Page: a released page, as most
    # are when they are dropped, then costs no __del__ call (a Python frame per page,
    # measured in docs/benchmarks.md, "read_page's per-call cost").
    __slots__ = ("__weakref__", "_data", "_desc", "_owner", "_pool", "blockno", "rel")

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

    def mark_dirty(self) -> None:
        if self._released:
            raise ClosedError(
                f"page {self.blockno} of {self.rel.path!r} was released; mark it dirty while it is pinned"
            )
        self._desc.dirty = True

    def release(self) -> None:
        """Unpin the page (idempotent)."""
        # The base's steps spelled out, _revoke's and the pool's _unpin's too: a page is
        # released once per read_page.
        if self._released:
            return
        self._released = True
        self.__class__ = Page  # no __del__ from now on (see the class's opening comment)
        try:
            self._data.release()
        except BufferError:
            pass  # the caller still holds an export of it: it cannot be revoked
        desc = self._desc
        pool = self._pool
        pins = pool._pins_by_task
        owner = self._owner
        left = pins.get(owner, 0) - 1
        if left > 0:
            pins[owner] = left
        else:
            pins.pop(owner, None)
        desc.refcount -= 1
        if desc.refcount == 0:
            if desc.rel is None and desc.io is None:
                pool._sweep.release_to_freelist(desc)
            if pool._changed is not None:
                pool._notify()

    def _revoke_views(self) -> None:
        _revoke(self._data)

    def _unpin(self, *, notify: bool) -> None:
        self._pool._unpin(self._desc, self._owner, notify=notify)

    def _never_released(self) -> str:
        return f"page {self.blockno} of {self.rel.path!r} was never released"


class _PinnedPage(Page):
    """A :class:`Page` not released yet (see its doc): the same slots, and a ``__del__``."""

    __slots__ = ()

    def __del__(self) -> None:
        self._dropped()


class PageRun(_Pins):
    """Pinned pages of consecutive blocks, ``blockno`` to ``blockno + nblocks - 1`` of
    ``rel``: what one combined read brought in (or one page found in the pool), handed out
    at once by :meth:`ReadStream.runs` and :meth:`ReadBuffersOperation.take_run`.

    ``run[i]`` is the data of block ``blockno + i`` (a memoryview valid while the run is
    pinned; iterating gives them in order). The pins are released together, by
    :meth:`release` or leaving ``with run:``. As for a :class:`Page`: call
    :meth:`mark_dirty` after changing a page, with no await inside the change."""

    __slots__ = (
        "__weakref__",
        "_descs",
        "_owner",
        "_pool",
        "_views",
        "blockno",
        "nblocks",
        "rel",
    )

    def __init__(
        self, pool: BufferPool, rel: Relation, blockno: int, descs: list[BufferDesc], owner: Any
    ) -> None:
        self._pool = pool
        self.rel = rel
        self.blockno = blockno
        self.nblocks = len(descs)
        self._descs = descs
        self._owner = owner
        # Views of their own, released with the pins (as Page.data); made on first use, so
        # a run whose data is not looked at costs no view per page.
        self._views: list[memoryview] | None = None
        self._released = False

    def __repr__(self) -> str:
        state = "released" if self._released else "pinned"
        return f"<PageRun {self.rel.path!r} blocks {self.blockno}..{self.blockno + self.nblocks - 1} {state}>"

    def __len__(self) -> int:
        return self.nblocks

    def _check(self) -> None:
        if self._released:
            raise ClosedError(
                f"pages {self.blockno}..{self.blockno + self.nblocks - 1} of {self.rel.path!r} were "
                "released (unpinned)"
            )

    def _pages(self) -> list[memoryview]:
        if self._released:
            self._check()
        views = self._views
        if views is None:
            views = self._views = [d.data[:] for d in self._descs]
        return views

    def __getitem__(self, i: int) -> memoryview:
        return self._pages()[i]

    def __del__(self) -> None:
        self._dropped()

    def __iter__(self) -> Iterator[memoryview]:
        return iter(self._pages())

    def mark_dirty(self, i: int | None = None) -> None:
        """Mark the page ``run[i]`` dirty, or every page of the run when ``i`` is None."""
        self._check()
        if i is None:
            for d in self._descs:
                d.dirty = True
        else:
            self._descs[operator.index(i) if i >= 0 else self.nblocks + i].dirty = True

    def _revoke_views(self) -> None:
        if self._views is not None:
            for view in self._views:
                _revoke(view)

    def _unpin(self, *, notify: bool) -> None:
        self._pool._unpin_all(self._descs, self._owner, notify=notify)

    def _never_released(self) -> str:
        last = self.blockno + self.nblocks - 1
        return f"pages {self.blockno}..{last} of {self.rel.path!r} were never released"


class ReadBuffersOperation:
    """Blocks of a relation pinned by :meth:`BufferPool.start_read_buffers` (PostgreSQL's
    ``ReadBuffersOperation``): ``nblocks`` blocks from ``blockno``, handed out in order by
    :meth:`take` once :meth:`BufferPool.wait_read_buffers` has returned.

    ``started_read``: the call started one read of all of them. ``needs_wait``: an I/O was
    in flight on them when the call returned (that read, or another task's on a block found
    in the pool); otherwise every block was valid already. Dropping the operation, or
    :meth:`release`, unpins the blocks not taken."""

    __slots__ = (
        "_descs",
        "_io",
        "_owner",
        "_pool",
        "_taken",
        "_waited",
        "blockno",
        "nblocks",
        "rel",
        "started_read",
    )

    def __init__(
        self,
        pool: BufferPool,
        rel: Relation,
        blockno: int,
        descs: list[BufferDesc],
        owner: Any,
        io: InFlightIO | None,
        *,
        started_read: bool,
    ) -> None:
        self._pool = pool
        self.rel = rel
        self.blockno = blockno
        self.nblocks = len(descs)
        # None: a pin given up (taken, released, or being replaced by a read of our own).
        self._descs: list[BufferDesc | None] = list(descs)
        self._owner = owner
        self._io = io
        self._taken = 0
        self._waited = io is None  # wait_read_buffers returned (or there is nothing to wait for)
        self.started_read = started_read

    def __repr__(self) -> str:
        return (
            f"<ReadBuffersOperation {self.rel.path!r} blocks {self.blockno}.."
            f"{self.blockno + self.nblocks - 1} taken={self._taken}{' read' if self.started_read else ''}>"
        )

    @property
    def needs_wait(self) -> bool:
        return self._io is not None

    @property
    def taken(self) -> int:
        """How many pages :meth:`take` has handed out."""
        return self._taken

    def take(self) -> Page:
        """The next block's page, pinned (the operation's pin passes to it). Only after
        :meth:`BufferPool.wait_read_buffers` returned; IndexError when all were taken."""
        if self._taken >= self.nblocks:
            raise IndexError(
                f"all {self.nblocks} pages of {self!r} were taken (or released); start another read"
            )
        desc = self._descs[self._taken]
        if desc is None or not desc.valid or not self._waited:
            raise RuntimeError(f"{self!r}: await pool.wait_read_buffers(op) before taking its pages")
        self._descs[self._taken] = None
        self._taken += 1
        return _PinnedPage(self._pool, desc, self._owner)

    def take_run(self) -> PageRun:
        """Every page not taken yet, at once, as one :class:`PageRun` (the operation's pins
        pass to it). As :meth:`take`: only after :meth:`BufferPool.wait_read_buffers`
        returned; IndexError when all were taken."""
        start = self._taken
        if start >= self.nblocks:
            raise IndexError(
                f"all {self.nblocks} pages of {self!r} were taken (or released); start another read"
            )
        if not self._waited:  # then wait_read_buffers made every page not taken valid
            raise RuntimeError(f"{self!r}: await pool.wait_read_buffers(op) before taking its pages")
        descs = self._descs[start:]
        self._descs[start:] = [None] * len(descs)
        self._taken = self.nblocks
        return PageRun(self._pool, self.rel, self.blockno + start, descs, self._owner)  # type: ignore[arg-type]

    def release(self) -> None:
        """Unpin the blocks not taken (idempotent); a read in flight ends in the background."""
        self._release(notify=True)

    def _release(self, *, notify: bool) -> None:
        for i in range(self._taken, self.nblocks):
            desc = self._descs[i]
            if desc is not None:
                self._descs[i] = None
                self._pool._unpin(desc, self._owner, notify=notify)
        self._taken = self.nblocks

    def __del__(self) -> None:
        # Abandoned (a stream left by `break`): give the pins back, without waking anyone from
        # a finalizer, as Page.__del__ does.
        if getattr(self, "_descs", None) is not None:
            self._release(notify=False)


class BufferPool:
    """``nbuffers`` pages of ``page_size`` bytes in one aligned arena; see the module doc.

    Use it as ``async with BufferPool(...) as pool:``; leaving the block checkpoints
    (flushes and syncs) and closes every relation. ``direct=True`` opens relations with
    O_DIRECT (the arena is page-aligned); ``driver`` as for :func:`aiopg_io.open`.

    ``io_combine_limit`` (blocks, 16 by default) is the most a read combines (a read
    stream's default); ``write_combine_limit`` (blocks, 64 by default) the most adjacent
    dirty blocks one write of write-back or a checkpoint combines. Each is 1 to 128, else
    ValueError naming the value and the bound: 128 is PostgreSQL 18's bound on
    io_combine_limit and io_max_combine_limit (PG_IOV_MAX, 1 MB of 8 KiB pages).
    ``nbuffers`` and ``page_size`` are at least 1 and their product (the arena's bytes) at
    most ``sys.maxsize``, else ValueError naming them; a bool for any count is TypeError.
    """

    def __init__(
        self,
        nbuffers: int,
        page_size: int = 8192,
        *,
        direct: bool = False,
        driver: str | DriverFactory | None = None,
        io_combine_limit: int = DEFAULT_IO_COMBINE_LIMIT,
        write_combine_limit: int = DEFAULT_WRITE_COMBINE_LIMIT,
    ) -> None:
        nbuffers = at_least_one("nbuffers", nbuffers)
        page_size = at_least_one("page_size", page_size)
        if nbuffers * page_size > sys.maxsize:  # mmap would raise OverflowError, naming neither
            raise ValueError(
                f"nbuffers {nbuffers} x page_size {page_size} is {nbuffers * page_size} bytes, "
                f"past the largest arena, {sys.maxsize} bytes"
            )
        io_combine_limit = combine_limit("io_combine_limit", io_combine_limit)
        write_combine_limit = combine_limit("write_combine_limit", write_combine_limit)
        self.nbuffers = nbuffers
        self.page_size = page_size
        self.direct = direct
        self.driver = driver
        self.io_combine_limit = io_combine_limit
        self.write_combine_limit = write_combine_limit
        self._arena = _arena(nbuffers * page_size)
        arena = self._arena
        self._descs = [BufferDesc(i, arena[i * page_size : (i + 1) * page_size]) for i in range(nbuffers)]
        self._sweep = ClockSweep(self._descs)
        self._zero_page = bytes(page_size)
        self._mapping: dict[tuple[int, int], BufferDesc] = {}
        self._victims: list[BufferDesc] = []  # read_page's sweep result; empty between calls
        self._relations: dict[tuple[int, int], Relation] = {}
        self._next_rel_id = 0
        self._state = "new"
        self._streams: weakref.WeakSet[ReadStream] = weakref.WeakSet()
        # Who holds pins, and who waits for a buffer: enough to tell a wait that will end
        # from one that cannot.
        self._pins_by_task: dict[Any, int] = {}
        self._waiting: set[Any] = set()
        self._changed: anyio.Event | None = None
        self._io_in_flight = 0
        # The glue of the loop the pool was entered on (its files belong to that loop too):
        # pins and waits ask it directly instead of finding the running loop each time.
        self._glue: Glue | None = None
        self._task_identity: Callable[[], object] = _no_task
        self._task_ended: Callable[[Any], bool] = _finished
        self._writer = PageWriter(
            self._arena,
            self._descs,
            self._sweep,
            page_size=page_size,
            write_combine_limit=write_combine_limit,
            driver=driver,
            io_started=self._io_started,
            io_ended=self._io_ended,
            park=self._new_park,
        )
        # Counters (the writer keeps those of writes).
        self.hits = 0
        self.misses = 0
        self.reads = 0
        self.blocks_read = 0
        self.evictions = 0
        self.last_distance = 0  # set by the read stream that moved last

    def __repr__(self) -> str:
        return f"<BufferPool nbuffers={self.nbuffers} page_size={self.page_size} {self._state}>"

    # -- life -------------------------------------------------------------------------------

    async def __aenter__(self) -> BufferPool:
        if self._state != "new":
            raise RuntimeError("a BufferPool is entered once (async with pool: ...)")
        glue = self._glue = current_glue()
        self._task_identity, self._task_ended = _pin_owner(glue)
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
            try:
                with anyio.CancelScope(shield=True):
                    await self._drain_io()  # look-ahead reads in flight own their buffers
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
            await busy[0].wait(self._new_park)
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
                d.checkpoint_needed = 0
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
            if notify and self._changed is not None:
                self._notify()

    def _unpin_all(self, descs: list[BufferDesc], owner: Any, *, notify: bool = True) -> None:
        """:meth:`_unpin` of each of ``descs``, with one pass of bookkeeping for them all."""
        freed = False
        for desc in descs:
            desc.refcount -= 1
            if desc.refcount == 0:
                freed = True
                if desc.rel is None and desc.io is None:
                    self._sweep.release_to_freelist(desc)
        left = self._pins_by_task.get(owner, 0) - len(descs)
        if left > 0:
            self._pins_by_task[owner] = left
        else:
            self._pins_by_task.pop(owner, None)
        if freed and notify:
            self._notify()

    async def _drain_io(self) -> None:
        """Return once no read or write of the pool's is in flight."""
        while self._io_in_flight:
            busy = next((d.io for d in self._descs if d.io is not None), None)
            if busy is None:
                await anyio.sleep(0)  # counted but on no buffer yet: it is being set up
            else:
                await busy.wait(self._new_park)

    def _new_park(self) -> Park:
        """A one-shot wake-up on the pool's loop (for a wait on an :class:`InFlightIO`)."""
        assert self._glue is not None
        return self._glue.park()

    def _notify(self) -> None:
        ev = self._changed
        if ev is not None:
            self._changed = None
            ev.set()

    def _io_started(self) -> None:
        self._io_in_flight += 1

    def _io_ended(self, io: InFlightIO) -> None:
        """A read or write ended: wake whoever waits for it, or for a buffer."""
        self._io_in_flight -= 1
        io.finish()
        if self._changed is not None:
            self._notify()

    async def _wait_for_buffer(self, me: Any) -> None:
        """Wait until a pin is released or an I/O ends; raise when that cannot happen."""
        if self._io_in_flight == 0 and all(
            t is me or t in self._waiting or self._task_ended(t) for t in self._pins_by_task
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

    def _claim_clean_now(
        self, me: Any, n: int, into: list[BufferDesc], first: BufferDesc | None = None
    ) -> BufferDesc | None:
        """Claim up to ``n`` clean victims now (``first``, a reusable clean buffer, before
        any the sweep finds): each leaves the mapping table (an eviction) and is pinned by
        ``me``, appended to ``into``, all with one pass of pin bookkeeping and no await.
        Fewer when the sweep finds none free, or a dirty one, which must be written back
        first: that one is returned (else None). The one place a buffer is claimed, for a
        miss (``n`` = 1) and for the blocks a look-ahead adds to a read it has begun."""
        start = len(into)
        stopped_at = None
        if first is not None:
            first.refcount = 1
            into.append(first)
            n -= 1
        if n:
            stopped_at = self._sweep.clean_victims(n, into)
        got = len(into) - start
        if got:
            mapping = self._mapping
            for i in range(start, len(into)):
                desc = into[i]
                rel = desc.rel
                if rel is not None:
                    del mapping[(rel.rel_id, desc.blockno)]
                    desc.rel = None
                    self.evictions += 1
                desc.valid = False
                desc.usage_count = 1  # pinned by the sweep already
            self._pins_by_task[me] = self._pins_by_task.get(me, 0) + got
        return stopped_at

    async def _get_victim(
        self, me: Any, found: BufferDesc | None = None, *, wait: bool = True
    ) -> BufferDesc | None:
        """A buffer for a new page, claimed and pinned by ``me``; None when ``wait`` is False
        and none is free now (a look-ahead that can make do with what it has). ``found``:
        the dirty victim :meth:`_claim_clean_now` stopped at, to write back first. The slow
        path of a miss: the caller tried :meth:`_claim_clean_now` already."""
        into: list[BufferDesc] = []
        while True:
            if found is None:
                found = self._claim_clean_now(me, 1, into)
                if into:
                    return into[0]
            if found is None:
                if not wait:
                    return None
                await self._wait_for_buffer(me)
                continue
            desc, found = found, None
            await self._writer.write_back(desc)
            if desc.refcount == 0 and desc.io is None and not desc.dirty and desc.usage_count == 0:
                self._claim_clean_now(me, 1, into, first=desc)
                return into[0]

    # -- reads ------------------------------------------------------------------------------

    async def read_page(self, rel: Relation, blockno: int) -> Page:
        """The page ``blockno`` of ``rel``, pinned: use it as ``with await pool.read_page(...) as page``."""
        if rel.pool is not self or rel.closed or self._state != "open":
            self._check_rel(rel)
        blockno = operator.index(blockno)
        if not 0 <= blockno < rel.nblocks:
            self._check_block(rel, blockno)
        me = self._task_identity()
        mapping = self._mapping
        tag = (rel.rel_id, blockno)
        desc = mapping.get(tag)
        pins = self._pins_by_task
        if desc is None:
            # The common miss, in line to the end: one step of the sweep for a clean victim,
            # claimed with no await since the lookup (the block is still missing), then
            # _read_one spelled out, so the read's await is this frame's own (one coroutine
            # fewer to create, and to pass through at each of the read's suspends and resumes).
            victims = self._victims
            dirty = self._sweep.clean_victims(1, victims)
            if not victims:  # a dirty victim to write back first, or none free now
                return _PinnedPage(self, await self._pin_block(rel, blockno, me, swept=True, dirty=dirty), me)
            desc = victims.pop()
            old = desc.rel
            if old is not None:  # an eviction
                del mapping[(old.rel_id, desc.blockno)]
                self.evictions += 1
            desc.usage_count = 1  # pinned by the sweep already
            pins[me] = pins.get(me, 0) + 1
            # Mapped and marked under I/O before the read: whoever wants the block meanwhile
            # pins it and waits on ``io`` (one read, never two).
            io = InFlightIO("read")
            desc.rel = rel
            desc.blockno = blockno
            desc.valid = False
            desc.io = io
            mapping[tag] = desc
            self._io_in_flight += 1
            self.misses += 1
            self.reads += 1
            self.blocks_read += 1
            try:
                nbytes = await rel.file.preadinto(desc.data, blockno * self.page_size)
            except BaseException as exc:
                self._read_one_failed(rel, blockno, desc, io, me, 0, exc)
                raise
            if nbytes != self.page_size:
                raise self._read_one_failed(rel, blockno, desc, io, me, nbytes, None)
            desc.valid = True
            desc.io = None
            self._io_in_flight -= 1
            io.finish()
            if self._changed is not None:
                self._notify()
            return _PinnedPage(self, desc, me)
        if desc.io is None and desc.valid:
            # The common hit, in line: a lookup and a pin (BufferDesc.pin and _count_pin).
            desc.refcount += 1
            if desc.usage_count < BM_MAX_USAGE_COUNT:
                desc.usage_count += 1
            pins[me] = pins.get(me, 0) + 1
            self.hits += 1
            return _PinnedPage(self, desc, me)
        return _PinnedPage(self, await self._pin_block(rel, blockno, me), me)

    async def _pin_block(
        self, rel: Relation, blockno: int, me: Any, *, swept: bool = False, dirty: BufferDesc | None = None
    ) -> BufferDesc:
        """The buffer of a block in range, pinned by ``me`` and valid: found, or read now.
        ``swept``: the caller found the block missing and took a step of the sweep with no
        await since, which found no clean victim, but perhaps ``dirty`` (to write back)."""
        tag = (rel.rel_id, blockno)
        mapping = self._mapping
        while True:
            if swept:
                swept = False
            else:
                desc = mapping.get(tag)
                if desc is not None:
                    desc.pin()
                    self._count_pin(me)
                    io = desc.io
                    if io is not None:
                        try:
                            await io.wait(self._new_park)
                        except BaseException:
                            self._unpin(desc, me)
                            raise
                    if desc.valid:
                        self.hits += 1
                        return desc
                    self._unpin(desc, me)  # that read failed: try one of our own
                    continue
                claimed: list[BufferDesc] = []
                dirty = self._claim_clean_now(me, 1, claimed)
                if claimed:
                    # No await since the lookup: the block is still missing.
                    return await self._read_one(rel, blockno, claimed[0], me)
            desc = await self._get_victim(me, dirty)
            assert desc is not None
            if tag in mapping or rel.closed:  # someone read it while we looked for room
                self._unpin(desc, me)
                self._check_rel(rel)
                continue
            return await self._read_one(rel, blockno, desc, me)

    async def _read_one(self, rel: Relation, blockno: int, desc: BufferDesc, me: Any) -> BufferDesc:
        """Read block ``blockno`` into ``desc``, claimed and pinned by ``me`` for it (the block
        is not in the mapping table): ``desc``, valid, or the read's error raised, unpinned.
        (read_page's common miss has this spelled out.)

        One page, and this task waits for it anyway: the file's own awaited read (what a
        plain preadinto costs), its completion work done here once it returns. Others that
        want the block meanwhile wait on its ``io``. Cancelled, the read has ended all the
        same when the cancellation arrives here (the op is reaped first, or was never
        submitted): its page is then dropped as a failed read's."""
        io = self._map_read(rel, blockno, [desc])
        self.misses += 1
        try:
            nbytes = await rel.file.preadinto(desc.data, blockno * self.page_size)
        except BaseException as exc:
            self._read_one_failed(rel, blockno, desc, io, me, 0, exc)
            raise
        if nbytes != self.page_size:
            raise self._read_one_failed(rel, blockno, desc, io, me, nbytes, None)
        desc.valid = True
        desc.io = None
        self._io_ended(io)
        return desc

    def _read_one_failed(
        self,
        rel: Relation,
        blockno: int,
        desc: BufferDesc,
        io: InFlightIO,
        me: Any,
        nbytes: int,
        error: BaseException | None,
    ) -> BaseException:
        """A read of one page into ``desc`` failed (``error``) or came back short
        (``nbytes``): the page dropped as :meth:`_read_done` drops it, the error given to its
        waiters, ``me``'s pin released; the error to raise."""
        self._read_done(rel, blockno, [desc], io, nbytes, error)
        self._unpin(desc, me)
        assert io.error is not None
        return io.error

    async def start_read_buffers(
        self, rel: Relation, blockno: int, nblocks: int, *, wait: bool = True
    ) -> ReadBuffersOperation | None:
        """Start reading up to ``nblocks`` blocks of ``rel`` from ``blockno``, as PostgreSQL's
        ``StartReadBuffers()``; return the operation, whose buffers are pinned.

        The operation covers a prefix of the blocks asked for (``op.nblocks``, at least 1):

        - If block ``blockno`` is in the pool, it alone: pinned, counted as a hit. It may be
          under I/O by another task (``op.needs_wait``).
        - Otherwise the consecutive blocks from ``blockno`` that are not in the pool, up to
          ``nblocks``, the end of the relation, or as many buffers as are free now (the
          first may wait for one, see ``wait``): buffers are claimed for them and one read
          of them all starts (``op.started_read``, ``op.needs_wait``). No task is spawned
          for it: its completion marks the buffers valid, or failed, where it is reaped.

        The caller continues with the block after ``op.nblocks`` in a new call if it wants
        the rest. Before a page of the operation is used, :meth:`wait_read_buffers` must be
        called on it (it returns at once when nothing is left to wait for); then
        :meth:`ReadBuffersOperation.take` hands the pages out in block order, each pinned
        until released. :meth:`ReadBuffersOperation.release` unpins the ones not taken; a
        started read goes on in the background either way, and its buffers are never
        handed out before it has completed.

        ``wait=False``: return None, having pinned nothing, instead of waiting when the
        first missing block finds no buffer free now (a look-ahead that has pages to return
        meanwhile). With ``wait=True`` it waits as :meth:`read_page` does, or raises
        NoUnpinnedBuffersError when waiting cannot help. A block out of range raises
        BlockOutOfRangeError, and ``nblocks`` below 1 or above 128 (the bound on
        ``io_combine_limit``: PostgreSQL asserts the same of its ``nblocks``) ValueError
        naming the value and the bound, before anything is pinned.
        """
        if rel.pool is not self or rel.closed or self._state != "open":
            self._check_rel(rel)
        blockno = operator.index(blockno)
        if nblocks.__class__ is not int or not 1 <= nblocks <= MAX_COMBINE_LIMIT:
            nblocks = combine_limit("nblocks", nblocks)  # raises, or an int-like made an int
        if not 0 <= blockno < rel.nblocks:
            self._check_block(rel, blockno)
        me = self._task_identity()
        mapping = self._mapping
        rel_id = rel.rel_id
        while True:
            desc = mapping.get((rel_id, blockno))
            if desc is not None:
                desc.pin()
                self._count_pin(me)
                self.hits += 1
                return ReadBuffersOperation(self, rel, blockno, [desc], me, desc.io, started_read=False)
            want = 1
            limit = min(nblocks, rel.nblocks - blockno)
            while want < limit and (rel_id, blockno + want) not in mapping:
                want += 1
            descs: list[BufferDesc] = []
            dirty = self._claim_clean_now(me, want, descs)
            if not descs:
                # The slow path: a write-back or a wait for a buffer; then widen the read
                # with what is free, and look again at what the await let other tasks read.
                first = await self._get_victim(me, dirty, wait=wait)
                if first is None:
                    return None
                claimed = [first]
                if want > 1:
                    self._claim_clean_now(me, want - 1, claimed)
                n = 0
                if not rel.closed:
                    end = min(len(claimed), rel.nblocks - blockno)
                    while n < end and (rel_id, blockno + n) not in mapping:
                        n += 1
                for d in claimed[n:]:
                    self._unpin(d, me)
                if n == 0:
                    self._check_rel(rel)
                    continue  # the first block is a hit now
                descs = claimed[:n]
            self.misses += len(descs)
            try:
                io = await self._start_read(rel, blockno, descs)
            except BaseException:
                self._unpin_all(descs, me)
                raise
            return ReadBuffersOperation(self, rel, blockno, descs, me, io, started_read=True)

    async def wait_read_buffers(self, op: ReadBuffersOperation) -> None:
        """Wait until the pages of ``op`` not yet taken are valid, as PostgreSQL's
        ``WaitReadBuffers()``: for the read ``op`` started, or for the I/O another task had
        in flight on its block.

        If ``op``'s own read failed, its error is raised here (the same exception each time
        it is called); the pins stay with ``op`` until released. If another task's read of a
        block failed, the block is read again here, as a backend does that finds
        ``BM_VALID`` still clear after ``WaitIO``. Cancelled while it waits, the pins stay
        with ``op`` as well. Calling it again, or on an operation that needs no wait,
        returns at once.
        """
        if op._waited:
            return
        io = op._io
        if io is not None:
            if not io.done:
                await io.wait(self._new_park)
            if op.started_read:
                if io.error is not None:
                    raise io.error
                # Our own read completed whole: it made every one of its buffers valid, and
                # the operation's pins kept them from being reused since.
                op._waited = True
                return
        for i in range(op._taken, op.nblocks):
            desc = op._descs[i]
            if desc is None or desc.valid:
                continue
            # Another task's read of it failed: read it ourselves, as that task would retry.
            op._descs[i] = None
            self._unpin(desc, op._owner)
            op._descs[i] = await self._pin_block(op.rel, op.blockno + i, op._owner)
        op._waited = True

    async def _start_read(self, rel: Relation, blockno: int, descs: list[BufferDesc]) -> InFlightIO:
        """:meth:`_map_read`, then issue the read that fills the buffers; its completion runs
        :meth:`_read_done` where it is reaped. If it cannot be issued (cancelled while
        waiting for a slot, refused by a check), it has failed: its buffers are unmapped,
        and the error is raised here too."""
        io = self._map_read(rel, blockno, descs)

        def done(nbytes: int, error: OSError | None) -> None:
            self._read_done(rel, blockno, descs, io, nbytes, error)

        try:
            views = io_views(self._arena, descs, self.page_size)
            await rel.file.start_preadv(views, blockno * self.page_size, done)
        except BaseException as exc:
            if not io.done:
                self._read_done(rel, blockno, descs, io, 0, exc)
            raise
        return io

    def _map_read(self, rel: Relation, blockno: int, descs: list[BufferDesc]) -> InFlightIO:
        """Map claimed buffers to blocks ``blockno...`` and mark them under the read that
        will fill them (returned; :meth:`_read_done` ends it). No await."""
        io = InFlightIO("read")
        mapping = self._mapping
        rel_id = rel.rel_id
        b = blockno
        for d in descs:
            d.rel = rel
            d.blockno = b
            d.io = io
            mapping[(rel_id, b)] = d
            b += 1
        self._io_in_flight += 1
        self.reads += 1
        self.blocks_read += len(descs)
        return io

    def _read_done(
        self,
        rel: Relation,
        blockno: int,
        descs: list[BufferDesc],
        io: InFlightIO,
        nbytes: int,
        error: BaseException | None,
    ) -> None:
        """A read ended (a completion callback: nothing here may raise). Its buffers become
        valid, or, when it failed or came back short, zeros and unmapped; its waiters wake."""
        if error is None and nbytes != len(descs) * self.page_size:
            try:
                size = f"{os.fstat(rel.file.fileno()).st_size} bytes now"
            except (OSError, ValueError):
                size = "shorter now"
            error = BlockOutOfRangeError(
                f"reading blocks {blockno}..{blockno + len(descs) - 1} of {rel.path!r}: the file is "
                f"{size}, shorter than the {rel.nblocks} blocks the pool knows of; it was "
                "truncated outside the pool"
            )
        if error is None:
            for d in descs:
                d.valid = True
                d.io = None
        else:
            io.error = error
            for d in descs:
                # The security property: a failed read leaves zeros, never the previous page.
                d.data[:] = self._zero_page
                if d.rel is not None:  # not dropped with its relation meanwhile
                    del self._mapping[(d.rel.rel_id, d.blockno)]
                    d.rel = None
                d.valid = False
                d.io = None
                if d.refcount == 0:
                    self._sweep.release_to_freelist(d)
        self._io_ended(io)

    def read_stream(
        self,
        rel: Relation,
        blocks: Iterable[int] | AsyncIterable[int],
        *,
        max_ios: int = 16,
        io_combine_limit: int | None = None,
    ) -> ReadStream:
        """Pinned pages of ``blocks``, in order, read ahead and combined (see ``_read_stream``)."""
        self._check_rel(rel)
        limit = self.io_combine_limit if io_combine_limit is None else io_combine_limit
        stream = ReadStream(self, rel, blocks, max_ios=max_ios, io_combine_limit=limit)
        self._streams.add(stream)
        return stream

    def stream_pin_limit(self) -> int:
        """The most pins a new read stream may hold: a fair share of the pool, half of it for
        the first stream, a third each for two, and so on (PostgreSQL's LimitAdditionalPins)."""
        return max(1, self.nbuffers // (2 + sum(1 for s in self._streams if not s.closed)))

    # -- writes -----------------------------------------------------------------------------

    async def flush(self, rel: Relation | None = None) -> None:
        """A checkpoint: write every page (of ``rel``, or of all relations) dirty when it
        starts, adjacent blocks combined, or wait for the write-back that writes it meanwhile;
        then fdatasync each relation written since its last sync."""
        if rel is not None:
            self._check_rel(rel)
        else:
            self._check_open()
        rels = [rel] if rel is not None else list(self._relations.values())
        await self._writer.checkpoint(rels, rel)

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
            writebacks=self._writer.writebacks,
            writes=self._writer.writes,
            blocks_written=self._writer.blocks_written,
            syncs=self._writer.syncs,
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
