"""The binary file object: a cursor API (aiofiles/anyio compatible) over positional ops.

Every byte moves through an :class:`Op` on the file's IOContext: the cursor calls (read,
write, readline, ...) keep a logical position and a buffer in Python and issue positional
reads and writes; there is no second code path and no ``lseek``.

Buffering matches ``io.BufferedRandom`` where it is observable on a regular file: a read
returns what Python's ``open()`` would return, writes are buffered until ``flush``/``seek``/
``close`` or until the buffer fills, and a read after writes sees them. The buffer size is
``buffering`` (or 64 KiB), larger than io's 8 KiB because each refill here costs a loop
round trip, not just a system call.

Direct files (``direct=True``): positional calls must be aligned (buffer address, offset,
length; see :mod:`aiopg_io._direct`) and raise AlignmentError before any system call
otherwise. Cursor *reads* work at any position and size, through an aligned bounce buffer.
Cursor *writes* go out unbuffered and must start at an aligned position and have an aligned
length (the data itself may be anywhere: it is copied into an aligned buffer); otherwise
AlignmentError. Text mode is refused on direct files.

Concurrency: positional calls from many tasks run concurrently (that is the point).
Cursor calls from several tasks are serialised in arrival order, as ``io.Buffered*``
serialises threads with its lock.

Offsets: ``off_t`` is 64 bits on every platform aiopg_io runs on (CPython is built with
large-file support), and Linux refuses a transfer whose end passes ``2**63 - 1``
(``rw_verify_area`` in fs/read_write.c). Larger values would wrap in a C field (POSIX AIO's
``aio_offset``) or overflow in a thread, so every offset and every transfer's end is checked
here, before any driver sees it: InvalidOffsetError names the path, the value and the limit.

Cancellation and writes: a write op that was cancelled may still have happened, in part or
whole (docs/guide.md). The op counts what reached the file (``Op.transferred``) whatever
ended it, so a cursor write moves the cursor past those bytes and keeps only the rest
buffered: no byte is written twice, which in append mode would add it to the file again.

Ownership: a file's I/O runs on the event loop that opened it (see :mod:`aiopg_io._context`).
Elsewhere every call raises WrongLoopError, except ``aclose()``, which works anywhere: it
writes what is buffered with blocking calls (as the finalizer of an unclosed file does,
and as CPython's own files do) and frees the fd once no op of the owner's still uses it.
"""

from __future__ import annotations

import errno
import io
import os
import stat as stat_mod
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal

import anyio

from ._checks import (
    FALLOCATE_MODE_MAX,
    as_int,
    check_end,
    file_offset,
    optional_int,
    readable_view,
    vector_views,
    writable_view,
)
from ._context import IOContext
from ._direct import Alignment, aligned_buffer, check_aligned, fd_is_direct
from ._glue import coroutine_function
from ._handoff import FifoLock
from .drivers.base import OFF_T_MAX, SYNC_FSYNC, DriverStatistics, Op, OpKind, OpState
from .errors import AlignmentError, ClosedError, InvalidOffsetError

__all__ = ["DEFAULT_BUFFER_SIZE", "AsyncFile"]

DEFAULT_BUFFER_SIZE = 64 * 1024
_MAX_READ_CHUNK = 64 * 1024 * 1024  # one op never asks for more; readall loops
_LINE = b"\n"
# Offsets below this cannot reach OFF_T_MAX with any buffer this process could hold, so
# the exact check of a transfer's end is skipped for them (one compare per op).
_NEAR_OFF_T_MAX = OFF_T_MAX - 2**56


class AsyncFile:
    """A file opened in binary mode by :func:`aiopg_io.open`.

    Cursor calls mirror ``io.BufferedRandom`` (as aiofiles and ``anyio.open_file`` expose
    them, all awaitable); positional calls (``pread``, ``pwrite``, ...) leave the cursor
    alone and may run concurrently.
    """

    def __init__(
        self,
        fd: int,
        name: str | int,
        mode: str,
        ctx: IOContext,
        *,
        readable: bool,
        writable: bool,
        appending: bool,
        direct: bool,
        alignment: Alignment | None,
        buffer_size: int,
        closefd: bool = True,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        self._fd = fd
        self._closefd = closefd
        self._name = name
        self._path = str(name)
        self._mode = mode
        self._ctx = ctx
        self._readable = readable
        self._writable = writable
        self._appending = appending
        self._direct = direct
        # Told to the driver with each transfer, so it never asks fcntl per op (an fd
        # handed in by the caller may be O_DIRECT without direct=True).
        self._fd_direct = direct or fd_is_direct(fd)
        self._alignment = alignment
        self._buffer_size = buffer_size
        self._closed = False
        self._detached = False
        self._limiter = limiter
        # Applied where ops run on threads of this process (the worker pool); elsewhere
        # (io_uring, posix_aio, sync) no thread of ours is used, so there is nothing to bound.
        self._op_limiter = limiter if limiter is not None and ctx.driver.capabilities.threads else None
        self._rbuf = b""  # bytes read ahead; _rbuf[_rpos:] starts at _pos
        self._rpos = 0
        self._wbuf = bytearray()  # bytes written at _pos - len(_wbuf)
        self._lock = FifoLock()
        self._in_flight = 0
        self._idle: anyio.Event | None = None
        # Ops on a pipe, FIFO, socket or terminal whose call ended before they did (see
        # _op_ended): aclose cancels them, as they may wait for the other end forever.
        self._abandoned: dict[int, Op] = {}
        st = os.fstat(fd)
        st_mode = st.st_mode
        # The cursor, in bytes: at the end in append mode, as io.open leaves it (tell() says so
        # before any write).
        self._pos = st.st_size if appending else 0
        # A pipe, socket or character device has no size to bound a read by, nor a position.
        self._regular = stat_mod.S_ISREG(st_mode) or stat_mod.S_ISBLK(st_mode)
        # Closing from elsewhere with ops in flight: whoever pops the fd closes it (one
        # atomic dict.pop decides between the closing thread and the owner's last op).
        self._close_when_idle = False
        self._fd_claim: dict[str, int] = {"fd": fd}
        # The driver's fast path for reads the page cache holds (io_uring_c; see
        # IOContext.fast_reader): preadinto and pread with no op and no coroutine. Only
        # where such a read is one op with nothing else to do (a buffered regular file, no
        # thread limiter); dropped when the file closes, so a closed file takes the checks.
        self._fast: Any = None
        if readable and self._regular and not self._fd_direct and self._op_limiter is None:
            self._fast = ctx.fast_reader(fd, _MAX_READ_CHUNK)
        # The driver's ring path (io_uring_c on asyncio; see IOContext.ring_runner): preadinto
        # and pwrite staged from C, with no coroutine, where such a call is one op (a regular
        # file, no thread limiter); dropped with the fast path when the file closes.
        self._run: Any = None
        if self._regular and self._op_limiter is None:
            self._run = ctx.ring_runner(fd, self._fd_direct, alignment, readable, writable, self._path)
        # The fast reader's awaitables checkpoint per call (trio): the cursor calls then checkpoint first
        # and read after (_cursor_read_checkpointed).
        self._fast_checkpoints = self._fast is not None and bool(self._fast.checkpoints)

    # -- properties -------------------------------------------------------------------------

    @property
    def name(self) -> str | int:
        self._check_attached()
        return self._name

    @property
    def mode(self) -> str:
        self._check_attached()
        return self._mode

    @property
    def closed(self) -> bool:
        if self._closed:  # a detached file is closed too: open files pay nothing
            self._check_attached()
        return self._closed

    @property
    def limiter(self) -> anyio.CapacityLimiter | None:
        """The ``limiter=`` given to :func:`aiopg_io.open` (anyio's ``AsyncFile.limiter``):
        it bounds the threads this file's ops hold on the worker driver, and the thread that
        ran open(2); on other drivers its ops use no thread of this process."""
        return self._limiter

    @property
    def direct(self) -> bool:
        return self._direct

    @property
    def alignment(self) -> Alignment | None:
        """What direct I/O on this file requires; None for a buffered file."""
        return self._alignment

    @property
    def path(self) -> str:
        return self._path

    @property
    def driver(self) -> str:
        """The name of the driver this file's I/O goes through."""
        return self._ctx.factory.name

    def driver_statistics(self) -> DriverStatistics:
        """The counters of the driver this file's I/O goes through (shared by every file
        opened with that driver on this event loop)."""
        self._check_open()
        return self._ctx.statistics()

    def fileno(self) -> int:
        self._check_open()
        return self._fd

    def readable(self) -> bool:
        self._check_open()
        return self._readable

    def writable(self) -> bool:
        self._check_open()
        return self._writable

    def seekable(self) -> bool:
        self._check_open()
        return self._regular

    def isatty(self) -> bool:
        self._check_open()
        return os.isatty(self._fd)

    def __repr__(self) -> str:
        if self._detached:
            return "<aiopg_io.AsyncFile detached>"
        state = "closed" if self._closed else f"driver={self.driver}"
        return f"<aiopg_io.AsyncFile name={self._name!r} mode={self._mode!r} direct={self._direct} {state}>"

    # -- checks -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            self._check_attached()
            raise ClosedError(f"I/O operation on closed file {self._path!r}")

    def _check_attached(self) -> None:
        if self._detached:  # io.BufferedReader's own words, after detach()
            raise ValueError("raw stream has been detached")

    def _check_readable(self) -> None:
        self._check_open()
        if not self._readable:
            raise io.UnsupportedOperation(f"{self._path!r} is not open for reading (mode {self._mode!r})")

    def _check_writable(self) -> None:
        self._check_open()
        if not self._writable:
            raise io.UnsupportedOperation(f"{self._path!r} is not open for writing (mode {self._mode!r})")

    def _check_direct(self, offset: int, bufs: list[memoryview]) -> None:
        if self._alignment is not None:
            check_aligned(self._alignment, offset, sum(len(b) for b in bufs), bufs, self._path)

    # -- the one path to the driver -----------------------------------------------------------

    async def _submit(self, op: Op) -> int:
        limiter = self._op_limiter
        if limiter is not None:
            # The op is the borrower (as anyio.to_thread gives each call its own token), so a
            # task that holds a token of the same limiter itself can still do I/O.
            await limiter.acquire_on_behalf_of(op)
        self._in_flight += 1
        try:
            return await self._ctx.run(op)
        finally:
            self._op_ended(op)

    async def _ring_thrown(self, op: Op, exc: BaseException) -> int:
        """The ring path's twin (``_uring.c``, RingWait) once ``exc`` is thrown into a call
        whose op is out: what :meth:`_submit` and the glue's wait do then (a cancellation
        asks the driver to cancel the op and waits until it is reaped, so its buffer is held
        to its CQE; ``exc`` is raised either way)."""
        try:
            await self._ctx.glue.rejoin(op, self._ctx.cancel, exc)
            raise exc  # rejoin always raises; this says so to the type checker
        finally:
            self._op_ended(op)

    def _op_ended(self, op: Op) -> None:
        """The call on ``op`` ended. The file counts the op until it is reaped, not until the
        call ends: one that ended with its op still staged or out (an exception thrown in
        that is no cancellation, the call closed or collected) keeps the fd open through
        aclose until the op's CQE, so the number cannot be reused under the kernel's op."""
        if op.state is not OpState.REAPED and self._ctx.follow(op, self._op_reaped):
            if not self._regular:
                self._abandoned[id(op)] = op
            return
        self._op_reaped(op)

    def _cancel_abandoned(self) -> None:
        """aclose's first step on a pipe, FIFO, socket or terminal: ask the driver to cancel
        the ops whose call ended before they did. An op on a regular file ends on its own, and
        aclose waits for it (a write so left still lands); one here may wait for a writer or
        a reader that never comes, and nothing else would ever end it. A cancelled write may
        still have happened; an op the driver cannot cancel (one a thread is blocked in: the
        worker and posix_aio drivers) is still waited for (docs/guide.md, "Closing")."""
        for op in list(self._abandoned.values()):
            if self._ctx.cancel(op):  # dropped while staged: no reap will come for it
                self._op_reaped(op)

    def _op_reaped(self, op: Op) -> None:
        self._abandoned.pop(id(op), None)
        if self._op_limiter is not None:
            self._op_limiter.release_on_behalf_of(op)
        self._in_flight -= 1
        if self._in_flight == 0:
            if self._idle is not None:
                self._idle.set()
            if self._close_when_idle:  # aclose() ran elsewhere while this op was out
                self._release_fd()

    async def _start(self, op: Op, on_done: Callable[[int, OSError | None], None]) -> None:
        """:meth:`_submit` with no task waiting for the op (IOContext.start)."""
        limiter = self._op_limiter
        if limiter is not None:
            await limiter.acquire_on_behalf_of(op)
        self._in_flight += 1
        reaped = False

        def done(op: Op) -> None:
            nonlocal reaped
            reaped = True
            self._op_reaped(op)
            on_done(op.result or 0, op.error)

        try:
            await self._ctx.start(op, done)
        except BaseException:
            # Not staged (waiting for a slot), or done inline and ``on_done`` raised (to
            # this caller): uncounted once.
            if not reaped:
                self._op_ended(op)
            raise

    def _op(self, kind: OpKind, offset: int, bufs: Sequence[memoryview], keep: object) -> Op:
        if offset > _NEAR_OFF_T_MAX:
            check_end(offset, sum(len(b) for b in bufs), self._path)
        return Op(
            kind, self._fd, offset, tuple(bufs), path=self._path, keepalive=keep, direct=self._fd_direct
        )

    async def _transfer(self, kind: OpKind, offset: int, bufs: Sequence[memoryview], keep: object) -> int:
        return await self._submit(self._op(kind, offset, bufs, keep))

    def _read_size(self, n: int, offset: int) -> int:
        """``n``, or less where the file ends sooner: a read of 2**40 bytes from a small file
        returns what it holds instead of failing to allocate 2**40 bytes."""
        if n > _MAX_READ_CHUNK and self._regular:
            n = min(n, max(0, os.fstat(self._fd).st_size - offset))
        return n

    def _read_buffer(self, n: int) -> Any:
        try:
            return aligned_buffer(n, self._alignment.memory) if self._alignment is not None else bytearray(n)
        except MemoryError:
            raise MemoryError(
                f"{self._path}: a read of {n} bytes needs a buffer of {n} bytes, more than this "
                "process could allocate; read it in smaller pieces"
            ) from None

    # -- positional API ---------------------------------------------------------------------

    # pread, preadinto and pwrite are plain functions that return an awaitable: the driver's
    # fast path (self._fast) answers a read the page cache holds, and its ring path
    # (self._run) stages one that goes to the ring, with no coroutine; anything else, every
    # check and error included, is the coroutine below each (the twin).

    @coroutine_function
    def pread(self, n: int, offset: int) -> Awaitable[bytes]:
        """Read up to ``n`` bytes at ``offset``; fewer only at end of file. Await it as a
        coroutine (on ``io_uring_c`` a C awaitable instead: a read of cached pages, or one
        the ring does)."""
        fast = self._fast
        if fast is not None:
            done: Awaitable[bytes] | None = fast.pread(n, offset)
            if done is not None:
                return done
        run = self._run
        if run is not None:
            ring: Awaitable[bytes] | None = run.pread(self, n, offset)
            if ring is not None:
                return ring
        return self._pread(n, offset)

    async def _pread(self, n: int, offset: int) -> bytes:
        self._check_readable()
        n = as_int(n, "n")
        if n < 0:
            raise InvalidOffsetError(errno.EINVAL, f"read length {n} is negative", self._path)
        offset = file_offset(offset, self._path)
        check_end(offset, n, self._path)
        want = self._read_size(n, offset)
        if want < n and self._alignment is not None:  # bounded by the size: keep it aligned
            want = -(-want // self._alignment.offset) * self._alignment.offset
        buf = self._read_buffer(want)
        if self._alignment is not None:
            self._check_direct(offset, [buf])
        got = await self._transfer(OpKind.READ, offset, (memoryview(buf),), buf)
        return bytes(buf[:got])

    @coroutine_function
    def preadinto(self, buf: Any, offset: int) -> Awaitable[int]:
        """Read into ``buf`` at ``offset``; returns the byte count (short only at EOF). Await
        it as a coroutine (on ``io_uring_c`` a C awaitable instead: a read of cached pages,
        or one the ring does)."""
        fast = self._fast
        if fast is not None:
            done: Awaitable[int] | None = fast.preadinto(buf, offset)
            if done is not None:
                return done
        run = self._run
        if run is not None:
            ring: Awaitable[int] | None = run.preadinto(self, buf, offset)
            if ring is not None:
                return ring
        return self._preadinto(buf, offset)

    async def _preadinto(self, buf: Any, offset: int) -> int:
        self._check_readable()
        mv = writable_view(buf)
        offset = file_offset(offset, self._path)
        self._check_direct(offset, [mv])
        return await self._transfer(OpKind.READ, offset, (mv,), buf)

    async def preadv(self, bufs: Iterable[Any], offset: int) -> int:
        """Fill ``bufs`` in order from ``offset`` with one vectored read; returns the count.
        At most ``IOV_MAX`` buffers (1024 on Linux), else OSError EINVAL naming both."""
        self._check_readable()
        if isinstance(bufs, (bytes, bytearray, memoryview)):
            raise TypeError("bufs must be an iterable of buffers, not a single buffer")
        views = vector_views(bufs, writable_view, self._path)
        offset = file_offset(offset, self._path)
        self._check_direct(offset, views)
        return await self._transfer(OpKind.READV, offset, views, bufs)

    async def start_preadv(
        self, bufs: Sequence[Any], offset: int, on_done: Callable[[int, OSError | None], None]
    ) -> None:
        """Start one vectored read into ``bufs`` from ``offset`` and return without waiting
        for it: ``on_done(nbytes, error)`` is called on this loop when it has completed
        (``error`` None, or the OSError it failed with), from where the completion is reaped,
        and must not raise: one that does is reported as the loop reports a callback's
        exception (asyncio: its exception handler; trio: logged on the ``aiopg_io`` logger)
        and the loop goes on; a read the page cache answers at once calls it here, and its
        exception is raised to the caller. For layers that do their completion work in a callback rather
        than in a task (the buffer pool). The op owns ``bufs`` until then; it is not
        cancellable, and :meth:`aclose` waits for it. Checks as :meth:`preadv`."""
        self._check_readable()
        views = vector_views(bufs, writable_view, self._path)
        offset = file_offset(offset, self._path)
        self._check_direct(offset, views)
        kind = OpKind.READ if len(views) == 1 else OpKind.READV
        await self._start(self._op(kind, offset, views, bufs), on_done)

    async def start_pwritev(
        self, bufs: Sequence[Any], offset: int, on_done: Callable[[int, OSError | None], None]
    ) -> None:
        """As :meth:`start_preadv`, for one vectored write of ``bufs`` at ``offset`` (a
        write's count is all of ``bufs`` when it succeeded). Checks as :meth:`pwritev`."""
        self._check_writable()
        views = vector_views(bufs, readable_view, self._path)
        offset = file_offset(offset, self._path)
        self._check_direct(offset, views)
        kind = OpKind.WRITE if len(views) == 1 else OpKind.WRITEV
        await self._start(self._op(kind, offset, views, bufs), on_done)

    def submit_staged(self) -> None:
        """Submit now the ops staged in this loop tick (this file's and any other's on the
        same driver) instead of at the end of the tick, as PostgreSQL's
        ``pgaio_submit_staged``: after :meth:`start_preadv` calls, for a caller that goes on
        working without yielding."""
        self._check_open()
        self._ctx.submit_staged()

    def pwrite(self, data: Any, offset: int) -> Awaitable[int]:
        """Write all of ``data`` at ``offset``; returns its length. Await it as a coroutine
        (on ``io_uring_c`` under asyncio a C awaitable of the ring's write instead)."""
        run = self._run
        if run is not None:
            ring: Awaitable[int] | None = run.pwrite(self, data, offset)
            if ring is not None:
                return ring
        return self._pwrite(data, offset)

    async def _pwrite(self, data: Any, offset: int) -> int:
        self._check_writable()
        mv = readable_view(data)
        offset = file_offset(offset, self._path)
        self._check_direct(offset, [mv])
        return await self._transfer(OpKind.WRITE, offset, (mv,), data)

    async def pwritev(self, bufs: Iterable[Any], offset: int) -> int:
        """Write ``bufs`` in order from ``offset`` with one vectored write; returns the total.
        At most ``IOV_MAX`` buffers (1024 on Linux), else OSError EINVAL naming both."""
        self._check_writable()
        if isinstance(bufs, (bytes, bytearray, memoryview, str)):
            raise TypeError("bufs must be an iterable of buffers, not a single buffer")
        views = vector_views(bufs, readable_view, self._path)
        offset = file_offset(offset, self._path)
        self._check_direct(offset, views)
        return await self._transfer(OpKind.WRITEV, offset, views, bufs)

    async def pwritev_sync(
        self, bufs: Iterable[Any], offset: int, *, sync: Literal["fdatasync", "fsync"] = "fdatasync"
    ) -> int:
        """Write ``bufs`` in order from ``offset``, then make the file's data durable, as one
        op: ``sync`` is ``"fdatasync"`` (default) or ``"fsync"`` (metadata too). Returns the
        total written. Buffered writes are flushed first, as :meth:`fdatasync` does.

        The sync runs only once the write is whole (``IOSQE_IO_LINK`` on io_uring, one
        thread call on the worker driver): a failed write raises its own error and nothing
        is synced; a failed sync raises the sync's error, and as after any failed sync the
        data may be lost with the error reported once (never retry it: the WAL poisons
        itself). One op instead of :meth:`pwritev` then :meth:`fdatasync`: one trip through
        the event loop instead of two. Cancelled, it may have written (in part): what was
        written is never written again."""
        self._check_writable()
        if isinstance(bufs, (bytes, bytearray, memoryview, str)):
            raise TypeError("bufs must be an iterable of buffers, not a single buffer")
        if sync not in ("fdatasync", "fsync"):
            raise ValueError(f"sync={sync!r}: 'fdatasync' or 'fsync'")
        views = vector_views(bufs, readable_view, self._path)
        offset = file_offset(offset, self._path)
        self._check_direct(offset, views)
        if self._wbuf:
            await self.flush()
        op = self._op(OpKind.WRITE_SYNC, offset, views, bufs)
        if sync == "fsync":
            op.flags = SYNC_FSYNC
        return await self._submit(op)

    async def _start_pwritev_sync(
        self,
        bufs: list[memoryview],
        offset: int,
        on_done: Callable[[int, OSError | None], None],
        *,
        sync: Literal["fdatasync", "fsync"] = "fdatasync",
    ) -> None:
        """:meth:`pwritev_sync` started with no task waiting for it (as :meth:`start_pwritev`):
        ``on_done(nbytes, error)`` runs where the completion is reaped and must not raise.
        For the WAL, which does a round's completion work there (``bufs`` already views,
        the file positional-only: no buffered writes to flush first)."""
        self._check_writable()
        self._check_direct(offset, bufs)
        op = self._op(OpKind.WRITE_SYNC, offset, bufs, bufs)
        if sync == "fsync":
            op.flags = SYNC_FSYNC
        await self._start(op, on_done)

    async def fsync(self) -> None:
        """Flush buffered writes, then make data and metadata durable (fsync(2))."""
        await self._sync(OpKind.FSYNC)

    async def fdatasync(self) -> None:
        """Flush buffered writes, then make data durable (fdatasync(2))."""
        await self._sync(OpKind.FDATASYNC)

    async def _sync(self, kind: OpKind) -> None:
        self._check_open()
        if self._wbuf:  # positional-only users (the WAL) never pay for the cursor lock
            await self.flush()
        await self._submit(Op(kind, self._fd, path=self._path))

    async def fallocate(self, offset: int, length: int, mode: int = 0) -> None:
        """Reserve ``length`` bytes at ``offset`` (mode 0 extends the file as needed; another
        is fallocate(2)'s ``FALLOC_FL_*`` bits, 0 to 2**31 - 1, else ValueError naming it)."""
        self._check_writable()
        offset = file_offset(offset, self._path)
        length = as_int(length, "length")
        if length <= 0:
            raise InvalidOffsetError(errno.EINVAL, f"fallocate length {length} must be positive", self._path)
        check_end(offset, length, self._path)
        mode = as_int(mode, "mode")
        if not 0 <= mode <= FALLOCATE_MODE_MAX:  # else wrapped to another mode in an SQE or a C int
            raise ValueError(
                f"fallocate mode {mode} is not within 0 .. {FALLOCATE_MODE_MAX} (FALLOC_FL_* bits)"
            )
        await self._submit(Op(OpKind.FALLOCATE, self._fd, offset, length=length, mode=mode, path=self._path))

    async def stat(self) -> os.stat_result:
        """``os.fstat`` of the file (metadata from the inode; no data I/O)."""
        self._check_open()
        return os.fstat(self._fd)

    async def _size(self) -> int:
        return os.fstat(self._fd).st_size

    # -- raw transfers used by the cursor layer -----------------------------------------------

    async def _raw_read(self, n: int, offset: int) -> bytes:
        """Up to ``n`` bytes at ``offset``, at any alignment (bounced on a direct file)."""
        check_end(offset, n, self._path)
        n = self._read_size(n, offset)
        if self._alignment is None:
            buf = self._read_buffer(n)
            got = await self._transfer(OpKind.READ, offset, (memoryview(buf),), buf)
            if got == n:
                return bytes(buf)
            return bytes(buf[:got])
        a = self._alignment.block
        start = offset - offset % a
        end = -(-(offset + n) // a) * a
        bounce = self._read_buffer(end - start)
        got = await self._transfer(OpKind.READ, start, (bounce,), bounce)
        lo = offset - start
        return bytes(bounce[lo : max(lo, min(got, lo + n))])

    def _write_op(self, data: memoryview, offset: int) -> Op:
        """The op that writes ``data`` at ``offset`` (copied to an aligned buffer on a
        direct file, whose cursor writes must be aligned)."""
        keep: object = data
        if self._alignment is not None:
            al = self._alignment
            if offset % al.offset or len(data) % al.offset:
                raise AlignmentError(
                    f"{self._path}: a cursor write on a direct file must start at a multiple of "
                    f"{al.offset} and have a length that is one; got position {offset}, length {len(data)}"
                )
            bounce = aligned_buffer(len(data), al.memory)
            bounce[:] = data
            data = keep = bounce
        return self._op(OpKind.WRITE, offset, (data,), keep)

    async def _write_through(self, data: memoryview) -> None:
        """Write ``data`` at the cursor now (at the end in append mode). The cursor moves
        past what reached the file, also when the op failed or was cancelled part-way."""
        if not data:
            return  # an empty write(2) does not move an O_APPEND offset either
        start = await self._size() if self._appending else self._pos
        op = self._write_op(data, start)
        try:
            await self._submit(op)
        finally:
            self._pos = start + op.transferred

    # -- cursor state -------------------------------------------------------------------------

    def _drop_read_buffer(self) -> None:
        self._rbuf = b""
        self._rpos = 0

    async def _flush_writes(self) -> None:
        if not self._wbuf:
            return
        data, self._wbuf = self._wbuf, bytearray()
        written = 0
        try:
            start = await self._size() if self._appending else self._pos - len(data)
            op = self._write_op(memoryview(data), start)
            try:
                await self._submit(op)
            finally:
                written = op.transferred
            if self._appending:
                self._pos = start + len(data)
        finally:
            if written < len(data):
                # As io.BufferedWriter: bytes that did not reach the file stay buffered, so a
                # later flush (after freeing space, say) writes them. Those that did are
                # never written again: in append mode that would add them twice.
                self._wbuf[:0] = data[written:]

    async def flush(self) -> None:
        """Write out buffered bytes (not a sync: see :meth:`fsync`)."""
        self._check_open()
        async with self._lock:
            await self._flush_writes()

    async def _fill(self, want: int) -> bool:
        """Read more into the read buffer; False at EOF."""
        rest = self._rbuf[self._rpos :]
        # Unbuffered (buffer_size 0): read what was asked, or a chunk when the caller cannot
        # know how much (readline, read1(-1)); _prepare_read drops the rest before the next call.
        size = max(want, self._buffer_size) if self._buffer_size else want or DEFAULT_BUFFER_SIZE
        chunk = await self._raw_read(size, self._pos + len(rest))
        if not chunk:
            return False
        self._rbuf = rest + chunk if rest else chunk
        self._rpos = 0
        return True

    def _take(self, n: int) -> bytes:
        end = self._rpos + n
        out = self._rbuf[self._rpos : end]
        self._rpos = min(end, len(self._rbuf))
        self._pos += len(out)
        return out

    def _buffered(self) -> int:
        return len(self._rbuf) - self._rpos

    async def _prepare_read(self) -> None:
        self._check_readable()
        if self._buffer_size == 0:
            self._drop_read_buffer()
        if self._wbuf:
            await self._flush_writes()

    # -- cursor reads -------------------------------------------------------------------------

    @coroutine_function
    def read(self, size: int | None = -1) -> Awaitable[bytes]:
        """Up to ``size`` bytes from the cursor (all the rest when ``size`` is -1 or None)."""
        fast = self._fast
        if (
            fast is not None
            and type(size) is int
            and size > 0
            and size >= self._buffer_size
            and self._straight_to_one_read()
        ):
            if self._fast_checkpoints:
                return self._cursor_read_checkpointed(size, into=False)
            # The cursor call is one read of ``size`` at the cursor: the fast path's, when it
            # completes now without yielding (read_now), so the cursor moves with the result.
            done: Any = fast.read_now(size, self._pos)
            if done is not None:
                self._drop_read_buffer()
                self._pos += len(done.result)
                return done  # type: ignore[no-any-return]
        return self._read(size)

    async def _cursor_read_checkpointed(self, arg: Any, *, into: bool) -> Any:
        """read(``arg``) or readinto(``arg``) as one read at the cursor where the fast path's
        awaitables checkpoint (trio): the checkpoint first, so that a cancellation there
        leaves the cursor where it was with nothing read, then the fast path's read at the
        cursor as it is after it (other tasks ran meanwhile), the cursor moved with the
        result; the ordinary path when the read is no longer one read or the page cache does
        not hold it whole."""
        await self._ctx.glue.checkpoint()
        fast = self._fast
        if fast is not None and self._straight_to_one_read():
            got = fast.preadinto_cached(arg, self._pos) if into else fast.pread_cached(arg, self._pos)
            if got is not None:
                self._drop_read_buffer()
                self._pos += got if into else len(got)
                return got
        return await (self._readinto(arg) if into else self._read(arg))

    def _straight_to_one_read(self) -> bool:
        """True when a cursor read of at least the buffer size is one read at the cursor:
        nothing to write first, nothing buffered to take, no other call holding the cursor."""
        if self._wbuf or self._lock.contended:
            return False
        return self._buffer_size == 0 or not self._buffered()

    async def _read(self, size: int | None) -> bytes:
        size = optional_int(size, "size")
        if size < -1:
            if self._buffer_size:
                raise ValueError(f"read length {size} must be non-negative or -1")
            size = -1  # unbuffered, as io.FileIO: any negative size reads everything
        self._check_readable()
        async with self._lock:
            await self._prepare_read()
            if size == -1:
                return await self._read_all()
            return await self._read_exact(size)

    async def _read_exact(self, size: int) -> bytes:
        if self._buffered() >= size:
            return self._take(size)
        parts = [self._take(self._buffered())]
        need = size - len(parts[0])
        self._drop_read_buffer()
        if need >= self._buffer_size:
            data = await self._raw_read(need, self._pos)
            self._pos += len(data)
            parts.append(data)
        else:
            if await self._fill(need):
                parts.append(self._take(need))
        return b"".join(parts)

    async def _read_all(self) -> bytes:
        parts = [self._take(self._buffered())]
        self._drop_read_buffer()
        while True:
            want = max((await self._size()) - self._pos, self._buffer_size)
            data = await self._raw_read(min(want, _MAX_READ_CHUNK), self._pos)
            if not data:
                return b"".join(parts)
            self._pos += len(data)
            parts.append(data)

    async def readall(self) -> bytes:
        """Everything from the cursor to end of file."""
        return await self.read(-1)

    async def read1(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes with at most one read from the file, as
        ``io.BufferedReader.read1``: what the buffer holds when it holds anything (at most
        ``size``; any negative size means all of it), else one read, which also fills the
        buffer (docs/guide.md, "read1 and peek")."""
        size = as_int(size, "size")
        self._check_readable()
        async with self._lock:
            await self._prepare_read()
            if size == 0:
                return b""
            if not self._buffered():
                self._drop_read_buffer()
                if not await self._fill(size if size > 0 else self._buffer_size):
                    return b""
            return self._take(self._buffered() if size < 0 else min(size, self._buffered()))

    async def peek(self, size: int = 0) -> bytes:
        """Bytes at the cursor without moving it, as ``io.BufferedReader.peek``: what the
        buffer holds, or, when it is empty, what one read brings (at least one byte unless at
        end of file). ``size`` is a hint only: the result may be longer or shorter."""
        size = as_int(size, "size")
        self._check_readable()
        async with self._lock:
            await self._prepare_read()
            if not self._buffered():
                self._drop_read_buffer()
                # Unbuffered (buffering=0) this reads ``size`` bytes, which the next call drops
                # and reads again at the cursor: io's FileIO has no peek to compare with.
                await self._fill(max(size, 1))
            return self._rbuf[self._rpos :]

    @coroutine_function
    def readinto(self, buf: Any) -> Awaitable[int]:
        """Fill ``buf`` from the cursor; returns the count (short only at EOF)."""
        fast = self._fast
        if (
            fast is not None
            and self._straight_to_one_read()
            and (self._buffer_size == 0 or _known_size(buf) >= self._buffer_size)
        ):
            if self._fast_checkpoints:
                return self._cursor_read_checkpointed(buf, into=True)
            done: Any = fast.readinto_now(buf, self._pos)  # as read()'s
            if done is not None:
                self._drop_read_buffer()
                self._pos += done.result
                return done  # type: ignore[no-any-return]
        return self._readinto(buf)

    async def _readinto(self, buf: Any) -> int:
        mv = writable_view(buf)
        data = await self._read(len(mv))  # not read(): its fast path declined here already
        mv[: len(data)] = data
        return len(data)

    async def readinto1(self, buf: Any) -> int:
        """Like :meth:`readinto` with at most one read from the file."""
        mv = writable_view(buf)
        data = await self.read1(len(mv))
        mv[: len(data)] = data
        return len(data)

    async def readline(self, size: int | None = -1) -> bytes:
        """One line including its b'\\n' (at most ``size`` bytes); b'' at EOF."""
        size = optional_int(size, "size")
        self._check_readable()
        async with self._lock:
            await self._prepare_read()
            return await self._readline(size)

    async def _readline(self, size: int) -> bytes:
        scanned = 0  # bytes after _rpos already searched for a newline
        while True:
            avail = self._buffered()
            limit = avail if size < 0 else min(avail, size)
            i = self._rbuf.find(_LINE, self._rpos + scanned, self._rpos + limit)
            if i >= 0:
                return self._take(i + 1 - self._rpos)
            if 0 <= size <= avail:
                return self._take(size)
            scanned = limit
            if not await self._fill(self._buffer_size):  # rebases the buffer at _rpos = 0
                return self._take(self._buffered())

    async def readlines(self, hint: int | None = -1) -> list[bytes]:
        """All remaining lines (stopping once more than ``hint`` bytes have been read, if given)."""
        hint = optional_int(hint, "hint")
        lines: list[bytes] = []
        total = 0
        while True:
            line = await self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint < total:  # io: stop once the total *exceeds* hint
                return lines

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    # -- cursor writes ------------------------------------------------------------------------

    async def write(self, data: Any) -> int:
        """Write ``data`` at the cursor (at the end in append mode); returns its length."""
        mv = readable_view(data)
        self._check_writable()
        n = len(mv)
        async with self._lock:
            if self._buffered() or self._rbuf:
                self._drop_read_buffer()
            if self._alignment is not None or self._buffer_size == 0:
                await self._flush_writes()
                await self._write_through(mv)
                return n
            if len(self._wbuf) + n > self._buffer_size:
                await self._flush_writes()
                if n >= self._buffer_size:
                    await self._write_through(mv)
                    return n
            self._wbuf += mv
            self._pos += n
            return n

    async def writelines(self, lines: Iterable[Any]) -> None:
        """Write each item of ``lines`` (no separators are added, as in Python)."""
        self._check_open()
        for line in lines:
            await self.write(line)

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the cursor; returns the new position. Flushes buffered writes first."""
        offset = as_int(offset, "offset")
        whence = as_int(whence, "whence")
        self._check_open()
        async with self._lock:
            await self._flush_writes()
            if whence == os.SEEK_SET:
                target = offset
            elif whence == os.SEEK_CUR:
                target = self._pos + offset
            elif whence == os.SEEK_END:
                target = await self._size() + offset
            else:
                raise ValueError(f"whence value {whence} unsupported (0, 1 or 2)")
            if target < 0:
                raise InvalidOffsetError(
                    errno.EINVAL, f"seek to {target} is before the start of the file", self._path
                )
            if target > OFF_T_MAX:
                raise InvalidOffsetError(
                    errno.EINVAL,
                    f"seek to {target} is past the largest file offset, {OFF_T_MAX} (2**63 - 1)",
                    self._path,
                )
            # Keep the read buffer when the target lies inside it; not for SEEK_END, which
            # asks the file for its size and so, as in io.BufferedRandom, rereads the data.
            buf_start = self._pos - self._rpos
            if self._rbuf and whence != os.SEEK_END and buf_start <= target <= buf_start + len(self._rbuf):
                self._rpos = target - buf_start
            else:
                self._drop_read_buffer()
            self._pos = target
            return target

    async def tell(self) -> int:
        """The cursor position."""
        self._check_open()
        if self._appending and self._wbuf:
            async with self._lock:
                await self._flush_writes()
        return self._pos

    async def truncate(self, size: int | None = None) -> int:
        """Resize the file to ``size`` (default: the cursor); the cursor does not move."""
        self._check_writable()
        async with self._lock:
            await self._flush_writes()
            new = self._pos if size is None else as_int(size, "size")
            if new < 0:
                raise InvalidOffsetError(errno.EINVAL, f"negative size value {new}", self._path)
            if new > OFF_T_MAX:
                raise InvalidOffsetError(
                    errno.EINVAL,
                    f"size {new} is past the largest file size, {OFF_T_MAX} (2**63 - 1)",
                    self._path,
                )
            self._drop_read_buffer()
            await self._submit(Op(OpKind.FTRUNCATE, self._fd, length=new, path=self._path))
            return new

    # -- closing ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Flush, wait for this file's ops in flight, close the fd, release the context.

        Runs to the end even when the calling task is cancelled (the fd is closed either
        way); the cancellation is raised afterwards, as trio's ``aclose`` convention asks.
        """
        if self._closed:
            self._check_attached()
            return
        if not self._ctx.owned_here():
            self._close_elsewhere()  # another loop, thread or process: see the module docstring
            return
        with anyio.CancelScope(shield=True):
            try:
                if self._wbuf:
                    async with self._lock:
                        await self._flush_writes()
            finally:
                self._cancel_abandoned()
                while self._in_flight:
                    self._idle = anyio.Event()
                    await self._idle.wait()
                self._closed = True
                self._drop_fast_paths()
                fd = self._fd_claim.pop("fd", None)
                if fd is not None:
                    try:
                        if self._closefd:
                            os.close(fd)
                    finally:
                        await self._ctx.release()
        await anyio.lowlevel.checkpoint_if_cancelled()

    async def close(self) -> None:
        """Same as :meth:`aclose` (aiofiles spells it ``close``)."""
        await self.aclose()

    def detach(self) -> io.FileIO:
        """Separate the buffer from the file, as ``io.BufferedReader.detach`` and aiofiles'
        ``detach``: return the raw file, a synchronous :class:`io.FileIO` on the same fd,
        which now owns it (``closefd`` as given to ``open``); this object then raises
        ValueError for every call, ``aclose()`` included, and gives up its hold on the driver.

        Synchronous, as in io and aiofiles: bytes still buffered for writing are written with
        blocking calls first (``await f.flush()`` before, to keep the loop free). Bytes read
        ahead are not lost: the fd's offset is set to this file's cursor (a seekable file), not,
        as io's raw file is, past its read-ahead. Refused (RuntimeError) while a call of another
        task is still running on this file: its op holds the fd."""
        self._check_open()
        if self._in_flight or self._lock.contended:
            raise RuntimeError(
                f"detach() of {self._path!r} while another task's call on it is still running; await it first"
            )
        self._write_buffered_blocking()
        raw = io.FileIO(self._fd, self._raw_mode_for_fileio(), closefd=self._closefd)
        if self._regular:
            # aiopg_io's ops are positional and never move the fd's offset, from which
            # FileIO's calls go (and which FileIO in an append mode has just set to the end).
            os.lseek(self._fd, self._pos, os.SEEK_SET)
        raw.name = self._name  # as io.open names the FileIO it makes: the path given
        # The fd passes to the raw file; this one never closes, releases or finalizes
        # anything again, and its hold on the context ends here.
        self._fd_claim.pop("fd", None)
        self._closed = self._detached = True
        self._drop_fast_paths()
        if self._ctx.owned_here():
            self._ctx.release_now()
        else:
            self._ctx.release_elsewhere()
        return raw

    def _drop_fast_paths(self) -> None:
        """Closed or detached: calls from now on take the pure path and its checks. The ring
        path's runner is turned off, not just dropped: an awaitable it made before and that
        is awaited after must not stage its op on this fd, which another file may have by
        then (the number reused); it raises ClosedError, as the pure coroutine does."""
        if self._run is not None:
            self._run.disable()
        self._fast = self._run = None

    def _raw_mode_for_fileio(self) -> str:
        plus = "+" if self._readable and self._writable else ""
        if self._appending:
            return "ab" + plus
        return ("wb" if self._writable and not self._readable else "rb") + plus

    async def __aenter__(self) -> AsyncFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _close_elsewhere(self) -> None:
        """Close outside the owner's tasks: write what is buffered with blocking calls, then
        free the fd at once, or, while an op of the owner's still uses it, when that op ends
        (the fd number must not be reused under it)."""
        self._closed = True
        self._drop_fast_paths()
        try:
            self._write_buffered_blocking()
        finally:
            self._close_when_idle = True
            if not self._in_flight or not self._ctx.serving():
                self._release_fd()

    def _write_buffered_blocking(self) -> None:
        data, self._wbuf = self._wbuf, bytearray()
        view = memoryview(data)
        pos = self._pos - len(data)
        while view:
            # O_APPEND: write(2) appends; else the cursor's place (the fd offset is never used).
            n = os.write(self._fd, view) if self._appending else os.pwrite(self._fd, view, pos)
            view = view[n:]
            pos += n

    def _release_fd(self) -> None:
        """Drop this file's hold on its context and close the fd; once, whoever calls first."""
        fd = self._fd_claim.pop("fd", None)
        if fd is None:
            return
        try:
            self._ctx.release_elsewhere()  # first: a context whose loop is gone drains here
        finally:
            if self._closefd:
                os.close(fd)

    def __del__(self) -> None:
        # Like io.FileIO: an unclosed file writes its buffer and closes its fd when collected,
        # with a warning (io.IOBase.__del__ calls close(), which flushes).
        if getattr(self, "_closed", True):
            return
        # warnings is imported at module level: an import here fails at interpreter exit.
        warnings.warn(f"unclosed file {self!r}", ResourceWarning, stacklevel=2, source=self)
        self._close_elsewhere()


def _known_size(buf: object) -> int:
    """The byte size of a bytearray or memoryview, without a view; -1 for anything else."""
    if type(buf) is bytearray:
        return len(buf)
    if type(buf) is memoryview:
        return buf.nbytes
    return -1


def is_directory(fd: int) -> bool:
    return stat_mod.S_ISDIR(os.fstat(fd).st_mode)
