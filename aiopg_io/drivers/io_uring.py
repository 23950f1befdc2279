"""The ``io_uring`` driver: one ring per IOContext, completions signalled on an eventfd.

PostgreSQL's ``io_method=io_uring`` (src/backend/storage/aio/method_io_uring.c), on the PyPI
``liburing`` package (Python bindings written in Zig over C liburing).

Some facts about io_uring this module relies on
------------------------------------------------

- **Waiting.** ``io_uring_register_eventfd(3)``: once an eventfd is registered, the kernel
  signals it whenever it posts a CQE. The event loop waits on that fd (epoll), never in
  liburing: the package's ``io_uring_wait_cqe`` keeps the GIL while it sleeps (DESIGN.md).
  ``reap`` reads the eventfd *before* looking at the CQ, so a CQE posted meanwhile leaves
  the fd readable again instead of being missed.
- **Batching.** ``io_uring_get_sqe(3)`` hands out SQ slots; ``io_uring_submit(3)`` makes
  the kernel consume all of them in one ``io_uring_enter(2)``. A full SQ (``get_sqe``
  returns NULL) is emptied by submitting what is queued, then preparation goes on.
  ``IORING_SETUP_SUBMIT_ALL`` (5.18) keeps the kernel going past an SQE that fails early,
  so every SQE of a batch yields exactly one CQE.
- **CQ overflow.** ``io_uring_setup(2)``: the CQ has twice the SQ entries by default. With
  ``IORING_FEAT_NODROP`` (5.5) a CQE that finds the CQ full is kept on a kernel list and
  ``IORING_SQ_CQ_OVERFLOW`` is set (``io_uring_cq_has_overflow``); the list is moved into
  the CQ by ``io_uring_enter(GETEVENTS)``, i.e. ``io_uring_get_events(3)``. ``reap`` flushes
  until the flag is clear, so overflow costs a few system calls and never reaches a caller.
  ``IORING_SETUP_CQSIZE`` would let the CQ be larger, but the package's ``Param`` has no
  constructor or setters (``io_uring_queue_init(..., IORING_SETUP_CQSIZE)`` is EINVAL with
  ``cq_entries = 0``), so the CQ stays at 2x entries and :attr:`Capabilities.max_in_flight`
  is set to it: the IOContext never has more ops out than the CQ holds, and only direct use
  of the driver (or cancels on top of a full CQ) meets the overflow path.
- **Short transfers and EAGAIN.** ``io_uring_prep_read(3)`` / read(2): a completion may carry
  fewer bytes than asked (end of file, a buffered read that was only partly cached, a file
  shrinking under the read); the rest is resubmitted through :meth:`Op.advance` until the
  op is whole or a read returns 0 (EOF). ``-EAGAIN`` in a CQE (a NOWAIT attempt the kernel
  did not punt to its workers) is resubmitted, at most :data:`MAX_EAGAIN_RETRIES` times.
- **Cancellation.** ``io_uring_prep_cancel(3)``: a cancel SQE names the target by its
  ``user_data``. The target still posts its own CQE: ``-ECANCELED`` when it was stopped,
  its real result when it was already running (the cancel's own CQE then says
  ``-EALREADY``) or done (``-ENOENT``). So a cancelled op keeps its buffers until its CQE,
  tokio-uring's "Ignored" state. Closing cancels everything with
  ``IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL`` (5.19) and drains. A cancel that
  finds no SQ slot even after a flush (the kernel refused the submit for now) is kept and
  queued again by the next reap, and close retries its cancel-all the same way: an op that
  only a cancel can end (a read from an empty pipe) is never left waiting forever.
- **Fork.** The SQ/CQ rings are memory shared with the kernel. A child that submitted on
  its parent's ring would corrupt the parent's queues; ``io_uring_ring_dontfork(3)`` keeps
  the mappings out of children, and every method checks first that it is not running in a
  child, so the child gets a RuntimeError rather than a crash. A child creates its own
  driver. The check is a counter bumped by ``os.register_at_fork`` (a ``getpid()`` per call
  is a system call, and system calls are not cheap in this VM); a child made by a raw
  ``fork(2)`` that bypasses Python's fork hooks is not detected.
- **Availability.** The package needs Linux >= 6.14. ``/proc/sys/kernel/io_uring_disabled``
  (6.6): 0 allows everyone, 1 only members of ``io_uring_group`` (or CAP_SYS_ADMIN), 2 no
  one; ``io_uring_setup`` then fails with EPERM, as it does under container seccomp profiles
  (recent Docker default profiles block the io_uring system calls). Before 5.12 ring memory was charged to
  RLIMIT_MEMLOCK (ENOMEM when exhausted); later kernels charge the memory cgroup.
- **The page-cache fast path.** preadv2(2), ``RWF_NOWAIT`` (4.14): "return instantly if it
  would have to read data from the backing storage or wait for a lock"; partial data is
  returned as a short count, nothing as EAGAIN. For a buffered read that hits the page
  cache this completes the op with one system call and no ring round trip; what it could
  not read goes to the ring. The IOContext calls :meth:`IoUringDriver.try_inline` before
  it stages an op, so a cached read also skips the end-of-tick submission, the eventfd
  wake-up and the parked task (it still yields once: see ``IOContext.run``); ``submit``
  tries the same for ops handed to it directly. It is never tried on an O_DIRECT fd: a
  direct read is synchronous in preadv2 and would block the loop for a device round trip.
  Kept because it wins on a warm page cache: less CPU per read and more IOPS, on and off
  in one run (the figures and the command: docs/benchmarks.md, "io_uring"). On a cold
  cache it costs one failed preadv2 per read, so ``nowait_fast_path=0`` (the option, as in
  ``driver="io_uring:nowait_fast_path=0"``) or ``AIOPG_IO_URING_NOWAIT=0`` turns it off.

Facts about the PyPI package (checked on 2026.3.30; several are in DESIGN.md too)
---------------------------------------------------------------------------------

- ``io_uring_prep_read`` takes only a ``bytearray``; ``Iovec`` takes a *list* (not a tuple)
  of bytes-like objects, memoryviews included, so every transfer goes through
  readv/writev. ``Iovec`` keeps no reference to its buffers: the op does (``driver_data``).
- ``cqe[i]`` for ``i > 0`` ignores the ring mask; completions are read with ``CqeIter``
  (only ``cqe[0]`` is valid inside it) and retired with ``io_uring_cq_advance``.
- ``CQE.res`` *raises* the OSError for a negative result (the package's ``trap_error``);
  the errno is recovered from the exception. ``io_uring_peek_cqe`` raises on an empty CQ,
  which is why the CQ is read with ``CqeIter`` instead.
- A prep function that raises (a negative offset overflows ``u64``) has already taken an
  SQE; it is turned into a NOP with the reserved ``user_data`` 0 so it completes harmlessly.
- Path ops: ``io_uring_prep_open`` (IORING_OP_OPENAT, 5.6), ``io_uring_prep_rename``
  (RENAMEAT, 5.11), ``io_uring_prep_unlink`` (UNLINKAT, 5.11), ``io_uring_prep_mkdir``
  (MKDIRAT, 5.15; the binding marks it "coded but not tested": tests/test_os.py checks it
  against ``os.mkdir``) and ``io_uring_prep_close`` (CLOSE, 5.6) take their paths as
  ``pathlib.Path`` only (bytes and str raise TypeError), and pass the kernel a pointer into
  the Path's string, not a copy: the Path objects are kept on the op (``_InFlight.buffers``)
  until its CQE. The kernel copies a path when it prepares the SQE (``getname`` in
  ``io_openat_prep``, ``io_renameat_prep``, ``io_unlinkat_prep``, ``io_mkdirat_prep``), but
  nothing here relies on that. A NUL byte inside a path silently ends it there: the
  caller has refused such paths before. Which of these opcodes the kernel has is asked
  once (``io_uring_get_probe``, 5.6: "don't compare versions"); the ones it lacks are left
  out of :attr:`Capabilities.kinds`, and a DriverSpec runs them in threads.
- Registered buffers (``io_uring_register_buffers``, every function of it marked "coded but
  not tested" by the package) are not used. ``io_uring_prep_read_fixed`` takes only a
  ``bytearray``, but ``io_uring_prep_readv_fixed`` (IORING_OP_READV_FIXED, 6.15) takes an
  ``Iovec``, so an mmap arena such as the buffer pool's could be registered once and read
  into. Measured on a bare ring (docs/benchmarks.md, "Registered buffers"), the saving is
  a small part of what a read costs through ``aiopg_io.open(..., direct=True)``, below
  run-to-run noise, while it would need a buffer index on every op, a registration per
  ring (one per IOContext) and pinned memory charged to the memory cgroup. Not worth it
  until the per-op Python cost is far lower; so no buffer is registered and the pool does
  not ask for it.

Convoys (``reap_batch``): at high queue depth with direct I/O, the reads of one submission
tend to complete together, so one reap returns all of them, every task resumes in the same
tick, and their next reads go out together at the end of it: the device idles while Python
handles the batch, then gets it all at once, and the pattern repeats (observed at 32 in
flight: every reap returned all 32). ``reap_batch=N`` makes ``reap`` take at most N CQEs
and leave ``fileno()`` readable for the rest, so the next reads go out while later
completions are still being handled. :data:`DEFAULT_REAP_BATCH` is the N that won when it
was chosen (direct reads under asyncio, at the same CPU per read); the runs, and a later one
that does not show the gain: docs/benchmarks.md, "reap_batch". 0 removes the limit.
Completions that never touched the ring (the fast path) are always returned at once.

How the fast path knows an fd is O_DIRECT: files say so (``Op.direct``, found once at open);
for an op that does not, ``fcntl(F_GETFL)``, remembered per fd for as long
as the ring holds an op on that fd. An op owns its fd until it is reaped, so while one is
held the number cannot be closed and reused for another file; when the last one is reaped
the entry is dropped, because from then on it could be (fd numbers are recycled). A batch
that looked an fd up and left nothing in the ring drops it too. So a direct read issued while
others on its file are in flight pays no fcntl, a lone one pays one, and a batch of 32
cached reads of one file pays one. (Toggling O_DIRECT
with ``fcntl(F_SETFL)`` on an fd with ops in flight would go unnoticed; aiopg_io never does.)
"""

from __future__ import annotations

import errno
import importlib
import itertools
import os
import pathlib
import platform
import resource
import select
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from ..errors import DriverOptionError, DriverUnavailableError
from ._fork import generation as fork_generation
from ._memory import fd_is_direct
from .base import (
    FILE_KINDS,
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

_L: Any
try:
    _L = importlib.import_module("liburing")
except Exception as _exc:  # ImportError, or the package failing to read /proc at import
    _L = None
    _IMPORT_ERROR: str | None = f"{type(_exc).__name__}: {_exc}"
else:
    _IMPORT_ERROR = None

__all__ = ["DEFAULT_ENTRIES", "DEFAULT_REAP_BATCH", "MAX_EAGAIN_RETRIES", "MIN_KERNEL", "IoUringDriver"]

DEFAULT_ENTRIES = 256
DEFAULT_REAP_BATCH = 8
MAX_EAGAIN_RETRIES = 1000
#: What the PyPI liburing package needs (its README: "Linux >= 6.14").
MIN_KERNEL = (6, 14)
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
_CLOSE_POLL_SECONDS = 0.05
_PROBE_TIMEOUT_SECONDS = 2.0
#: io_uring_prep_cancel(3) flags (5.19): match any request, cancel every match.
_CANCEL_ANY = 1 << 2
_CANCEL_ALL = 1 << 0
#: user_data of SQEs whose CQE nobody waits for (cancels, NOPs standing in for failed preps).
_UNTRACKED = 0


def _env_nowait_default() -> bool:
    raw = os.environ.get("AIOPG_IO_URING_NOWAIT", "1").strip().lower()
    return raw not in ("0", "false", "no", "off")


def _res_of(entry: Any) -> int:
    try:
        res: int = entry.res
    except OSError as exc:
        return -(exc.errno or errno.EIO)
    return res


# -- availability ----------------------------------------------------------------------------


def _kernel_version() -> tuple[int, int]:
    parts = platform.release().split(".", 2)
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def _io_uring_disabled() -> int:
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0  # the sysctl predates 6.6 or /proc is hidden: nothing restricts io_uring


def _io_uring_group() -> str:
    try:
        with open("/proc/sys/kernel/io_uring_group") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _setup_ring(entries: int) -> Any:
    """A ring ready for use (tests replace this to simulate refusals)."""
    ring = _L.Ring()
    _L.io_uring_queue_init(entries, ring, _L.IORING_SETUP_SUBMIT_ALL)
    return ring


def _explain_setup_error(exc: OSError, disabled: int) -> str:
    code = exc.errno
    if code == errno.EPERM:
        if disabled == 1:
            return (
                "io_uring is restricted by /proc/sys/kernel/io_uring_disabled = 1 to members of group "
                f"{_io_uring_group()} (io_uring_group); add the user to it or set the sysctl to 0"
            )
        return (
            "io_uring_setup was refused (EPERM): a seccomp filter blocks it (container runtimes' "
            "default profiles do); allow io_uring_setup/io_uring_enter/io_uring_register"
        )
    if code == errno.ENOSYS:
        return "io_uring_setup is not implemented (ENOSYS): kernel built without io_uring, or seccomp"
    if code == errno.ENOMEM:
        soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        limit = "unlimited" if soft == resource.RLIM_INFINITY else f"{soft} bytes"
        return (
            f"not enough memory for the ring (ENOMEM): RLIMIT_MEMLOCK is {limit}; "
            "raise it (ulimit -l) or the memory cgroup limit"
        )
    return f"io_uring_setup failed: {exc}"


def _probe() -> str | None:
    """Set up a small ring and round-trip a NOP through it; a reason on any failure."""
    if _L is None:
        return f"the liburing package cannot be imported ({_IMPORT_ERROR}); pip install liburing"
    kernel = _kernel_version()
    if kernel < MIN_KERNEL:
        need = ".".join(map(str, MIN_KERNEL))
        return f"kernel {platform.release()} is older than the liburing package needs (>= {need})"
    disabled = _io_uring_disabled()
    if disabled >= 2:
        return "io_uring is disabled system-wide (/proc/sys/kernel/io_uring_disabled = 2); set it to 0"
    try:
        ring = _setup_ring(4)
    except OSError as exc:
        return _explain_setup_error(exc, disabled)
    efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        _L.io_uring_register_eventfd(ring, efd)
        sqe = _L.io_uring_get_sqe(ring)
        _L.io_uring_prep_nop(sqe)
        sqe.user_data = 1
        _L.io_uring_submit(ring)
        readable, _, _ = select.select([efd], [], [], _PROBE_TIMEOUT_SECONDS)
        if not readable:
            return f"a NOP submitted to io_uring did not complete within {_PROBE_TIMEOUT_SECONDS} s"
        cqe = _L.Cqe()
        got = [(cqe[0].user_data, _res_of(cqe[0])) for _ in _L.CqeIter(ring, cqe)]
        _L.io_uring_cq_advance(ring, len(got))
        if got != [(1, 0)]:
            return f"a NOP round trip through io_uring returned {got!r}, expected [(1, 0)]"
        return None
    except OSError as exc:
        return f"io_uring NOP round trip failed: {exc}"
    finally:
        _L.io_uring_queue_exit(ring)
        os.close(efd)


_REASONS: dict[bool, str | None] = {}
_PROBED: list[dict[str, bool]] = []
# The opcode each path kind needs (CLOSE counts as one: it came with OPENAT).
_PATH_OPCODES = {
    OpKind.OPENAT: "IORING_OP_OPENAT",
    OpKind.RENAMEAT: "IORING_OP_RENAMEAT",
    OpKind.UNLINKAT: "IORING_OP_UNLINKAT",
    OpKind.MKDIRAT: "IORING_OP_MKDIRAT",
    OpKind.CLOSE: "IORING_OP_CLOSE",
}


def _opcodes() -> dict[str, bool]:
    """The kernel's opcodes (``io_uring_get_probe``), asked once per process."""
    if not _PROBED:
        try:
            ops = _L.probe() or {}
        except OSError:
            ops = {}
        _PROBED.append(dict(ops))
    return _PROBED[0]


def _ftruncate_supported() -> bool:
    return bool(_opcodes().get("IORING_OP_FTRUNCATE"))


def _native_kinds() -> frozenset[OpKind]:
    ops = _opcodes()
    return FILE_KINDS | {kind for kind, name in _PATH_OPCODES.items() if ops.get(name)}


# -- the driver ------------------------------------------------------------------------------


# op.driver_data of a read try_inline() found not cached (in whole or in part).
_TRIED_INLINE = object()


class _InFlight:
    """What the driver keeps on an op (``op.driver_data``) while the kernel may use it."""

    __slots__ = ("buffers", "cancel_queued", "iovec", "paths", "token")

    def __init__(self, token: int) -> None:
        self.token = token
        self.cancel_queued = False
        self.iovec: Any = None  # the liburing.Iovec of the SQE in flight
        self.buffers: list[memoryview] | None = None  # what the Iovec points into
        self.paths: tuple[pathlib.Path, ...] = ()  # what a path op's SQE points into


class IoUringDriver(Driver):
    name = "io_uring"

    def __init__(
        self,
        *,
        entries: int = DEFAULT_ENTRIES,
        nowait_fast_path: bool | int | str | None = None,
        reap_batch: int = DEFAULT_REAP_BATCH,
    ) -> None:
        entries = self._options(entries, nowait_fast_path, reap_batch)
        if _L is None:
            raise DriverUnavailableError(f"driver 'io_uring' cannot run here: {_probe()}")
        try:
            self._ring = _setup_ring(entries)
        except OSError as exc:
            raise DriverUnavailableError(
                f"driver 'io_uring' cannot set up a ring of {entries} entries: "
                f"{_explain_setup_error(exc, _io_uring_disabled())}"
            ) from exc
        try:
            self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        except OSError:
            _L.io_uring_queue_exit(self._ring)
            raise
        try:
            _L.io_uring_register_eventfd(self._ring, self._efd)
            _L.io_uring_ring_dontfork(self._ring)
        except OSError:
            _L.io_uring_queue_exit(self._ring)
            os.close(self._efd)
            raise
        # The kernel rounds the SQ up to a power of two and makes the CQ twice that.
        self._sq_entries = 1 << (entries - 1).bit_length()
        self._cq_entries = 2 * self._sq_entries
        self._ftruncate = _ftruncate_supported()
        self._kinds = _native_kinds()
        self._cqe = _L.Cqe()
        self._init_state()

    def _options(self, entries: int, nowait_fast_path: bool | int | str | None, reap_batch: int) -> int:
        """Check the options (named after ``self.name``), keep the fast path's and the reap
        batch; return ``entries``."""
        name = self.name
        entries = int_option(name, "entries", entries, 1, 32768)
        if isinstance(reap_batch, bool) or not isinstance(reap_batch, int) or reap_batch < 0:
            raise DriverOptionError(
                f"{name} reap_batch={reap_batch!r} must be 0 (no limit) or a positive count"
            )
        self._nowait = (
            _env_nowait_default()
            if nowait_fast_path is None
            else flag_option(name, "nowait_fast_path", nowait_fast_path)
        )
        self._nowait = self._nowait and bool(_RWF_NOWAIT) and hasattr(os, "preadv")
        self._reap_batch = reap_batch
        return entries

    def _init_state(self) -> None:
        """The bookkeeping around a ring that is set up (``_ring``, ``_efd`` and the sizes)."""
        self._ops: dict[int, Op] = {}  # token (user_data) -> op the kernel owns
        # fd -> ops the ring holds on it, and whether it is O_DIRECT (valid while held).
        self._fd_refs: dict[int, int] = {}
        self._fd_direct: dict[int, bool] = {}
        self._ready: list[Op] = []  # completed without a CQE (fast path, refused at prep)
        self._backlog: deque[Op] = deque()  # no SQ slot could be had; retried in reap
        self._sq_unsubmitted = False  # io_uring_submit refused for now (EAGAIN/EBUSY)
        self._sq_deferred = False  # cancel SQEs queued for the next submit or reap
        self._cancel_later: list[Op] = []  # cancels that found no SQ slot; retried in reap
        self._signalled = False  # we wrote the eventfd and no reap has read it yet
        self._next_token = itertools.count(_UNTRACKED + 1).__next__
        self._pid = os.getpid()
        self._generation = fork_generation()
        self._closed = False
        self._counters = DriverCounters()
        self._fast_path_hits = 0
        self._eagain = 0
        self._ring_submits = 0

    def __repr__(self) -> str:
        return (
            f"<IoUringDriver entries={self._sq_entries} in_flight={len(self._ops)} "
            f"nowait_fast_path={self._nowait} closed={self._closed}>"
        )

    @classmethod
    def unavailable_reason(cls, *, direct: bool = False) -> str | None:
        # O_DIRECT needs nothing more of io_uring than readv/writev: one answer serves both.
        key = bool(direct)
        if key not in _REASONS:
            try:
                _REASONS[key] = _probe()
            except Exception as exc:  # a probe never raises: whatever broke is the reason
                _REASONS[key] = f"io_uring probe failed: {exc!r}"
        return _REASONS[key]

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            asynchronous=True, inline=self._nowait, max_in_flight=self._cq_entries, kinds=self._kinds
        )

    @property
    def nowait_fast_path(self) -> bool:
        return self._nowait

    # -- guards -----------------------------------------------------------------------------

    def _check_process(self) -> None:
        if self._generation != fork_generation():
            raise RuntimeError(
                f"this io_uring ring belongs to the parent process (pid {self._pid}); a forked child "
                f"(pid {os.getpid()}) must not touch it: open files (or create an IoUringDriver) anew "
                "in the child"
            )

    # -- submission -------------------------------------------------------------------------

    def submit(self, ops: Sequence[Op]) -> None:
        self._check_process()
        if self._closed:
            raise RuntimeError("io_uring driver is closed")
        c = self._counters
        c.submit_calls += 1
        c.submitted += len(ops)
        nready = len(self._ready)
        looked_up: list[int] = []
        self._submit_batch(ops, looked_up)
        fd_direct = self._fd_direct
        for fd in looked_up:
            if fd not in self._fd_refs:
                del fd_direct[fd]  # no op holds the fd open: its number may be reused
        if len(self._ready) > nready:
            # Completions that never touched the ring must still make fileno() readable.
            self._signal()

    def _submit_batch(self, ops: Sequence[Op], looked_up: list[int]) -> None:
        """Stage every op of the batch, then one submission for all."""
        if self._stage(ops, looked_up):
            self._submit_sq()

    def _submit_one(self, op: Op, looked_up: list[int]) -> bool:
        """Stage one IDLE op of a batch (the io_uring_c driver's C batch hands it the ops
        it leaves); True when an SQE was queued."""
        return self._stage((op,), looked_up)

    def _stage(self, ops: Sequence[Op], looked_up: list[int]) -> bool:
        """Take IDLE ops: the page-cache fast path for a buffered read, else an SQE each.
        True when an SQE was queued; fds whose mode was asked go to ``looked_up``."""
        queued = False
        nowait = self._nowait
        fd_direct = self._fd_direct
        for op in ops:
            op.set_state(OpState.SUBMITTED)
            kind = op.kind
            if nowait and op.driver_data is None and (kind is OpKind.READ or kind is OpKind.READV):
                fd = op.fd
                direct = op.direct
                if direct is None:
                    direct = fd_direct.get(fd)
                if direct is None:
                    direct = fd_direct[fd] = fd_is_direct(fd)
                    looked_up.append(fd)
                if not direct and self._read_inline(op):
                    self._ready.append(op)
                    continue
            queued = self._prep(op) or queued
        return queued

    def try_inline(self, op: Op) -> bool:
        """The page-cache fast path, before any submission: a buffered read the cache holds
        whole is done here, with no SQE, no eventfd wake-up and no parked task."""
        kind = op.kind
        if not (kind is OpKind.READ or kind is OpKind.READV) or self._closed:
            return False
        direct = op.direct
        if direct is None:
            direct = fd_is_direct(op.fd)
        if direct:
            return False
        if self._read_inline(op):
            op.set_state(OpState.REAPED)
            c = self._counters
            c.submitted += 1
            c.completed += 1
            return True
        op.driver_data = _TRIED_INLINE  # submit() goes straight to the ring
        return False

    def _read_inline(self, op: Op) -> bool:
        """Try a buffered read from the page cache without blocking; True when it is whole."""
        fd = op.fd
        while True:
            rest = op.remaining()
            if not rest:
                break
            try:
                n = os.preadv(fd, rest, op.position(), _RWF_NOWAIT)
            except (OSError, BufferError, ValueError, OverflowError):
                # EAGAIN: not (all) cached. Anything else (a read-only buffer, a bad fd): the
                # ring path reports it, with the op's path.
                return False
            if not op.advance(n):
                break
            self._counters.short_transfers += 1
        op.complete(0)
        self._fast_path_hits += 1
        return True

    def _fail_now(self, op: Op, err: int | OSError) -> None:
        op.fail(err)
        self._ready.append(op)

    def _get_sqe(self) -> Any:
        sqe = _L.io_uring_get_sqe(self._ring)
        if sqe is None:
            self._submit_sq()  # the SQ is full: send what is queued and go on
            sqe = _L.io_uring_get_sqe(self._ring)
        return sqe

    def _prep(self, op: Op) -> bool:
        """Queue one SQE for ``op`` (first issue or the rest of a short transfer).

        Returns True when an SQE was queued; otherwise the op is completed (an error) or
        waits in the backlog, and reap will see it.
        """
        kind = op.kind
        iovec: Any = None
        bufs: list[memoryview] | None = None
        paths: tuple[pathlib.Path, ...] = ()
        is_read = kind is OpKind.READ or kind is OpKind.READV
        if is_read or kind is OpKind.WRITE or kind is OpKind.WRITEV:
            bufs = list(op.remaining())
            if not bufs:
                op.complete(0)
                self._ready.append(op)
                return False
            if op.offset < 0:
                self._fail_now(op, OSError(errno.EINVAL, f"offset {op.offset} is negative", op.path))
                return False
            if is_read and any(b.readonly for b in bufs):
                self._fail_now(op, OSError(errno.EFAULT, "a read needs writable buffers", op.path))
                return False
            try:
                iovec = _L.Iovec(bufs)
            except (ValueError, TypeError) as exc:
                self._fail_now(op, OSError(errno.EINVAL, f"buffers not accepted by io_uring: {exc}", op.path))
                return False
        elif kind is OpKind.FTRUNCATE and not self._ftruncate:
            return self._ftruncate_inline(op)
        sqe = self._get_sqe()
        if sqe is None:
            self._backlog.append(op)
            self._signal()  # reap retries the backlog
            return False
        data = op.driver_data
        if not isinstance(data, _InFlight):
            data = op.driver_data = _InFlight(self._next_token())
            refs = self._fd_refs
            refs[op.fd] = refs.get(op.fd, 0) + 1
        try:
            if is_read:
                _L.io_uring_prep_readv(sqe, op.fd, iovec, op.position(), 0)
            elif kind is OpKind.WRITE or kind is OpKind.WRITEV:
                _L.io_uring_prep_writev(sqe, op.fd, iovec, op.position(), 0)
            elif kind is OpKind.FSYNC:
                _L.io_uring_prep_fsync(sqe, op.fd, 0)
            elif kind is OpKind.FDATASYNC:
                _L.io_uring_prep_fsync(sqe, op.fd, _L.IORING_FSYNC_DATASYNC)
            elif kind is OpKind.FALLOCATE:
                _L.io_uring_prep_fallocate(sqe, op.fd, op.mode, op.offset, op.length)
            elif kind is OpKind.FTRUNCATE:
                _L.io_uring_prep_ftruncate(sqe, op.fd, op.length)
            elif kind is OpKind.NOP:
                _L.io_uring_prep_nop(sqe)
            elif kind is OpKind.OPENAT and kind in self._kinds:
                paths = (pathlib.Path(op.path or ""),)
                _L.io_uring_prep_open(sqe, paths[0], op.flags, op.mode, op.fd)
            elif kind is OpKind.RENAMEAT and kind in self._kinds:
                paths = (pathlib.Path(op.path or ""), pathlib.Path(op.newpath or ""))
                _L.io_uring_prep_rename(sqe, paths[0], paths[1], op.flags, op.fd, op.fd)
            elif kind is OpKind.UNLINKAT and kind in self._kinds:
                paths = (pathlib.Path(op.path or ""),)
                _L.io_uring_prep_unlink(sqe, paths[0], op.flags, op.fd)
            elif kind is OpKind.MKDIRAT and kind in self._kinds:
                paths = (pathlib.Path(op.path or ""),)
                _L.io_uring_prep_mkdir(sqe, paths[0], op.mode, op.fd)
            elif kind is OpKind.CLOSE and kind in self._kinds:
                _L.io_uring_prep_close(sqe, op.fd)
            else:
                raise NotImplementedError(kind)
        except (OverflowError, ValueError, TypeError, NotImplementedError) as exc:
            # The SQE is taken and may hold a stale opcode: make it a NOP nobody waits for.
            _L.io_uring_prep_nop(sqe)
            sqe.user_data = _UNTRACKED
            if isinstance(exc, NotImplementedError):
                err = OSError(errno.EOPNOTSUPP, f"op kind {kind.value} is not supported by io_uring", op.path)
            else:
                err = OSError(errno.EINVAL, f"io_uring refused the op's arguments: {exc}", op.path)
            self._fail_now(op, err)
            return True
        data.iovec = iovec
        data.buffers = bufs
        data.paths = paths
        sqe.user_data = data.token
        self._ops[data.token] = op
        return True

    def _ftruncate_inline(self, op: Op) -> bool:
        """Kernels before 6.9 have no IORING_OP_FTRUNCATE: do it here (metadata only, fast).
        False, as ``_prep`` returns for an op that queued no SQE."""
        try:
            os.ftruncate(op.fd, op.length)
        except OSError as exc:
            self._fail_now(op, OSError(exc.errno, exc.strerror, op.path))
        else:
            op.complete(0)
            self._ready.append(op)
        return False

    def _submit_sq(self) -> None:
        try:
            _L.io_uring_submit(self._ring)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EBUSY, errno.EINTR):
                raise
            # The kernel is short of resources: the SQEs stay queued, reap submits them.
            self._sq_unsubmitted = True
            self._signal()
        else:
            self._sq_unsubmitted = self._sq_deferred = False
        self._ring_submits += 1

    # -- completion -------------------------------------------------------------------------

    def fileno(self) -> int:
        self._check_process()
        return self._efd

    def _signal(self) -> None:
        """Make fileno() readable for completions the kernel will not signal."""
        if not self._signalled:  # our earlier write is still unread: readable already
            self._signalled = True
            os.eventfd_write(self._efd, 1)

    def _clear_eventfd(self) -> None:
        self._signalled = False
        try:
            os.read(self._efd, 8)
        except BlockingIOError:
            pass

    def reap(self) -> list[Op]:
        self._check_process()
        if self._closed:
            return []
        self._clear_eventfd()
        return self._collect()

    def _collect(self) -> list[Op]:
        c = self._counters
        c.reap_calls += 1
        if self._cancel_later:
            self._retry_cancels()
        if self._sq_unsubmitted or self._sq_deferred:
            self._submit_sq()
        if self._backlog:
            self._retry_backlog()
        out = self._ready
        self._ready = []
        limit = self._reap_batch
        while True:
            continued, left_over = self._harvest(limit, out)
            if continued and not self._sq_unsubmitted:
                self._submit_sq()
            if left_over:
                self._signal()  # the rest of the CQ is for the next reap
                break
            if self._cq_has_overflow():
                # CQEs wait on the kernel's overflow list: move them into the CQ and go on.
                c.overflows += 1
                self._get_events()
                self._clear_eventfd()
                continue
            break
        out.extend(self._ready)  # requeues that could not be prepped
        self._ready = []
        refs, fd_direct = self._fd_refs, self._fd_direct
        for op in out:
            op.set_state(OpState.REAPED)
            if isinstance(op.driver_data, _InFlight):
                op.driver_data = None  # frees the Iovec; the op still holds its buffers
                fd = op.fd
                left = refs[fd] - 1
                if left:
                    refs[fd] = left
                else:
                    del refs[fd]
                    fd_direct.pop(fd, None)
            if op.cancel_requested and op.error is not None and op.error.errno == errno.ECANCELED:
                c.cancelled += 1
        c.completed += len(out)
        return out

    def _harvest(self, limit: int, out: list[Op]) -> tuple[bool, bool]:
        """Apply up to ``limit`` CQEs (0: all): finished ops go to ``out``. Returns whether
        an op went on (its next SQE queued) and whether the limit left CQEs behind."""
        entries, left_over = self._take_cqes(limit)
        ops = self._ops
        continued = False
        for token, res in entries:
            op = ops.pop(token, None)
            if op is None:
                continue  # a cancel's own CQE, or a NOP that stood in for a refused prep
            if self._on_cqe(op, res):
                out.append(op)
            else:
                continued = True
        return continued, left_over

    def _take_cqes(self, limit: int) -> tuple[list[tuple[int, int]], bool]:
        """Up to ``limit`` CQEs (0: all) as (user_data, res), retired from the CQ, and
        whether the limit left some behind."""
        ring, cqe = self._ring, self._cqe
        entries: list[tuple[int, int]] = []
        left_over = False
        for _ in _L.CqeIter(ring, cqe):
            if limit and len(entries) >= limit:
                left_over = True
                break
            entry = cqe[0]
            entries.append((entry.user_data, _res_of(entry)))
        if entries:
            _L.io_uring_cq_advance(ring, len(entries))
        return entries, left_over

    def _cq_has_overflow(self) -> bool:
        return bool(_L.io_uring_cq_has_overflow(self._ring))

    def _get_events(self) -> None:
        _L.io_uring_get_events(self._ring)

    def _on_cqe(self, op: Op, res: int) -> bool:
        """Apply one completion; True when the op is finished, False when it goes on (its
        next SQE is queued, it waits in the backlog, or it failed at prep into ``_ready``)."""
        c = self._counters
        kind = op.kind
        if res >= 0:
            if not (
                kind is OpKind.READ or kind is OpKind.READV or kind is OpKind.WRITE or kind is OpKind.WRITEV
            ):
                op.complete(res)
                return True
            try:
                more = op.advance(res)
            except OSError as exc:  # a write the device accepted nothing of
                op.fail(exc)
                return True
            if not more:
                op.complete(res)
                return True
            c.short_transfers += 1
        elif res == -errno.EAGAIN and op.retries < MAX_EAGAIN_RETRIES:
            op.retries += 1
            self._eagain += 1
        else:
            op.fail(-res)
            return True
        if op.cancel_requested:
            op.fail(errno.ECANCELED)  # op.transferred says how much happened before
            return True
        c.retries += 1
        self._prep(op)
        return False

    def _retry_backlog(self) -> None:
        queued = False
        backlog = self._backlog
        for _ in range(len(backlog)):
            op = backlog.popleft()
            if op.cancel_requested:
                op.cancelled()
                self._ready.append(op)
                continue
            if not self._prep(op) and not op.done:
                break  # still no room: it went back to the backlog
            queued = True
        if queued:
            self._submit_sq()

    # -- cancellation and shutdown ----------------------------------------------------------

    def cancel(self, op: Op) -> None:
        self._check_process()
        op.cancel_requested = True
        if self._closed or op.state is not OpState.SUBMITTED:
            return
        data = op.driver_data
        if not isinstance(data, _InFlight) or self._ops.get(data.token) is not op or data.cancel_queued:
            return  # completed inline, in the backlog (cancelled when retried), or asked already
        data.cancel_queued = True
        if not self._queue_cancel(data.token, 0):
            # No SQ slot even after a flush (the kernel refused the submit for now): the
            # next reap tries again, so an op that only a cancel ends is not forgotten.
            self._cancel_later.append(op)
        # Not submitted here: the next submit or reap sends every cancel of this tick in one
        # io_uring_enter. The eventfd write makes sure a reap comes (one per tick at most).
        self._sq_deferred = True
        self._signal()

    def _queue_cancel(self, token: int, flags: int) -> bool:
        sqe = self._get_sqe()
        if sqe is None:
            return False
        _L.io_uring_prep_cancel64(sqe, token, flags)
        sqe.user_data = _UNTRACKED
        return True

    def _retry_cancels(self) -> None:
        later, self._cancel_later = self._cancel_later, []
        for op in later:
            data = op.driver_data
            if not isinstance(data, _InFlight) or self._ops.get(data.token) is not op:
                continue  # completed meanwhile
            if not self._queue_cancel(data.token, 0):
                self._cancel_later.append(op)
            else:
                self._sq_deferred = True

    def close(self) -> list[Op]:
        self._check_process()
        if self._closed:
            return []
        self._closed = True
        out: list[Op] = []
        while self._backlog:
            op = self._backlog.popleft()
            op.cancelled()
            self._ready.append(op)
        self._cancel_later.clear()  # the cancel of everything below covers them
        cancel_all = bool(self._ops)
        for op in self._ops.values():
            op.cancel_requested = True  # no continuation after a short transfer
        while True:
            if cancel_all and self._queue_cancel(0, _CANCEL_ANY | _CANCEL_ALL):
                cancel_all = False
                self._submit_sq()
            self._clear_eventfd()
            out.extend(self._collect())
            if not self._ops and not self._ready:
                break
            # The kernel still owns buffers (a running read cannot be stopped): wait for it.
            select.select([self._efd], [], [], _CLOSE_POLL_SECONDS)
            if self._sq_unsubmitted:
                time.sleep(_CLOSE_POLL_SECONDS)
        self._teardown()
        return out

    def _teardown(self) -> None:
        """Release the ring and the eventfd (nothing is in flight any more)."""
        _L.io_uring_unregister_eventfd(self._ring)
        _L.io_uring_queue_exit(self._ring)
        os.close(self._efd)

    def statistics(self) -> DriverStatistics:
        return self._counters.snapshot(
            self.name,
            len(self._ops) + len(self._ready) + len(self._backlog),
            entries=self._sq_entries,
            cq_entries=self._cq_entries,
            fast_path_hits=self._fast_path_hits,
            eagain_retries=self._eagain,
            ring_submits=self._ring_submits,
        )
