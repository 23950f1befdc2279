"""The ``io_uring_c`` driver: the ``io_uring`` driver on a ring of our own C (``_uring.c``).

What ``auto`` picks on Linux wherever it runs (``drivers.auto_order``): with the file calls'
ring path in C it does more direct reads per second than the pure driver on asyncio, uvloop
and trio, for less CPU per read, and several times its page-cache reads (docs/benchmarks.md,
"The file calls' ring path in C"), and the whole test matrix runs on it. Where its extension
did not build or load, or ``AIOPG_IO_PURE=1`` refuses it, ``unavailable_reason`` says so and
``auto`` takes the pure ``io_uring`` driver. It is
:class:`~aiopg_io.drivers.io_uring.IoUringDriver` with the PyPI
``liburing`` package replaced by ``aiopg_io/drivers/_uring.c``, a ring driven by the raw
``io_uring_setup``/``io_uring_enter``/``io_uring_register`` system calls and ``mmap``. The
driver logic (the page-cache fast path, short transfers, EAGAIN, cancellation, overflow,
close, fork) is the parent's, inherited unchanged; only the calls that touch the ring are
overridden here, under the same method names. What runs in C is the ring path's common
case, end to end, each piece with its Python twin taking every other case:

- **The page-cache fast path** (``Ring.try_inline``, installed as this driver's
  ``try_inline``; twin: the parent's ``try_inline``).
- **A tick's batch** (``Ring.submit_batch``, this driver's ``_submit_batch``): one C call
  takes the IOContext's batch, fills an SQE for each first-issue READ/READV/WRITE/WRITEV
  (direct or buffered, iovec array included) and FSYNC/FDATASYNC, and enters the kernel
  once for all, through the one C function that calls ``io_uring_enter``. Any other op (a
  kind C does not know, a buffered read that goes to the fast path first, a buffer the
  kernel cannot take, no SQ slot left) goes to the parent's ``_submit_one`` in its place
  in the batch, so a kind added in Python works here unchanged and every error is worded
  by the twin.
- **Completions and waiters** (``Ring.harvest``): a CQE that finishes its transfer whole,
  or a sync that succeeded, completes its op in C (every other CQE goes to the parent's
  ``_on_cqe``). Under :meth:`reap_and_wake` such an op is also reaped in C and handed to
  the waker the IOContext lends from its glue: a C callable there
  (``aiopg_io/_glue/_wake.c``: an asyncio future's ``set_result``, trio's
  ``reschedule``), so on asyncio a completion reaches its task with no Python frame of
  ours, and the IOContext only gives back the slots.
- **A loop tick's reap** (``Ring.tick``, this driver's ``_tick``; twin: the parent's
  ``reap``): where no backlog, cancel retry or unsubmitted SQE is pending, the harvest
  above and the completion eventfd's read are one C call, and the eventfd is read only
  where the tick emptied the CQ: per tick the pure path paid a read of it and, when the
  reap limit left CQEs, a write to make it readable again, plus the thread fallback's two
  reads of its idle flags (now read only when raised, ``_fallback.py``), each a system call
  and most failing with EAGAIN (docs/benchmarks.md, "The tick in C").

Why C, and why these pieces (docs/benchmarks.md, "Compiled path", has the runs): mypyc on
``_context``, ``drivers/base``, ``drivers/io_uring`` and ``_file`` saved about a tenth of
the CPU per op and needed source changes; the C ring alone, with the driver logic all
Python, was within noise of the pure ring, because the liburing binding was not where the
time goes; the time went to the Python frames each op paid in the driver, the IOContext and
the glue, which the pieces above remove from the ring path. The kernel's share is what fio
pays; what remained above it on a direct read was the file layer (``_file``, ``_checks``),
the IOContext's ``run``, the glue's ``wait`` and the loop itself, about 40 frames, which the
ring path below removes but for the loop's own (docs/benchmarks.md, "The file calls' ring
path in C", has the before and after; not yet all of issue 14's targets against fio, but
ahead of the pure driver on every loop, which is why ``auto`` picks it). The ring removes
the liburing package's kernel floor (6.14): it probes features, not versions. A subclass that overrides
``_on_cqe`` (the tests' fault injectors) sees every CQE, and one that overrides ``_prep``
or ``_submit_one`` gets every op through them, as on the pure driver.

The file calls' ring path (``ring_runs``, a ``_uring.RunPath``; ``_uring.c`` says how it
works): a ``preadinto``/``pwrite`` (and a buffered ``pread``) that goes to the ring, a direct
one or a page-cache miss, is built and staged for the tick's batch from C and parked on a
future of the loop (asyncio, uvloop: resumed by the waker above, no coroutine frame of the
file, the IOContext or the glue per op) or, where waiters are parked tasks (trio), through the
glue's ``wait`` (no frame of the file's or the IOContext's; on trio that wait is itself C where
the glue allows it, ``_glue/_wake.c``'s TaskParker, so no frame at all). Why this and not a
faster Python path: with the batch, the harvest and the waker in C, those frames were what a
direct read still paid above the loop's own work (docs/benchmarks.md, "The tick in C"), and
any Python left on the path keeps paying them; so, as the fast path does, the common case runs in C
and every other (an unusual argument, a call from another loop, the cap on ops in flight
reached, a closed context, a cancellation thrown in while the op waits on a future) goes to the
pure coroutine, its twin, which words every error and holds the cancellation rules.

The file calls' fast path (``fast_reads``, a ``_uring.FastPath``; ``_uring.c`` says how it
works). With ``try_inline`` in C a cached read still cost several times the system call: the
rest was the ``Op``, the coroutine frames of the file, the context and the glue, and the
``asyncio.sleep(0)`` after it, each measured alone. So what was chosen, by those figures:
(a) no ``Op`` where the page cache holds the bytes: the file's reader takes the fd, buffer
and offset, and an op is built only on a miss (the pure path then tries the cache again
before the ring, one failed system call more on a miss, which also keeps this path out of
the context's code); (b) no coroutine where it hits: ``pread``/``preadinto`` (and the
cursor's ``read``/``readinto`` where each is one read) are plain functions returning a C
awaitable, and the coroutine with every check and error runs only when the reader declines;
(c) on asyncio no yield per call but one every few completions (or bytes), with a bound
(docs/guide.md, "Schedule points"): the yield alone cost about what the read did, and it was
the one cost left that the file layer could remove. trio keeps a checkpoint per call, its
convention. The before/after figures are in docs/benchmarks.md.

Facts this module relies on (the ring's own are in ``_uring.c``):

- ``IORING_REGISTER_PROBE`` (5.6) lists the opcodes the kernel has; ``IORING_OP_FTRUNCATE``
  (6.9) is used only where listed, else the op runs inline as in the parent. FALLOCATE
  (5.6), OPENAT, CLOSE and STATX (5.6), RENAMEAT and UNLINKAT (5.11), MKDIRAT, SYMLINKAT
  and LINKAT (5.15) are prepped in the ring where listed (the SQE fields of liburing's
  ``io_uring_prep_*``, see ``_uring.c``), and left out of :attr:`Capabilities.kinds` where
  not, so a DriverSpec runs them in threads (drivers/_fallback.py): the same kinds in the
  same places as the parent. Before 5.6 the probe is refused and only the 5.1 opcodes
  (readv, writev, fsync, nop) are assumed. A path goes to the kernel as a bytes object
  (``os.fsencode``; NUL-terminated), kept on the op until its CQE; one with a NUL inside
  never does (the kernel would read a shorter path, another file): its op runs inline with
  the blocking call, as in the parent. STATX's ``struct statx`` is written by the kernel
  straight into the op's buffer (``Ring.prep_statx``), which the op keeps until the CQE
  as a read keeps its own; the parent copies it out of the binding's ``Statx`` instead.
- A linked write + sync (``OpKind.WRITE_SYNC``) is the parent's chain (its opening comment:
  ``IOSQE_IO_LINK``, 5.3; ``IOSQE_CQE_SKIP_SUCCESS`` where ``IORING_FEAT_CQE_SKIP``, 5.17,
  says the kernel has it, else the whole write's CQE is posted and the sync's ends the op),
  both SQEs taken by one C call (``Ring.prep_write_sync``) so a chain is never split
  across two submissions. It runs where the probe answers (5.6; the link is older) and the
  SQ has two entries; elsewhere in threads. A chain whose sync succeeded (its CQE, the
  chain's only one where the write's is skipped) is completed in C by ``Ring.harvest`` and
  its waiter resumed there, as a sync is; a write's CQE (an error, a short write, or a
  whole write on a kernel without the skip) and a failed sync go to the parent's
  ``_on_link_cqe``.
- ``IORING_SETUP_SUBMIT_ALL`` (5.18) is asked for and dropped where the kernel refuses it.
  Without it ``io_uring_enter`` stops at an SQE that fails early and leaves the rest queued:
  :meth:`_submit_sq` then marks the SQ unsubmitted, and the next reap submits the rest.
- ``IORING_ASYNC_CANCEL_ANY``/``ALL`` (5.19), used by close, are EINVAL before: close then
  cancels op by op (5.5), and before 5.5 keeps what no cancel stops (the parent's
  "Cancelling at close"). While closing, CQEs go through the parent's harvest, which reads
  the CQEs of close's cancels; C's ignores every CQE that names no op.
- A waker that raises in ``Ring.harvest`` stops it after that op is reaped and handed
  over (counted in ``Ring.woken``, a running total that only a :meth:`reap_and_wake`
  raises, since only it lends C a waker); the parent's ``_collect`` keeps what it finished
  for the next reap and makes that reap come, and the next :meth:`reap_and_wake` that
  returns counts every op handed over since the last one returned, so the error propagates
  to the IOContext and the loop with no op lost and no slot left owed.
- Anything else that raises in ``Ring.harvest``/``tick`` once an op's CQE is retired (its
  ``on_cqe``, the parent's ``_on_cqe``, or a signal handler's exception there) leaves that
  op, with its CQE, for ``Ring.take_raised``: the parent's ``_keep_for_next_reap`` hands it
  to ``_rescue_raised``, as for an op of its own harvest (see :meth:`_take_raised`).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import select
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import DriverUnavailableError
from ._compiled import load
from .base import (
    FILE_KINDS,
    PATH_KINDS,
    STATX_BASIC_STATS,
    STATX_SIZE,
    SYNC_FSYNC,
    TRANSFER_KINDS,
    DriverStatistics,
    Op,
    OpKind,
    OpState,
    int_option,
)
from .io_uring import (
    DEFAULT_ENTRIES,
    DEFAULT_REAP_BATCH,
    DEFAULT_SQPOLL,
    ENTER_LATER,
    KIND_OPCODES,
    PROBE_TIMEOUT_SECONDS,
    TRIED_INLINE,
    InFlight,
    IoUringDriver,
    explain_setup_error,
    io_uring_disabled,
)

__all__ = ["MAX_SQ_THREAD_IDLE_MS", "IoUringCDriver", "compiled_status"]

#: ``sq_thread_idle`` (ms the SQ thread polls an idle ring before it sleeps): 0 is the
#: kernel's default (1000); the bound only catches a unit mistake (seconds as ms).
MAX_SQ_THREAD_IDLE_MS = 60_000

_U: Any
_IMPORT_ERROR: str | None
_U, _IMPORT_ERROR = load("aiopg_io.drivers._uring")


def compiled_status() -> tuple[bool, str]:
    """Whether the compiled ring is loaded here, and the one line that says why (not)."""
    if _U is None:
        assert _IMPORT_ERROR is not None
        return False, _IMPORT_ERROR
    return True, f"C extension loaded from {_U.__file__}"


def _probe() -> str | None:
    """Set up a small ring and round-trip a NOP through it; a reason on any failure."""
    if _U is None:
        return _IMPORT_ERROR
    disabled = io_uring_disabled()
    if disabled >= 2:
        return "io_uring is disabled system-wide (/proc/sys/kernel/io_uring_disabled = 2); set it to 0"
    try:
        ring = _U.Ring(4)
    except OSError as exc:
        return explain_setup_error(exc, disabled)
    efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        ring.register_eventfd(efd)
        ring.prep_nop(1)
        ring.submit()
        readable, _, _ = select.select([efd], [], [], PROBE_TIMEOUT_SECONDS)
        if not readable:
            return f"a NOP submitted to io_uring did not complete within {PROBE_TIMEOUT_SECONDS} s"
        got, _ = ring.reap(0)
        if got != [(1, 0)]:
            return f"a NOP round trip through io_uring returned {got!r}, expected [(1, 0)]"
        return None
    except OSError as exc:
        return f"io_uring NOP round trip failed: {exc}"
    finally:
        ring.close()
        os.close(efd)


_REASON: list[str | None] = []


def _ring_opcodes(ring: Any) -> frozenset[int] | None:
    """The opcodes the kernel lists for ``ring`` (None before 5.6: no probe). Tests mask
    this to play an older kernel."""
    ops: frozenset[int] | None = ring.probe()
    return ops


#: The kinds ``_uring.c`` preps (``Ring.prep_path`` for the path ops, ``Ring.prep_statx``
#: for STATX), each where the probe lists its opcode: the pure driver's kinds. WRITE_SYNC
#: (``Ring.prep_write_sync``) is added per ring, where the probe answers (see ``__init__``).
_C_PREPPED = FILE_KINDS | PATH_KINDS | {OpKind.CLOSE}


#: The transfers ``Ring.harvest`` may complete in C on a whole CQE: not WRITE_SYNC, whose
#: write CQE (posted where the kernel cannot skip it) ends nothing: its sync's does (and
#: harvest completes that one in C when it succeeded, with a waker: ``link_sync_done``).
_C_WHOLE_KINDS = TRANSFER_KINDS - {OpKind.WRITE_SYNC}
#: The path kinds whose SQE names a second path (``Op.newpath``).
_TWO_PATH_KINDS = frozenset({OpKind.RENAMEAT, OpKind.LINKAT, OpKind.SYMLINKAT})


def _kind_opcodes() -> dict[OpKind, int]:
    """The opcode each kind needs beyond the 5.1 ones (readv, writev, fsync, nop): the
    parent's table, by the names ``_uring`` exports too."""
    codes: dict[OpKind, int] = {
        kind: getattr(_U, name) for kind, name in KIND_OPCODES.items() if kind in _C_PREPPED
    }
    return codes


def _native_kinds(ops: frozenset[int] | None) -> frozenset[OpKind]:
    """The kinds this ring runs, given the probed opcodes (``ops``)."""
    needs = _kind_opcodes()
    return frozenset(k for k in _C_PREPPED if k not in needs) | frozenset(
        k for k, code in needs.items() if ops is not None and code in ops
    )


class IoUringCDriver(IoUringDriver):
    name = "io_uring_c"

    def __init__(
        self,
        *,
        entries: int = DEFAULT_ENTRIES,
        nowait_fast_path: bool | int | str | None = None,
        reap_batch: int = DEFAULT_REAP_BATCH,
        sqpoll: bool | int | str = DEFAULT_SQPOLL,
        sq_thread_idle: int = 0,
    ) -> None:
        entries = self._options(entries, nowait_fast_path, reap_batch, sqpoll)
        idle = int_option(self.name, "sq_thread_idle", sq_thread_idle, 0, MAX_SQ_THREAD_IDLE_MS)
        if _U is None:
            raise DriverUnavailableError(f"driver 'io_uring_c' cannot run here: {_IMPORT_ERROR}")
        try:
            self._ring = _U.Ring(entries, sqpoll=self._sqpoll, sq_thread_idle=idle)
        except OSError as exc:
            raise DriverUnavailableError(self._setup_refused(entries, exc)) from exc
        try:
            self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        except OSError:
            self._ring.close()
            raise
        try:
            self._ring.register_eventfd(self._efd)
        except OSError:
            self._ring.close()
            os.close(self._efd)
            raise
        self._sq_entries = self._ring.sq_entries
        self._cq_entries = self._ring.cq_entries
        ops = _ring_opcodes(self._ring)
        self._ftruncate = ops is not None and _U.IORING_OP_FTRUNCATE in ops
        # A kind whose opcode the probe does not list is left out: a DriverSpec runs it in
        # threads (drivers/_fallback.py); FTRUNCATE stays, run inline where it is missing.
        self._kinds = _native_kinds(ops)
        if ops is not None and self._sq_entries >= 2:
            # A linked write + sync (Ring.prep_write_sync): IOSQE_IO_LINK is 5.3, so any kernel
            # that answers the probe (5.6) has it; its two SQEs need a ring of two.
            self._kinds |= {OpKind.WRITE_SYNC}
        self._init_state()
        self._next_token = self._ring.next_token  # one sequence for C and Python preps
        self._own_on_cqe = type(self)._on_cqe is not IoUringDriver._on_cqe
        self._own_prep = (
            type(self)._prep is not IoUringCDriver._prep
            or type(self)._submit_one is not IoUringDriver._submit_one
            or type(self)._stage is not IoUringDriver._stage
        )
        # A tick's batch in C (Ring.submit_batch): what C does not prep goes to the parent's
        # _submit_one, its twin, in its place in the batch.
        self._ring.enable_batch(
            OpKind.READ, OpKind.READV, OpKind.WRITE, OpKind.WRITEV, OpKind.FSYNC, OpKind.FDATASYNC,
            OpState.IDLE, OpState.SUBMITTED, OpState.COMPLETED, OpState.REAPED, TRIED_INLINE,
            InFlight, self._ops, self._fd_refs, self._fd_direct, self._submit_one, self._nowait,
        )  # fmt: skip
        self._waker: Callable[[Op], object] | None = None  # lent for one reap_and_wake
        # Ring.woken (ops C handed to a waker, a running total) when reap_and_wake last
        # returned: only a reap_and_wake lends C a waker, so what it owes is the difference.
        self._woken_mark = self._ring.woken
        if self._nowait:
            # The page-cache fast path in C: the IOContext calls the ring's try_inline with
            # no Python frame; what C leaves (see _uring.c) goes to the parent's, its twin.
            self._ring.enable_inline(
                OpKind.READ, OpKind.READV, OpState.IDLE, OpState.REAPED, TRIED_INLINE,
                super().try_inline, self._inline_partial,
            )  # fmt: skip
            self.try_inline = self._ring.try_inline  # type: ignore[method-assign]
            # The file calls' fast path (see _uring.c): preadinto/pread with no op at all.
            self.fast_reads = _U.FastPath()
        # The file calls' ring path (see _uring.c): preadinto/pwrite staged with no coroutine;
        # the IOContext binds it to its loop.
        self.ring_runs = _U.RunPath(TRIED_INLINE if self._nowait else None)

    def _inline_partial(self, op: Op, n: int) -> bool:
        """The C fast path read ``n`` bytes, fewer than asked: account them as the parent's
        ``_read_inline`` loop does, and let the parent go on from there."""
        op.advance(n)  # 0 < n < the bytes asked: more to read
        self._counters.short_transfers += 1
        return super().try_inline(op)

    def reap_and_wake(self, waker: Callable[[Op], object]) -> tuple[list[Op], int]:
        """:meth:`reap`, with the whole completions (and syncs that succeeded) that C
        handles moved to REAPED and handed to ``waker`` in C rather than returned."""
        self._check_process()
        if self._own_on_cqe:
            return self.reap(), 0  # every CQE goes to the subclass's _on_cqe
        self._waker = waker
        try:
            out = self._tick()
        finally:
            self._waker = None
        # Counted from the last call that returned: a waker that raised propagates its
        # error, and the ops C handed over by then (reaped: their slots owed) are counted by
        # this return.
        try:
            total = self._ring.woken
            woken = total - self._woken_mark
            self._counters.completed += woken
        except BaseException:  # (a MemoryError, a signal handler's): out to the next reap
            self._keep_for_next_reap(out)
            raise
        self._woken_mark = total
        return out, woken

    def _tick(self) -> list[Op]:
        """:meth:`reap`'s work for one loop tick, in one C call where nothing unusual is
        pending (``Ring.tick``, see ``_uring.c``): the eventfd is read only where the CQ was
        emptied, and not at all where the reap limit left CQEs (it still polls readable, so
        the loop comes back for them). Anything else (ops that went on, the overflow list,
        ops C did not complete, a backlog, cancels to retry, SQEs left queued) goes on in
        the parent's ``_collect``, with what the tick reaped handed over as ready."""
        if self._closed:
            return []
        if (
            self._ready or self._cancel_later or self._sq_unsubmitted or self._sq_deferred or self._backlog
            or self._unapplied
        ):  # fmt: skip
            return self.reap()
        out: list[Op] = []
        flags: int
        try:
            _, flags = self._ring.tick(
                self._reap_batch, self._ops, out, self._on_c_cqe, _C_WHOLE_KINDS,
                OpState.SUBMITTED, OpState.COMPLETED, self._waker, self._efd,
            )  # fmt: skip
        except BaseException:
            # A waker that raised (or the eventfd refused): as in the parent's _collect,
            # nothing reaped is lost; the next reap returns it (and reap_and_wake counts
            # the ops C handed over by then, from Ring.woken).
            self._keep_for_next_reap(out)
            raise
        try:  # whatever raises from here on (a MemoryError, a signal handler's) loses no op
            if flags & _U.TICK_CLEARED:
                self._signalled = bool(flags & _U.TICK_SIGNALLED)
            if out or flags & (_U.TICK_CONTINUED | _U.TICK_OVERFLOW):
                self._ready, out = out, []  # the parent's _collect's now, kept if it raises
                if flags & _U.TICK_CONTINUED:
                    self._submit_sq()
                return self._collect()
            self._counters.reap_calls += 1
        except BaseException:
            self._keep_for_next_reap(out)
            raise
        return out

    def statistics(self) -> DriverStatistics:
        s = super().statistics()
        done = self._ring.inline_done  # whole reads the C fast paths completed
        if self.fast_reads is not None:
            done += self.fast_reads.done
        extra = dict(s.extra)
        extra["fast_path_hits"] += done
        if self._sqpoll:
            extra["sqpoll_wakeups"] = self._ring.sqpoll_wakeups  # submits that woke the SQ thread
        extra["c_prepped"] = self._ring.batch_prepped  # ops submit_batch prepped in C
        extra["c_resumed"] = self._ring.woken  # ops reaped and handed to the waker in C
        extra["c_runs"] = self.ring_runs.runs  # file calls staged by the ring path in C
        return dataclasses.replace(
            s, submitted=s.submitted + done, completed=s.completed + done, extra=tuple(sorted(extra.items()))
        )

    def __repr__(self) -> str:
        return (
            f"<IoUringCDriver entries={self._sq_entries} in_flight={len(self._ops)} "
            f"nowait_fast_path={self._nowait} sqpoll={self._sqpoll} closed={self._closed}>"
        )

    @classmethod
    def unavailable_reason(cls, *, direct: bool = False) -> str | None:
        if not _REASON:
            try:
                _REASON.append(_probe())
            except Exception as exc:  # a probe never raises: whatever broke is the reason
                _REASON.append(f"io_uring probe failed: {exc!r}")
        return _REASON[0]

    def _ring_setup_flags(self) -> int:
        flags: int = self._ring.setup_flags
        return flags

    @classmethod
    def _try_sqpoll_ring(cls) -> None:
        _U.Ring(4, sqpoll=True).close()

    # -- the calls that touch the ring (the parent's, on _uring.Ring) -------------------------

    def _prep(self, op: Op) -> bool:
        """Queue one SQE for ``op``, as the parent's ``_prep`` (same outcomes and errors)."""
        kind = op.kind
        iovec: bytes | None = None
        bufs: list[memoryview] | None = None
        is_read = kind is OpKind.READ or kind is OpKind.READV
        linked = kind is OpKind.WRITE_SYNC
        if is_read or kind is OpKind.WRITE or kind is OpKind.WRITEV or linked:
            bufs = list(op.remaining())
            if not bufs:
                op.complete(0)
                self._ready.append(op)
                return False
            if self._refuse_range(op, op.position(), sum(b.nbytes for b in bufs)):
                return False
            try:
                iovec = _U.iovec(bufs, is_read)
            except BufferError:
                msg = "a read needs writable buffers" if is_read else "buffers not accepted by io_uring"
                self._fail_now(op, OSError(errno.EFAULT if is_read else errno.EINVAL, msg, op.path))
                return False
            except (ValueError, TypeError) as exc:
                self._fail_now(op, OSError(errno.EINVAL, f"buffers not accepted by io_uring: {exc}", op.path))
                return False
        elif kind is OpKind.FTRUNCATE and not self._ftruncate:
            return self._ftruncate_inline(op)
        elif kind is OpKind.FALLOCATE and self._refuse_range(op, op.offset, max(op.length, 0)):
            return False
        data = op.driver_data
        token = data.token if isinstance(data, InFlight) else self._next_token()
        if linked and kind in self._kinds:
            return self._prep_linked(op, iovec, bufs, token)
        paths: tuple[bytes, ...] = ()
        if kind in PATH_KINDS and kind in self._kinds:
            paths = self._paths_of(op)
            if not paths:
                return self._path_op_inline(op)
            if kind is OpKind.STATX:
                bufs = [op.buffers[0]]  # the kernel writes it until the CQE, as a read's
        try:
            queued = self._prep_sqe(op, kind, iovec, paths, token)
            if not queued:
                self._submit_sq()  # the SQ is full: send what is queued and go on
                queued = self._prep_sqe(op, kind, iovec, paths, token)
        except (OverflowError, ValueError, TypeError, NotImplementedError) as exc:
            # Refused before an SQE was taken: the SQ is as it was.
            if isinstance(exc, NotImplementedError):
                err = OSError(errno.EOPNOTSUPP, f"op kind {kind.value} is not supported by io_uring", op.path)
            else:
                err = OSError(errno.EINVAL, f"io_uring refused the op's arguments: {exc}", op.path)
            self._fail_now(op, err)
            return False
        if not queued:
            self._backlog.append(op)
            self._signal()  # reap retries the backlog
            return False
        if not isinstance(data, InFlight):
            data = op.driver_data = InFlight(token)
            refs = self._fd_refs
            refs[op.fd] = refs.get(op.fd, 0) + 1
        data.iovec = iovec  # the kernel reads it until the CQE
        data.buffers = bufs
        data.paths = paths  # NUL-terminated bytes the SQE points into
        self._ops[token] = op
        return True

    def _paths_of(self, op: Op) -> tuple[bytes, ...]:
        """What the SQE of path op ``op`` points into (its twin's ``_paths_of``): its paths
        as NUL-terminated bytes; empty when a path holds a NUL (the kernel would read a
        shorter one) or a STATX's buffer is no place for a ``struct statx``, and the
        blocking call runs the op (``_path_op_inline``), refusing it as the worker does."""
        paths: tuple[bytes, ...] = (os.fsencode(op.path or ""),)
        if op.kind is OpKind.STATX:
            bufs = op.buffers
            if len(bufs) != 1 or bufs[0].readonly or not bufs[0].c_contiguous or bufs[0].nbytes < STATX_SIZE:
                return ()
        elif op.kind in _TWO_PATH_KINDS:
            paths += (os.fsencode(op.newpath or ""),)
        return () if any(b"\0" in p for p in paths) else paths

    def _statx_done(self, op: Op) -> None:
        """Nothing to copy: the kernel wrote the ``struct statx`` into the op's own buffer
        (``Ring.prep_statx``), which the op kept until this CQE."""

    def _prep_linked(self, op: Op, iovec: bytes | None, bufs: list[memoryview] | None, token: int) -> bool:
        """The write and the sync of a linked write + sync (the parent's ``_prep`` for
        WRITE_SYNC, on ``Ring.prep_write_sync``): both SQEs in one submission, after a submit
        when the SQ has no room for two; a fresh user_data for each chain's sync."""
        sync_token = self._next_token()
        fsync_flags = 0 if op.flags & SYNC_FSYNC else _U.IORING_FSYNC_DATASYNC
        args = (op.fd, iovec, op.position(), fsync_flags, token, sync_token)
        try:
            queued = bool(self._ring.prep_write_sync(*args))
            if not queued:
                self._submit_sq()  # the write and its sync go in one submission
                queued = bool(self._ring.prep_write_sync(*args))
        except (OverflowError, ValueError, TypeError) as exc:
            self._fail_now(op, OSError(errno.EINVAL, f"io_uring refused the op's arguments: {exc}", op.path))
            return False
        if not queued:
            self._backlog.append(op)
            self._signal()  # reap retries the backlog
            return False
        data = op.driver_data
        if not isinstance(data, InFlight):
            data = op.driver_data = InFlight(token)
            refs = self._fd_refs
            refs[op.fd] = refs.get(op.fd, 0) + 1
        data.iovec = iovec
        data.buffers = bufs
        data.paths = ()
        data.sync_token = sync_token
        self._ops[token] = op
        self._ops[sync_token] = op
        return True

    def _on_c_cqe(self, op: Op, res: int) -> bool | None:
        """What ``Ring.harvest`` calls for a CQE it leaves (its twin's ``_on_cqe``); a linked
        write + sync's goes to the parent's ``_on_link_cqe``. Harvest has popped the CQE's
        user_data already: while the chain's sync is still in ``_ops`` the CQE was the
        write's, else the sync's. None (the sync's CQE follows) reads as "went on", which
        costs at most an empty submit, on kernels that post a whole write's CQE (< 5.17)."""
        if op.kind is not OpKind.WRITE_SYNC:
            return self._on_cqe(op, res)
        data = op.driver_data
        assert isinstance(data, InFlight)
        sync_out = self._ops.get(data.sync_token) is op
        return self._on_link_cqe(op, data.token if sync_out else data.sync_token, res)

    def _prep_sqe(
        self, op: Op, kind: OpKind, iovec: bytes | None, paths: tuple[bytes, ...], token: int
    ) -> bool:
        """One SQE for ``op``; False when the SQ is full. A kind the ring lacks (not in
        ``_kinds``) never gets here through a DriverSpec; handed directly, it is refused."""
        ring = self._ring
        if kind not in self._kinds:
            raise NotImplementedError(kind)
        if kind is OpKind.READ or kind is OpKind.READV:
            return bool(ring.prep_readv(op.fd, iovec, op.position(), token))
        if kind is OpKind.WRITE or kind is OpKind.WRITEV:
            return bool(ring.prep_writev(op.fd, iovec, op.position(), token))
        if kind is OpKind.FSYNC:
            return bool(ring.prep_fsync(op.fd, 0, token))
        if kind is OpKind.FDATASYNC:
            return bool(ring.prep_fsync(op.fd, _U.IORING_FSYNC_DATASYNC, token))
        if kind is OpKind.FALLOCATE:
            return bool(ring.prep_fallocate(op.fd, op.mode, op.offset, op.length, token))
        if kind is OpKind.FTRUNCATE:
            return bool(ring.prep_ftruncate(op.fd, op.length, token))
        if kind is OpKind.NOP:
            return bool(ring.prep_nop(token))
        # The path ops, as the parent preps them through liburing (same fields).
        dfd = op.fd
        if kind is OpKind.OPENAT:
            return bool(ring.prep_path(_U.IORING_OP_OPENAT, dfd, paths[0], None, op.mode, op.flags, token))
        if kind is OpKind.RENAMEAT:  # len: the new path's directory fd, the same one
            newdfd = dfd & 0xFFFFFFFF  # an int in the kernel's eyes: AT_FDCWD stays -100
            return bool(
                ring.prep_path(_U.IORING_OP_RENAMEAT, dfd, paths[0], paths[1], newdfd, op.flags, token)
            )
        if kind is OpKind.UNLINKAT:
            return bool(ring.prep_path(_U.IORING_OP_UNLINKAT, dfd, paths[0], None, 0, op.flags, token))
        if kind is OpKind.MKDIRAT:
            return bool(ring.prep_path(_U.IORING_OP_MKDIRAT, dfd, paths[0], None, op.mode, 0, token))
        if kind is OpKind.CLOSE:
            return bool(ring.prep_path(_U.IORING_OP_CLOSE, dfd, None, None, 0, 0, token))
        if kind is OpKind.STATX:  # the kernel writes the op's buffer, kept on the op until the CQE
            return bool(ring.prep_statx(dfd, paths[0], op.buffers[0], op.flags, STATX_BASIC_STATS, token))
        if kind is OpKind.LINKAT:  # len: the new path's directory fd, as RENAMEAT's
            newdfd = dfd & 0xFFFFFFFF
            return bool(ring.prep_path(_U.IORING_OP_LINKAT, dfd, paths[0], paths[1], newdfd, op.flags, token))
        if kind is OpKind.SYMLINKAT:  # the link's text, then the link, made in dfd
            return bool(ring.prep_path(_U.IORING_OP_SYMLINKAT, dfd, paths[0], paths[1], 0, 0, token))
        raise NotImplementedError(kind)

    def _submit_batch(self, ops: Sequence[Op], looked_up: list[int]) -> None:
        # In C: every op C preps (see _uring.c, "batches") and one io_uring_enter; the rest
        # go to the parent's _submit_one in their place.
        if self._own_prep:
            return super()._submit_batch(ops, looked_up)
        left: int = self._ring.submit_batch(ops, looked_up)
        if left >= 0:
            self._submitted(left)

    def _submit_sq(self) -> None:
        try:
            left = self._ring.submit()
        except OSError as exc:
            if exc.errno not in ENTER_LATER:
                raise
            left = 1
        self._submitted(left)

    def _submitted(self, left: int) -> None:
        """Bookkeeping after an io_uring_enter that left ``left`` SQEs queued."""
        if left:
            # The kernel is short of resources, or (before SUBMIT_ALL) stopped at an SQE
            # that failed early: the rest stay queued, reap submits them.
            self._sq_unsubmitted = True
            self._signal()
        else:
            self._sq_unsubmitted = self._sq_deferred = False
        self._ring_submits += 1

    def _queue_cancel(self, token: int, flags: int) -> bool:
        user_data = self._cancel_user_data()
        queued = bool(self._ring.prep_cancel64(token, flags, user_data))
        if not queued:
            self._submit_sq()
            queued = bool(self._ring.prep_cancel64(token, flags, user_data))
        return queued

    def _harvest(self, limit: int, out: list[Op]) -> tuple[bool, bool]:
        # In C: a CQE that finishes its transfer whole completes the op there; every other
        # CQE goes to the parent's _on_cqe, the twin (see _uring.c). A subclass that
        # overrides _on_cqe (the tests' fault-injecting drivers) sees every CQE instead.
        # Closing, the parent's reads the CQEs of close's cancels too (see io_uring.py).
        if self._own_on_cqe or self._closed:
            return super()._harvest(limit, out)
        # A waker that raises: the parent's _collect keeps what was reaped for the next
        # reap, and reap_and_wake counts the ops C handed over by then (Ring.woken).
        continued: bool
        left_over: bool
        continued, left_over, _ = self._ring.harvest(
            limit, self._ops, out, self._on_c_cqe, _C_WHOLE_KINDS,
            OpState.SUBMITTED, OpState.COMPLETED, self._waker,
        )  # fmt: skip
        return continued, left_over

    def _take_raised(self) -> tuple[Op, int, int] | None:
        # The op Ring.harvest/tick kept when its on_cqe (or anything after its CQE was
        # retired, short of the waker) raised; else the parent's (its own _apply_cqes).
        raised: tuple[Op, int, int] | None = self._ring.take_raised()
        return raised if raised is not None else super()._take_raised()

    def _take_cqes(self, limit: int) -> tuple[list[tuple[int, int]], bool]:
        entries: list[tuple[int, int]]
        entries, left_over = self._ring.reap(limit)
        return entries, left_over

    def _cq_has_overflow(self) -> bool:
        return bool(self._ring.cq_has_overflow())

    def _flush_overflow(self) -> None:
        self._ring.get_events()

    def _teardown(self) -> None:
        self._ring.disable_inline()  # try_inline -> False; drops the ring's refs to self
        self._ring.disable_batch()
        if self.fast_reads is not None:
            self.fast_reads.disable()  # every file's reader -> the pure path
        self.ring_runs.disable()  # every file's runner -> the pure path; drops the context
        self._ring.unregister_eventfd()
        self._ring.close()
        os.close(self._efd)
