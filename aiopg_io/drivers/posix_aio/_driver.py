"""The ``posix_aio`` driver: ops become aiocbs, queued, handed over with lio_listio, reaped.

Facts this module relies on
===========================

glibc (Linux; read from glibc's ``rt/aio_misc.c`` and ``rt/lio_listio-common.c``, glibc
2.34-2.36):

- Requests on the *same file descriptor* are chained and run one after another by one
  helper thread (``__aio_enqueue_request``: "It makes no sense to start another thread
  since this new thread would fight with the running thread"). So N requests on one fd
  are *serial*. This driver spreads concurrent requests on one fd over ``dup()``s of it
  (same open file description, so positional I/O is identical), closing the duplicates
  when the fd has nothing in flight (``spread_fds``): up to 15 for an O_DIRECT fd, 2 for a
  buffered one (see :class:`_FdSpread`); glibc runs at most 20 helper threads anyway.
- ``lio_listio(LIO_NOWAIT, list, n, NULL)`` enqueues under one mutex. A request that could
  not be enqueued for want of memory (``get_elem`` failing -> EAGAIN) does *not* get its
  ``__error_code`` set, so the driver presets it to EAGAIN before the call (POSIX says an
  unqueued aiocb reports EAGAIN; glibc leaves the field as the caller left it).
- ``aio_cancel`` stops only a request still queued behind another (``_libc``): an op being
  cancelled keeps its buffers until every request of it is back.

FreeBSD >= 13 has ``aio_readv``/``aio_writev`` (``aio_iov``/``aio_iovcnt`` alias
``aio_buf``/``aio_nbytes``); glibc and macOS have no vectored AIO. This driver takes one
code path for every platform:

Vectored ops (READV / WRITEV): buffers adjacent in memory become one request (no copy).
When pieces remain and the op is at most ``_BOUNCE_MAX`` bytes, it is *bounced*: one
request on one page-aligned buffer (so O_DIRECT alignment holds), the data copied in before
a write and out after a read. Larger ops are split, one request per piece, all in flight at
once. Why not always split: a buffer pool's combined read is 16 pages of 8 KiB in buffers
that need not be adjacent; split, O_DIRECT makes that 16 device reads instead of one, and
glibc 16 thread hand-offs. Bounced, a read-stream scan (``examples/scan.py``) and a
``preadv`` of scattered pages both ran several times faster than split, the copy costing far
less than the extra requests (docs/benchmarks.md, "Bounced vectored ops").

Ops without an AIO form (FALLOCATE, FTRUNCATE, NOP) complete inline in ``submit`` through
the blocking helper (``_blocking.perform``), so they block the event loop for the call:
``ftruncate`` is a metadata update, but ``fallocate`` may take as long as the filesystem
needs to allocate extents. Where that matters, use the worker driver.

Limits: at most ``max_in_flight_kernel`` aiocbs are handed to the system at once; past it
(or when the system says EAGAIN) requests wait in the driver's queue and go out as
completions free slots. EAGAIN with nothing of ours in flight (another process holds the
system-wide slots) is retried after a backoff timer. Callers never see EAGAIN.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import time
from collections import deque
from collections.abc import Callable, Sequence

from ...errors import DriverUnavailableError
from .._blocking import perform
from .._memory import aligned_buffer, buffer_address
from ..base import (
    OFF_T_MAX,
    Capabilities,
    Driver,
    DriverCounters,
    DriverStatistics,
    Op,
    OpKind,
    OpState,
    flag_option,
    int_option,
)
from . import _platforms
from ._libc import AioLib, inherited_reason, probe
from ._notifiers import SuspendNotifier, make_notifier
from ._requests import Request, Run

__all__ = ["PosixAioDriver"]


_BOUNCE_MAX = 1 << 20


def _pieces(bufs: list[memoryview]) -> list[tuple[int, int, object]]:
    """``(address, length, keep)`` per run of buffers adjacent in memory (one request each)."""
    out: list[tuple[int, int, object]] = []
    for buf in bufs:
        addr, keep = _address_of(buf)
        n = len(buf)
        if out and out[-1][0] + out[-1][1] == addr:
            prev_addr, prev_n, prev_keep = out[-1]
            out[-1] = (prev_addr, prev_n + n, (prev_keep, keep))
        else:
            out.append((addr, n, keep))
    return out


def _address_of(buf: memoryview) -> tuple[int, object]:
    """``buf``'s address and what must stay referenced while the system uses it.

    A writable buffer gets a ctypes view, which holds a buffer export (a bytearray under it
    cannot be resized meanwhile). ctypes refuses read-only memory; the system only reads it
    (a write), so its address comes through the buffer protocol and ``buf`` itself is kept.
    """
    if buf.readonly:
        return buffer_address(buf), buf
    view = (ctypes.c_char * len(buf)).from_buffer(buf)
    return ctypes.addressof(view), view


class _FdSpread:
    """The fildes numbers that stand for one fd while it has requests in flight (glibc)."""

    __slots__ = ("busy", "dups", "free", "limit")

    def __init__(self, fd: int) -> None:
        self.busy = 0
        self.free = [fd]
        self.dups: list[int] = []
        # Measured here (4 KiB random reads, 32 in flight, 2 cores): O_DIRECT reads gain up
        # to 16 parallel chains (each waits on the device); page-cache reads are CPU-bound
        # and lose from 4 on (glibc thread wake-ups cost more than the copy). Buffered
        # reads that miss the cache sit in between: 2 duplicates, 3 chains.
        import fcntl  # here: the module must import on Windows, to say why it cannot run

        try:
            direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0))
        except OSError:
            direct = False
        self.limit = _SPREAD_DIRECT if direct else _SPREAD_BUFFERED


_SPREAD_DIRECT = 15  # dups per fd; glibc runs at most 20 helper threads anyway
_SPREAD_BUFFERED = 2
_INLINE_KINDS = frozenset({OpKind.FALLOCATE, OpKind.FTRUNCATE, OpKind.NOP})
_SYNC_KINDS = frozenset({OpKind.FSYNC, OpKind.FDATASYNC})
# Identity tests on the hot path: hashing an Enum member runs Python code (3.11).
_READ, _READV, _WRITE, _WRITEV = OpKind.READ, OpKind.READV, OpKind.WRITE, OpKind.WRITEV
_FSYNC, _FDATASYNC = OpKind.FSYNC, OpKind.FDATASYNC


class PosixAioDriver(Driver):
    name = "posix_aio"

    def __init__(self, *, max_in_flight_kernel: int | None = None, spread_fds: bool | None = None) -> None:
        plat = _platforms.PLATFORM
        if plat is None:
            raise RuntimeError(f"posix_aio cannot run here: {_platforms.PLATFORM_REASON}")
        inherited = inherited_reason(plat)
        if inherited is not None:
            raise DriverUnavailableError(f"driver 'posix_aio' cannot run here: {inherited}")
        limit = (
            plat.default_kernel_limit
            if max_in_flight_kernel is None
            else int_option("posix_aio", "max_in_flight_kernel", max_in_flight_kernel, 1, 65536)
        )
        self._plat = plat
        self._limit = limit
        self._spread = (
            plat.spread_fds if spread_fds is None else flag_option("posix_aio", "spread_fds", spread_fds)
        )
        self._lib = AioLib(plat)
        self._notifier = make_notifier(self._lib, plat)
        self._queue: deque[Request] = deque()  # waiting for a slot
        self._in_kernel = 0
        self._throttled = False  # the system said EAGAIN: wait for a completion
        self._backoff = 0.001
        self._ready: list[Op] = []
        self._ops: set[Op] = set()
        self._fds: dict[int, _FdSpread] = {}
        self._closed = False
        self._counters = DriverCounters()
        self._eagain = 0

    # -- protocol -------------------------------------------------------------------------------

    @classmethod
    def unavailable_reason(cls, *, direct: bool = False) -> str | None:
        plat = _platforms.PLATFORM
        if plat is None:
            return _platforms.PLATFORM_REASON
        inherited = inherited_reason(plat)
        if inherited is not None:
            return inherited
        try:
            lib = AioLib(plat)
        except OSError as exc:
            return f"the C library has no POSIX AIO: {exc.strerror}"
        if not plat.tested:
            return None  # the code exists; `info` marks it "not tested on this machine"
        return probe(lib, plat)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(max_in_flight=max(256, self._limit))

    def submit(self, ops: Sequence[Op]) -> None:
        if self._closed:
            raise RuntimeError("posix_aio driver is closed")
        c = self._counters
        c.submit_calls += 1
        c.submitted += len(ops)
        ready_before = len(self._ready)
        for op in ops:
            op.set_state(OpState.SUBMITTED)
            self._ops.add(op)
            kind = op.kind
            if op.cancel_requested:
                op.cancelled()
                self._ready.append(op)
            elif kind is _READ or kind is _READV or kind is _WRITE or kind is _WRITEV or kind in _SYNC_KINDS:
                self._start(op)
            elif kind in _INLINE_KINDS:
                perform(op)
                self._ready.append(op)
            else:
                op.fail(OSError(errno.EOPNOTSUPP, f"op kind {kind.value} is not supported by posix_aio"))
                self._ready.append(op)
        self._pump()
        if len(self._ready) > ready_before:
            self._notifier.raise_flag()

    def fileno(self) -> int:
        return self._notifier.fileno()

    def notify_with(self, fn: Callable[[], None]) -> bool:
        if not isinstance(self._notifier, SuspendNotifier):
            return False  # FreeBSD: the kernel posts to the kqueue
        self._notifier.notify_with(fn)
        return True

    def reap(self) -> list[Op]:
        self._notifier.clear()
        self._absorb(self._notifier.collect())
        self._pump()
        out, self._ready = self._ready, []
        for op in out:
            self._ops.discard(op)
        self._counters.reaped(out)
        return out

    def cancel(self, op: Op) -> None:
        op.cancel_requested = True
        run = op.driver_data
        if op.state is not OpState.SUBMITTED or not isinstance(run, Run):
            return
        queued = [r for r in run.requests if not r.in_kernel and r.error == errno.EINPROGRESS]
        if queued:
            ids = {id(r) for r in queued}
            self._queue = deque(r for r in self._queue if id(r) not in ids)
            for r in queued:
                r.error = errno.ECANCELED
                r.result = -1
                r.keep = None
            run.outstanding -= len(queued)
            if run.outstanding == 0:
                self._finish_run(op, run)
                self._notifier.raise_flag()
        for r in run.requests:
            if r.in_kernel and r.error == errno.EINPROGRESS:
                # AIO_CANCELED: it completes with ECANCELED through the notifier;
                # AIO_NOTCANCELED / AIO_ALLDONE: it completes with its real result.
                self._lib.aio_cancel(r.fd, ctypes.byref(r.cb))

    def close(self) -> list[Op]:
        if self._closed:
            return []
        self._closed = True
        for op in list(self._ops):
            if op.state is OpState.SUBMITTED:
                self.cancel(op)
        deadline_note = time.monotonic()
        while self._in_kernel:
            select.select([self._notifier.fileno()], [], [], 1.0)
            self._notifier.clear()
            self._absorb(self._notifier.collect())
            if time.monotonic() - deadline_note > 1.0:
                deadline_note = time.monotonic()
                for op in list(self._ops):  # a request queued behind a slow one: ask again
                    if op.state is OpState.SUBMITTED:
                        self.cancel(op)
        # Requests EAGAIN left queued can no longer go out.
        while self._queue:
            r = self._queue.popleft()
            r.error, r.result = errno.ECANCELED, -1
            self._request_done(r)
        self._notifier.close()
        for spread in self._fds.values():
            for fd in spread.dups:
                os.close(fd)
        self._fds.clear()
        out, self._ready = self._ready, []
        for op in out:
            self._ops.discard(op)
            op.set_state(OpState.REAPED)
        self._counters.completed += len(out)
        return out

    def statistics(self) -> DriverStatistics:
        return self._counters.snapshot(
            self.name,
            len(self._ops),
            in_kernel=self._in_kernel,
            queued=len(self._queue),
            kernel_limit=self._limit,
            eagain=self._eagain,
        )

    # -- requests -------------------------------------------------------------------------------

    def _start(self, op: Op) -> None:
        """Build the requests for what ``op`` still has to do and queue them."""
        plat = self._plat
        run = Run()
        op.driver_data = run
        if op.kind is _FSYNC or op.kind is _FDATASYNC:
            run.requests.append(Request(op, run, plat.new_aiocb(op.fd), 0, None))
        else:
            reading = op.kind is _READ or op.kind is _READV
            opcode = plat.lio_read if reading else plat.lio_write
            pos = op.position()
            bufs = op.remaining()
            if pos + sum(len(b) for b in bufs) > OFF_T_MAX:  # aio_offset would wrap
                op.fail(OSError(errno.EINVAL, f"a transfer ending past offset {OFF_T_MAX}", op.path))
                self._ready.append(op)
                return
            pieces = _pieces(bufs)
            if len(pieces) > 1 and (total := sum(n for _, n, _ in pieces)) <= _BOUNCE_MAX:
                bounce = aligned_buffer(total)
                if reading:
                    run.bounce = (bounce, list(bufs))
                else:
                    at = 0
                    for buf in bufs:
                        bounce[at : at + len(buf)] = buf
                        at += len(buf)
                addr, keep = _address_of(bounce)
                pieces = [(addr, total, keep)]
            for addr, n, keep in pieces:
                cb = plat.new_aiocb(op.fd, opcode=opcode, offset=pos, buf=addr, nbytes=n)
                run.requests.append(Request(op, run, cb, n, keep))
                pos += n
            if not run.requests:  # nothing to transfer: a zero-length op
                op.complete(0)
                self._ready.append(op)
                return
        run.outstanding = len(run.requests)
        self._queue.extend(run.requests)

    def _pump(self) -> None:
        """Hand queued requests to the system while slots are free."""
        if self._throttled or not self._queue:
            return
        plat, lib = self._plat, self._lib
        queue = self._queue
        batch: list[Request] = []
        sent: list[Request] = []
        notifier = self._notifier
        prepare = getattr(notifier, "prepare", None)
        while queue and self._in_kernel + len(batch) < self._limit and not self._throttled:
            r = queue.popleft()
            r.fd = self._take_fd(r.op.fd)
            r.cb.aio_fildes = r.fd
            if prepare is not None:
                prepare(r)
            if r.op.kind is _FSYNC or r.op.kind is _FDATASYNC:
                if batch:
                    sent.extend(self._listio(batch))
                    batch = []
                how = plat.fsync_op if r.op.kind is OpKind.FSYNC else plat.fdatasync_op
                if lib.aio_fsync(how, ctypes.byref(r.cb)) == 0:
                    r.in_kernel = True
                    self._in_kernel += 1
                    sent.append(r)
                else:
                    self._refused(r, ctypes.get_errno())
                continue
            batch.append(r)
            if len(batch) >= plat.listio_max:
                sent.extend(self._listio(batch))
                batch = []
        if batch:
            sent.extend(self._listio(batch))
        if sent:
            notifier.add(sent)
        if self._throttled and self._in_kernel == 0:
            notifier.retry_later(self._backoff)
            self._backoff = min(self._backoff * 2, 0.1)

    def _listio(self, batch: list[Request]) -> list[Request]:
        """Submit ``batch`` with one lio_listio; return the requests the system took."""
        plat, lib = self._plat, self._lib
        if plat.glibc_error_field:
            for r in batch:
                r.cb.glibc_error_code = errno.EAGAIN  # see the module docstring
        arr = (ctypes.c_void_p * len(batch))(*[ctypes.addressof(r.cb) for r in batch])
        if lib.lio_listio(plat.lio_nowait, arr, len(batch), None) == 0:
            for r in batch:
                r.in_kernel = True
            self._in_kernel += len(batch)
            return batch
        # Some were not taken: each aiocb's status says which (POSIX lio_listio, ERRORS).
        taken = []
        for r in batch:
            e = lib.aio_error(ctypes.byref(r.cb))
            if e == errno.EINPROGRESS:
                r.in_kernel = True
                taken.append(r)
            elif e == errno.EAGAIN:
                self._refused(r, e)
            elif plat.glibc_error_field and e == 0:
                # glibc: enqueued and already done (a ready pipe, a cached page).
                r.in_kernel = True
                taken.append(r)
            else:
                self._refused(r, e)
        self._in_kernel += len(taken)
        return taken

    def _refused(self, r: Request, err: int) -> None:
        """The system did not take ``r``: queue it again on EAGAIN, else fail it."""
        if err in (errno.EAGAIN, errno.ENOMEM):
            self._give_fd(r.op.fd, r.fd)
            self._queue.appendleft(r)
            if not self._throttled:
                self._eagain += 1
                self._counters.overflows += 1
            self._throttled = True
            return
        r.error, r.result = err, -1
        self._give_fd(r.op.fd, r.fd)
        r.fd = -1
        self._request_done(r)
        if r.op.done:
            self._notifier.raise_flag()

    def _absorb(self, finished: list[Request]) -> None:
        if finished:
            self._throttled = False
            self._backoff = 0.001
        elif self._throttled and self._in_kernel == 0:
            self._throttled = False  # the retry timer fired
        for r in finished:
            r.in_kernel = False
            self._in_kernel -= 1
            self._give_fd(r.op.fd, r.fd)
            self._request_done(r)

    def _request_done(self, r: Request) -> None:
        r.keep = None
        run = r.run
        run.outstanding -= 1
        if run.outstanding == 0:
            self._finish_run(r.op, run)

    def _finish_run(self, op: Op, run: Run) -> None:
        """Every request of ``run`` is back: complete ``op`` or start its next round."""
        try:
            self._settle_run(op, run)
        finally:
            # A request and its run refer to each other. Cleared now, the op (and the buffers
            # it holds) is freed when its caller lets go of it, not at the next collection.
            run.requests.clear()

    def _settle_run(self, op: Op, run: Run) -> None:
        if run.bounce is not None:  # a bounced read: hand its bytes to the op's buffers
            bounce, bufs = run.bounce
            run.bounce = None
            r = run.requests[0]
            left = r.result if not r.error else 0
            at = 0
            for buf in bufs:
                if at >= left:
                    break
                n = min(len(buf), left - at)
                buf[:n] = bounce[at : at + n]
                at += n
        if op.kind is _FSYNC or op.kind is _FDATASYNC:
            r = run.requests[0]
            op.driver_data = None
            if r.error:
                op.fail(r.error)
            else:
                op.complete(0)
            self._ready.append(op)
            return
        prefix = 0
        err = 0
        for r in run.requests:
            if r.error:
                err = r.error
                break
            prefix += r.result
            if r.result < r.nbytes:
                break
        # A piece that read 0 bytes lies at or past EOF: the read ends there.
        eof = (op.kind is _READ or op.kind is _READV) and any(
            r.error == 0 and r.result == 0 for r in run.requests
        )
        op.driver_data = None
        try:
            more = op.advance(prefix) if prefix else False
            if not err and (not prefix or (more and eof)):
                more = op.advance(0)  # EOF for a read; ENOSPC for a write that moved nothing
        except OSError as exc:
            op.fail(exc)
            self._ready.append(op)
            return
        if err and not prefix:
            op.fail(err)
        elif more and op.cancel_requested:
            op.fail(err or errno.ECANCELED)  # op.transferred says what did happen
        elif more:
            self._start(op)  # a short transfer: go on from op.position()
            return
        else:
            op.complete(0)
        self._ready.append(op)

    # -- fd spreading (glibc serialises requests per fildes) --------------------------------------

    def _take_fd(self, fd: int) -> int:
        if not self._spread:
            return fd
        s = self._fds.get(fd)
        if s is None:
            s = self._fds[fd] = _FdSpread(fd)
        s.busy += 1
        if s.free:
            return s.free.pop()
        if len(s.dups) < s.limit:
            try:
                d = os.dup(fd)
            except OSError:  # EMFILE, or a bad fd: the system will say so for the request
                return fd
            s.dups.append(d)
            return d
        return fd

    def _give_fd(self, fd: int, used: int) -> None:
        if not self._spread or used < 0:
            return
        s = self._fds.get(fd)
        if s is None:
            return
        s.busy -= 1
        if (used == fd or used in s.dups) and used not in s.free:
            s.free.append(used)
        if s.busy == 0:
            for d in s.dups:
                os.close(d)
            del self._fds[fd]
