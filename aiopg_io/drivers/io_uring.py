"""The ``io_uring`` driver: one ring per IOContext, completions signalled on an eventfd.

PostgreSQL's ``io_method=io_uring`` (src/backend/storage/aio/method_io_uring.c), on the PyPI
``liburing`` package (Python bindings written in Zig over C liburing).

Some facts about io_uring this module relies on
------------------------------------------------

- **Waiting.** ``io_uring_register_eventfd(3)``: once an eventfd is registered, the kernel
  signals it whenever it posts a CQE. The event loop waits on that fd (epoll), never in
  liburing: the package's ``io_uring_wait_cqe`` keeps the GIL while it sleeps (DESIGN.md).
  ``reap`` reads the eventfd *before* looking at the CQ, so a CQE posted meanwhile leaves
  the fd readable again instead of being missed. The ring is set up without
  ``IORING_SETUP_SINGLE_ISSUER``/``DEFER_TASKRUN``, so any thread may submit and reap
  (``_uring.c``'s opening comment has the facts; docs/benchmarks.md, "DEFER_TASKRUN", the
  figures that kept it so); :attr:`IoUringDriver.setup_flags` names the flags in use.
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
- **Cancelling at close on older kernels.** Before 5.19 ``io_async_cancel_prep`` refuses a
  cancel whose flags it does not know: the cancel-all's CQE says ``-EINVAL`` and nothing is
  cancelled; before 5.5 there is no ``IORING_OP_ASYNC_CANCEL`` at all and any cancel SQE
  gets ``-EINVAL``. So close's cancels carry a ``user_data`` of their own
  (:data:`_CLOSE_CANCEL`; the others are untracked) and their CQEs are read: a refused
  cancel-all is followed by one plain cancel per op the ring holds (by its ``user_data``,
  5.5), which says ``-ENOENT`` for an op that completed meanwhile and ``-EALREADY`` for one
  an io-wq worker runs (the kernel interrupts it): in both cases the op's own CQE follows,
  and close keeps draining. If the per-op cancels are refused too, nothing can stop an op
  that never ends on its own (a read from an empty pipe): close waits for the rest
  :data:`_UNCANCELLABLE_WAIT_SECONDS`, then hands the driver to :mod:`._orphans` (ring, fds
  and the ops' buffers kept alive until the kernel returns the ops, then released, as for a
  driver collected unclosed) and raises :class:`~aiopg_io.errors.OpsStillHeldError`
  naming the ops still held and carrying the ones that did end. The finalizer (``__del__``)
  goes through the same steps, bounded by ``_COLLECTED_WAIT_SECONDS``.
- **SQPOLL** (``sqpoll=1``; io_uring_setup(2), ``IORING_SETUP_SQPOLL``): a kernel thread of
  this process ("iou-sqp-<pid>", counted in the process's CPU time) polls the SQ, so a
  submit needs no system call while it is awake; after ``sq_thread_idle`` ms without work
  it sleeps and sets ``IORING_SQ_NEED_WAKEUP``, and the next submit wakes it with
  ``io_uring_enter(IORING_ENTER_SQ_WAKEUP)`` (liburing's ``io_uring_submit`` does that
  here; the C ring in ``_uring.c``). The package's ``Param`` cannot be written, so this
  driver gets the kernel's idle time (1 s); ``io_uring_c`` takes ``sq_thread_idle``. The
  thread is the ring's: a fork child neither has nor may use it (see Fork). Off by
  default (:data:`DEFAULT_SQPOLL`): on the measured two-core machine the polling thread
  costs more CPU per read than the system calls it saves (docs/benchmarks.md, "SQPOLL").
- **Collected without close().** Closing a ring fd does not wait for its ops (the kernel
  cancels and reaps them in a work item afterwards), and the kernel writes into an op's
  buffers until its CQE. So the driver's finalizer does what close does, for at most
  ``_COLLECTED_WAIT_SECONDS``, and what the kernel has not returned by then keeps the
  whole driver alive (:mod:`._orphans`) until it has: no buffer is freed before its CQE.
- **Linked write + sync** (``OpKind.WRITE_SYNC``). io_uring_enter(2), ``IOSQE_IO_LINK``:
  "the next SQE will not be started before this one completes"; "If a chain of SQE links is
  broken by an error, the remaining links are cancelled with -ECANCELED". A read or write
  that transfers fewer bytes than asked breaks the chain too (io_uring/rw.c marks the
  request failed when ``res`` differs from the length asked). So the op is a ``writev`` SQE
  carrying ``IOSQE_IO_LINK`` and ``IOSQE_CQE_SKIP_SUCCESS`` (5.17: "don't post a CQE if the
  request succeeded") and an ``fsync`` SQE after it, each with a ``user_data`` of its own.
  A failed or short write posts its CQE, and the kernel then skips the CQEs of the links it
  cancels (``req_set_fail`` turns the skip into ``REQ_F_SKIP_LINK_CQES``, io_uring.h); a
  whole write posts none and the sync's CQE ends the op. So one CQE per chain, one wake-up.
  Nothing here relies on the skip of the cancelled link's CQE: a write CQE ends the chain
  and drops the sync's ``user_data``, so a late -ECANCELED finds no op and is ignored, and
  every chain's sync gets a fresh ``user_data``. A failed write fails the op with its errno;
  a short write is continued as any transfer (the rest and a new sync, linked again)
  unless a cancel was asked; after a whole write the sync's result decides. A chain must
  not be split across two submissions (the kernel would run the write alone, and the sync
  unlinked beside it): both SQEs are taken only when the SQ has room for two
  (``io_uring_sq_space_left``), after a submit if need be. A cancel targets the write while
  its CQE is out, else the sync.
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
  of ``bytes``, ``bytearray`` or memoryviews (not ``array`` or ``mmap`` themselves), so
  every transfer goes through readv/writev. ``Iovec`` reads a ``bytes``' or ``bytearray``'s
  pointer directly, keeping neither a reference nor an export, but it *exports* each
  memoryview it is given and never releases that export, not even when the ``Iovec`` is
  freed (checked on 2026.3.30: the memoryview's refcount stays one up and ``release()``
  says "memoryview has 1 exported buffer"). So a memoryview passed to it, and the object it
  views, is never freed, and that object stays exported: a ``bytearray`` read into could
  never be resized again, an ``mmap`` never closed. The driver therefore never hands it a
  caller's buffer (:func:`_iovec`): it builds the ``Iovec`` over empty ``bytes`` and writes
  the buffers' addresses and lengths into the ``Iovec``'s own ``struct iovec`` array (its
  fields, ``size_t`` count then array pointer, follow the object header, class.zig), which
  the binding frees with the ``Iovec`` (where every view is all of a ``bytes`` or
  ``bytearray``, those objects go in themselves instead, at the binding's own cost). That
  layout is checked once against an ``Iovec`` built over known ``bytes``; where it differs
  the driver reports itself unavailable. The op keeps its memoryviews
  (``InFlight.buffers``) until its CQE: their own exports keep the memory in place until
  then, and nothing holds it after.
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
  the Path's string, not a copy: the Path objects are kept on the op (``InFlight.buffers``)
  until its CQE. The kernel copies a path when it prepares the SQE (``getname`` in
  ``io_openat_prep``, ``io_renameat_prep``, ``io_unlinkat_prep``, ``io_mkdirat_prep``), but
  nothing here relies on that. A NUL byte inside a path would silently end it there, so
  the op would act on another file: such a path never goes to the ring; its op runs
  inline with the blocking call, which refuses it as the worker does. Which of these
  opcodes the kernel has is asked once (``io_uring_get_probe``, 5.6: "don't compare
  versions"); the ones it lacks are left out of :attr:`Capabilities.kinds`, and a
  DriverSpec runs them in threads.
  ``io_uring_prep_statx`` (STATX, 5.6), ``io_uring_prep_link`` (LINKAT, 5.15) and
  ``io_uring_prep_symlink`` (SYMLINKAT, 5.15; both "coded but not tested" in the binding,
  checked against ``os`` in tests/test_os.py) take their paths the same way.
- The binding reads a path through ``__fspath__`` and accepts a subclass of
  ``pathlib.Path``, but a plain ``pathlib.Path`` normalizes its text: it drops a trailing
  ``/`` or ``/.``, collapses ``//`` and makes ``""`` into ``"."``, which changes what the
  kernel is asked (``unlink("f/")`` fails with ENOTDIR, ``unlink("f")`` removes f;
  ``stat("")`` is ENOENT, ``stat(".")`` the working directory) and the text a symbolic
  link holds. So paths go in as :class:`_RawPath`, whose ``__fspath__`` is the caller's
  text. The binding encodes it as strict UTF-8: a name that is not (bytes decoded with
  ``surrogateescape``) cannot reach the ring, and its op runs inline with the blocking call
  (``_blocking.perform``, metadata only, as ftruncate before 6.9).
- ``Statx`` (the binding's ``struct statx``) gives its times only as floats, ``sec + nsec
  * 1e-9``, which lose the nanoseconds ``os.stat`` gives (``st_mtime_ns``). Its struct is
  behind a pointer the binding does not expose; the PyOZ object holds it right after the
  object header. :func:`_statx_address` reads it there once the object's size says the
  layout is the one expected, and the first time checks it: it writes a known record at
  that address and asks the getters for it back. If anything differs, STATX is left out of
  :attr:`Capabilities.kinds` (threads run it). A completed STATX's 256 bytes are copied
  from there into the op's buffer.
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
handles the batch, then gets it all at once, and the pattern repeats (docs/benchmarks.md,
"The QD32 turnaround", traces it on this project's VM). ``reap_batch=N`` makes ``reap`` take at most N CQEs
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

import ctypes
import errno
import importlib
import itertools
import os
import pathlib
import platform
import resource
import select
import time
import warnings
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

from ..errors import DriverOptionError, DriverUnavailableError, OpsStillHeldError
from . import _blocking, _orphans
from ._fork import generation as fork_generation
from ._memory import buffer_address, fd_is_direct
from .base import (
    FILE_KINDS,
    STATX_BASIC_STATS,
    STATX_SIZE,
    SYNC_FSYNC,
    Capabilities,
    Driver,
    DriverCounters,
    DriverStatistics,
    Op,
    OpKind,
    OpState,
    flag_option,
    int_option,
    offset_error,
)

_L: Any
try:
    _L = importlib.import_module("liburing")
except Exception as _exc:  # ImportError, or the package failing to read /proc at import
    _L = None
    _IMPORT_ERROR: str | None = f"{type(_exc).__name__}: {_exc}"
else:
    _IMPORT_ERROR = None

__all__ = [
    "DEFAULT_ENTRIES",
    "DEFAULT_REAP_BATCH",
    "DEFAULT_SQPOLL",
    "MAX_EAGAIN_RETRIES",
    "MIN_KERNEL",
    "IoUringDriver",
]
# Not in __all__ but public to the package: ENTER_LATER, KIND_OPCODES, PROBE_TIMEOUT_SECONDS,
# TRIED_INLINE, InFlight, explain_setup_error and io_uring_disabled are what the C ring's
# driver (io_uring_c.py, a subclass of this one) shares with its twin.

DEFAULT_ENTRIES = 256
DEFAULT_REAP_BATCH = 8
#: Whether a kernel thread polls the SQ (``sqpoll=1``): off, by the figures (module docstring).
DEFAULT_SQPOLL = False
MAX_EAGAIN_RETRIES = 1000
#: What the PyPI liburing package needs (its README: "Linux >= 6.14").
MIN_KERNEL = (6, 14)
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
_CLOSE_POLL_SECONDS = 0.05
#: How long a driver collected without close() waits for the CQEs of the ops it cancels
#: before it parks its ring and buffers instead (``_orphans``); the finalizer runs on the
#: collecting thread, so not long.
_COLLECTED_WAIT_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 2.0
#: io_uring_prep_cancel(3) flags (5.19): match any request, cancel every match.
_CANCEL_ANY = 1 << 2
_CANCEL_ALL = 1 << 0
#: user_data of SQEs whose CQE nobody waits for (cancels, NOPs standing in for failed preps).
_UNTRACKED = 0
#: user_data of close's cancels, whose CQEs say whether the kernel took them (see the module
#: docstring); tokens count up from 1 and never reach it.
_CLOSE_CANCEL = 2**64 - 1
#: How long close() waits for ops after the kernel refused every cancel, before it keeps them
#: with the driver (``_orphans``) and raises OpsStillHeldError.
_UNCANCELLABLE_WAIT_SECONDS = 1.0
#: What io_uring_enter(2) says when it cannot do it now (a signal, the kernel short of
#: resources or of CQ room): try again on the next reap.
ENTER_LATER = (errno.EAGAIN, errno.EBUSY, errno.EINTR)
# The write half of a linked write + sync (module docstring).
_LINK_WRITE_FLAGS = (_L.IOSQE_IO_LINK | _L.IOSQE_CQE_SKIP_SUCCESS) if _L is not None else 0


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


def io_uring_disabled() -> int:
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


#: The ``IORING_SETUP_*`` flags by bit (include/uapi/linux/io_uring.h), for :func:`_setup_flag_names`.
_SETUP_FLAGS = (
    "IOPOLL", "SQPOLL", "SQ_AFF", "CQSIZE", "CLAMP", "ATTACH_WQ", "R_DISABLED", "SUBMIT_ALL",
    "COOP_TASKRUN", "TASKRUN_FLAG", "SQE128", "CQE32", "SINGLE_ISSUER", "DEFER_TASKRUN", "NO_MMAP",
    "REGISTERED_FD_ONLY", "NO_SQARRAY", "HYBRID_IOPOLL",
)  # fmt: skip


def _setup_flag_names(flags: int) -> tuple[str, ...]:
    """``flags`` (io_uring_params.flags) as ``IORING_SETUP_*`` names; a bit this table does
    not know as its hex value."""
    names = [f"IORING_SETUP_{n}" for bit, n in enumerate(_SETUP_FLAGS) if flags & (1 << bit)]
    rest = flags & ~((1 << len(_SETUP_FLAGS)) - 1)
    if rest:
        names.append(hex(rest))
    return tuple(names)


def _setup_ring(entries: int, *, sqpoll: bool = False) -> Any:
    """A ring ready for use (tests replace this to simulate refusals)."""
    ring = _L.Ring()
    flags = _L.IORING_SETUP_SUBMIT_ALL | (_L.IORING_SETUP_SQPOLL if sqpoll else 0)
    _L.io_uring_queue_init(entries, ring, flags)
    return ring


def explain_setup_error(exc: OSError, disabled: int) -> str:
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
    if not _iovec_fillable():
        return (
            "the liburing package's Iovec is not laid out as this driver expects (the driver "
            "fills the Iovec's array itself: the binding never releases a memoryview it is "
            "given); use io_uring_c or worker"
        )
    disabled = io_uring_disabled()
    if disabled >= 2:
        return "io_uring is disabled system-wide (/proc/sys/kernel/io_uring_disabled = 2); set it to 0"
    try:
        ring = _setup_ring(4)
    except OSError as exc:
        return explain_setup_error(exc, disabled)
    efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        _L.io_uring_register_eventfd(ring, efd)
        sqe = _L.io_uring_get_sqe(ring)
        _L.io_uring_prep_nop(sqe)
        sqe.user_data = 1
        _L.io_uring_submit(ring)
        readable, _, _ = select.select([efd], [], [], PROBE_TIMEOUT_SECONDS)
        if not readable:
            return f"a NOP submitted to io_uring did not complete within {PROBE_TIMEOUT_SECONDS} s"
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
_SQPOLL_REASONS: dict[str, str | None] = {}  # driver name -> why sqpoll=1 cannot run (None: it can)
_PROBED: list[dict[str, bool]] = []
# The opcode each kind needs beyond the 5.1 ones (CLOSE counts as a path kind: it came with
# OPENAT). A kind whose opcode the probe lacks goes to the fallback threads (FTRUNCATE is
# not here: it runs inline where it is missing, see _ftruncate_inline).
KIND_OPCODES = {
    OpKind.FALLOCATE: "IORING_OP_FALLOCATE",
    OpKind.OPENAT: "IORING_OP_OPENAT",
    OpKind.RENAMEAT: "IORING_OP_RENAMEAT",
    OpKind.UNLINKAT: "IORING_OP_UNLINKAT",
    OpKind.MKDIRAT: "IORING_OP_MKDIRAT",
    OpKind.CLOSE: "IORING_OP_CLOSE",
    OpKind.STATX: "IORING_OP_STATX",
    OpKind.LINKAT: "IORING_OP_LINKAT",
    OpKind.SYMLINKAT: "IORING_OP_SYMLINKAT",
}
#: The kinds whose SQE names paths (CLOSE names none).
_NAMED_KINDS = frozenset(KIND_OPCODES) - {OpKind.CLOSE, OpKind.FALLOCATE}


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
    # WRITE_SYNC needs only writev, fsync and IOSQE_IO_LINK (5.3), which every kernel the
    # package runs on has.
    kinds = FILE_KINDS - {OpKind.FALLOCATE} | {kind for kind, name in KIND_OPCODES.items() if ops.get(name)}
    kinds |= {OpKind.WRITE_SYNC}
    return kinds if _statx_readable() else kinds - {OpKind.STATX}


class _RawPath(pathlib.PosixPath):
    """A ``pathlib.Path`` for the binding whose ``__fspath__`` is the caller's text, as given
    (see the module docstring: a plain Path would normalize it)."""

    raw = ""

    def __fspath__(self) -> str:
        return self.raw

    def __str__(self) -> str:
        return self.raw


def _ring_path(text: str | None) -> _RawPath | None:
    """``text`` as the binding takes it, or None when it cannot (not UTF-8, or a NUL inside:
    the kernel would read the path only up to it, and act on another file)."""
    text = text or ""
    if "\0" in text:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    p = _RawPath(text or ".")
    p.raw = text
    return p


# Where the PyOZ object keeps its pointer: right after the object header (refcount, type).
_STATX_POINTER_OFFSET = 2 * ctypes.sizeof(ctypes.c_void_p)
_STATX_CHECKED: list[bool] = []


def _statx_address(stx: Any) -> int:
    """The address of ``stx``'s ``struct statx`` (0 when the object is not laid out as
    expected)."""
    if type(stx).__basicsize__ < _STATX_POINTER_OFFSET + ctypes.sizeof(ctypes.c_void_p):
        return 0
    return ctypes.c_void_p.from_address(id(stx) + _STATX_POINTER_OFFSET).value or 0


def _statx_readable() -> bool:
    """Whether :func:`_statx_address` finds the struct the getters read (checked once)."""
    if not _STATX_CHECKED:
        _STATX_CHECKED.append(_check_statx_address())
    return _STATX_CHECKED[0]


def _check_statx_address() -> bool:
    from . import _statx

    stx = _L.Statx()
    addr = _statx_address(stx)
    if not addr or ctypes.string_at(addr, STATX_SIZE) != bytes(STATX_SIZE):
        return False  # a new Statx is zeroed: anything else is not its struct
    probe = os.stat_result(
        (0o100640, 2**40 + 3, os.makedev(8, 3), 7, 1001, 1002, 2**33 + 5, 11, 1_700_000_000, 13),
        {"st_atime_ns": 11 * 10**9 + 1, "st_ctime_ns": 13 * 10**9 + 3,
         "st_mtime_ns": 1_700_000_000 * 10**9 + 2,
         "st_blksize": 4096, "st_blocks": 99, "st_rdev": os.makedev(1, 5)},
    )  # fmt: skip
    buf = _statx.new_buffer()
    _statx.pack(probe, buf)
    ctypes.memmove(addr, bytes(buf), STATX_SIZE)
    names = "mask mode ino nlink uid gid size blocks blksize dev_major dev_minor rdev_major rdev_minor mtime"
    got = [getattr(stx, name) for name in names.split()]
    want = [STATX_BASIC_STATS, 0o100640, 2**40 + 3, 7, 1001, 1002, 2**33 + 5, 99, 4096, 8, 3, 1, 5]
    return got == [*want, 1_700_000_000 + 2e-9]


# -- iovecs ----------------------------------------------------------------------------------

# Where the PyOZ Iovec keeps its fields: right after the object header, ``size_t len`` and
# then ``struct iovec *`` (the binding's class.zig).
_IOVEC_LEN_OFFSET = 2 * ctypes.sizeof(ctypes.c_void_p)
_IOVEC_ARRAY_OFFSET = _IOVEC_LEN_OFFSET + ctypes.sizeof(ctypes.c_size_t)
_IOVEC_CHECKED: list[bool] = []


def _iovec(bufs: Sequence[memoryview]) -> Any:
    """A binding ``Iovec`` over ``bufs`` (non-empty byte views) that holds no export of them.

    Built over empty ``bytes`` and then filled with the buffers' addresses and lengths, as
    ``_uring.c``'s ``iovec`` does: the binding never releases a memoryview it is given
    (module docstring). Raises ValueError past IOV_MAX, TypeError or BufferError for a
    buffer that is not C-contiguous.
    """
    whole = []
    for b in bufs:
        base = b.obj
        if (type(base) is not bytearray and type(base) is not bytes) or not b.c_contiguous:
            break
        if b.nbytes != len(base):
            break
        whole.append(base)  # the view is all of it, in order
    else:
        return _L.Iovec(whole)  # read without an export (module docstring): the cheap way
    n = len(bufs)
    iov = _L.Iovec([b""] * n)
    flat = (ctypes.c_size_t * (2 * n)).from_address(_iovec_array(iov))
    i = 0
    for b in bufs:
        flat[i] = buffer_address(b)  # b's own export keeps it there until the CQE
        flat[i + 1] = b.nbytes
        i += 2
    return iov


def _iovec_array(iov: Any) -> int:
    """The address of ``iov``'s ``struct iovec`` array (0 when it is not laid out as expected)."""
    if type(iov).__basicsize__ < _IOVEC_ARRAY_OFFSET + ctypes.sizeof(ctypes.c_void_p):
        return 0
    return ctypes.c_void_p.from_address(id(iov) + _IOVEC_ARRAY_OFFSET).value or 0


def _iovec_fillable() -> bool:
    """Whether :func:`_iovec_array` finds the array the binding hands the kernel (checked once)."""
    if not _IOVEC_CHECKED:
        _IOVEC_CHECKED.append(_check_iovec_layout())
    return _IOVEC_CHECKED[0]


def _check_iovec_layout() -> bool:
    # bytes go in without an export: the binding's own entries must be their addresses.
    items = [b"ab", b"cde"]
    iov = _L.Iovec(items)
    addr = _iovec_array(iov)
    if not addr or ctypes.c_size_t.from_address(id(iov) + _IOVEC_LEN_OFFSET).value != len(items):
        return False
    want = [x for b in items for x in (buffer_address(b), len(b))]
    return list((ctypes.c_size_t * 4).from_address(addr)) == want


# -- the driver ------------------------------------------------------------------------------


# op.driver_data of a read try_inline() found not cached (in whole or in part).
TRIED_INLINE = object()


class InFlight:
    """What the driver keeps on an op (``op.driver_data``) while the kernel may use it."""

    __slots__ = ("buffers", "cancel_queued", "iovec", "paths", "sync_token", "token")

    def __init__(self, token: int) -> None:
        self.token = token
        # A linked write + sync: the user_data of its chain's sync SQE.
        self.sync_token = 0
        self.cancel_queued = False
        self.iovec: Any = None  # the liburing.Iovec of the SQE in flight
        self.buffers: list[memoryview] | None = None  # what the Iovec points into (held until the CQE)
        self.paths: tuple[object, ...] = ()  # what a path op's SQE points into (and STATX's Statx)


class IoUringDriver(Driver):
    name = "io_uring"

    def __init__(
        self,
        *,
        entries: int = DEFAULT_ENTRIES,
        nowait_fast_path: bool | int | str | None = None,
        reap_batch: int = DEFAULT_REAP_BATCH,
        sqpoll: bool | int | str = DEFAULT_SQPOLL,
    ) -> None:
        entries = self._options(entries, nowait_fast_path, reap_batch, sqpoll)
        if _L is None or not _iovec_fillable():
            raise DriverUnavailableError(f"driver 'io_uring' cannot run here: {_probe()}")
        try:
            self._ring = _setup_ring(entries, sqpoll=True) if self._sqpoll else _setup_ring(entries)
        except OSError as exc:
            raise DriverUnavailableError(self._setup_refused(entries, exc)) from exc
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
        if self._sq_entries < 2:
            self._kinds -= {OpKind.WRITE_SYNC}  # its two SQEs never fit: a thread runs it
        self._cqe = _L.Cqe()
        self._init_state()

    def _setup_refused(self, entries: int, exc: OSError) -> str:
        """Why a ring of ``entries`` (with this driver's options) could not be set up."""
        with_sqpoll = " with sqpoll=1" if self._sqpoll else ""
        hint = (
            "; sqpoll needs Linux >= 5.11 (IORING_FEAT_SQPOLL_NONFIXED): drop the option"
            if self._sqpoll and exc.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.EINVAL)
            else ""
        )
        return (
            f"driver {self.name!r} cannot set up a ring of {entries} entries{with_sqpoll}: "
            f"{explain_setup_error(exc, io_uring_disabled())}{hint}"
        )

    def _options(
        self,
        entries: int,
        nowait_fast_path: bool | int | str | None,
        reap_batch: int,
        sqpoll: bool | int | str,
    ) -> int:
        """Check the options (named after ``self.name``), keep the fast path's, the reap
        batch's and SQPOLL's; return ``entries``."""
        name = self.name
        self._sqpoll = flag_option(name, "sqpoll", sqpoll)
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
        # CQEs retired but not applied (a handler raised first), back in _ops; the next reap's.
        self._unapplied: list[tuple[int, int]] = []
        self._raised: tuple[Op, int, int] | None = None  # see _take_raised
        self._backlog: deque[Op] = deque()  # no SQ slot could be had; retried in reap
        self._sq_unsubmitted = False  # io_uring_submit refused for now (EAGAIN/EBUSY)
        self._sq_deferred = False  # cancel SQEs queued for the next submit or reap
        self._cancel_later: list[Op] = []  # cancels that found no SQ slot; retried in reap
        self._cancel_all_pending = False  # closing: the cancel of everything found no SQ slot yet
        # How close cancels (module docstring): "all" (one cancel, 5.19), "each" (the kernel
        # refused that: one per op, 5.5), "none" (refused too: nothing stops an op).
        self._close_cancels: Literal["all", "each", "none"] = "all"
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
            f"<IoUringDriver entries={self._sq_entries} in_flight={self._ops_out()} "
            f"nowait_fast_path={self._nowait} sqpoll={self._sqpoll} closed={self._closed}>"
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

    @classmethod
    def sqpoll_unavailable_reason(cls) -> str | None:
        """None when ``sqpoll=1`` can run here (a small SQPOLL ring was set up), else why."""
        key = cls.name
        if key not in _SQPOLL_REASONS:
            reason = cls.unavailable_reason()
            if reason is None:
                try:
                    cls._try_sqpoll_ring()
                except OSError as exc:
                    reason = f"an SQPOLL ring is refused: {explain_setup_error(exc, io_uring_disabled())}"
                except Exception as exc:  # a probe never raises
                    reason = f"SQPOLL probe failed: {exc!r}"
            _SQPOLL_REASONS[key] = reason
        return _SQPOLL_REASONS[key]

    @classmethod
    def _try_sqpoll_ring(cls) -> None:
        _L.io_uring_queue_exit(_setup_ring(4, sqpoll=True))

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            asynchronous=True, inline=self._nowait, max_in_flight=self._cq_entries, kinds=self._kinds
        )

    @property
    def nowait_fast_path(self) -> bool:
        return self._nowait

    @property
    def ftruncate_inline(self) -> bool:
        """Whether FTRUNCATE runs inline (the kernel lacks IORING_OP_FTRUNCATE, 6.9)."""
        return not self._ftruncate

    @property
    def setup_flags(self) -> tuple[str, ...]:
        """The ``IORING_SETUP_*`` flags the kernel set this driver's ring up with, by name
        (``python -m aiopg_io info`` shows them)."""
        return _setup_flag_names(self._ring_setup_flags())

    def _ring_setup_flags(self) -> int:
        flags: int = self._ring.flags  # the liburing package's struct io_uring field
        return flags

    @property
    def sqpoll(self) -> bool:
        """Whether a kernel thread of this process polls the ring's SQ (``sqpoll=1``)."""
        return self._sqpoll

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
        op.driver_data = TRIED_INLINE  # submit() goes straight to the ring
        return False

    def _read_inline(self, op: Op) -> bool:
        """Try a buffered read from the page cache without blocking; True when it is whole."""
        if offset_error(op.position(), sum(b.nbytes for b in op.remaining()), None) is not None:
            return False  # preadv2 reads offset -1 at the file position: _prep refuses it
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
        paths: tuple[object, ...] = ()
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
            if is_read and any(b.readonly for b in bufs):
                self._fail_now(op, OSError(errno.EFAULT, "a read needs writable buffers", op.path))
                return False
            try:
                iovec = _iovec(bufs)
            except (ValueError, TypeError, BufferError) as exc:
                self._fail_now(op, OSError(errno.EINVAL, f"buffers not accepted by io_uring: {exc}", op.path))
                return False
        elif kind is OpKind.FTRUNCATE and not self._ftruncate:
            return self._ftruncate_inline(op)
        elif kind is OpKind.FALLOCATE and self._refuse_range(op, op.offset, max(op.length, 0)):
            return False
        elif kind in _NAMED_KINDS and kind in self._kinds:
            paths = self._paths_of(op)
            if not paths:
                return self._path_op_inline(op)
        if linked and _L.io_uring_sq_space_left(self._ring) < 2:
            self._submit_sq()  # the write and its sync go in one submission (module docstring)
        sqe = self._get_sqe() if not linked or _L.io_uring_sq_space_left(self._ring) >= 2 else None
        if sqe is None:
            self._backlog.append(op)
            self._signal()  # reap retries the backlog
            return False
        data = op.driver_data
        if not isinstance(data, InFlight):
            data = op.driver_data = InFlight(self._next_token())
            refs = self._fd_refs
            refs[op.fd] = refs.get(op.fd, 0) + 1
        try:
            if is_read:
                _L.io_uring_prep_readv(sqe, op.fd, iovec, op.position(), 0)
            elif kind is OpKind.WRITE or kind is OpKind.WRITEV:
                _L.io_uring_prep_writev(sqe, op.fd, iovec, op.position(), 0)
            elif linked:
                _L.io_uring_prep_writev(sqe, op.fd, iovec, op.position(), 0)
                _L.io_uring_sqe_set_flags(sqe, _LINK_WRITE_FLAGS)
            elif kind is OpKind.FSYNC:
                _L.io_uring_prep_fsync(sqe, op.fd, 0)
            elif kind is OpKind.FDATASYNC:
                _L.io_uring_prep_fsync(sqe, op.fd, _L.IORING_FSYNC_DATASYNC)
            elif kind is OpKind.FALLOCATE and kind in self._kinds:
                _L.io_uring_prep_fallocate(sqe, op.fd, op.mode, op.offset, op.length)
            elif kind is OpKind.FTRUNCATE:
                _L.io_uring_prep_ftruncate(sqe, op.fd, op.length)
            elif kind is OpKind.NOP:
                _L.io_uring_prep_nop(sqe)
            elif kind is OpKind.OPENAT and paths:
                _L.io_uring_prep_open(sqe, paths[0], op.flags, op.mode, op.fd)
            elif kind is OpKind.RENAMEAT and paths:
                _L.io_uring_prep_rename(sqe, paths[0], paths[1], op.flags, op.fd, op.fd)
            elif kind is OpKind.UNLINKAT and paths:
                _L.io_uring_prep_unlink(sqe, paths[0], op.flags, op.fd)
            elif kind is OpKind.MKDIRAT and paths:
                _L.io_uring_prep_mkdir(sqe, paths[0], op.mode & 0xFFFFFFFF, op.fd)  # a C int's bits
            elif kind is OpKind.STATX and paths:
                _L.io_uring_prep_statx(sqe, paths[1], paths[0], op.flags, STATX_BASIC_STATS, op.fd)
            elif kind is OpKind.LINKAT and paths:
                _L.io_uring_prep_link(sqe, paths[0], paths[1], op.flags, op.fd, op.fd)
            elif kind is OpKind.SYMLINKAT and paths:
                _L.io_uring_prep_symlink(sqe, paths[0], paths[1], op.fd)
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
        if linked:
            # The sync, in the slot checked free above (the write's prep could not fail after
            # taking it: it is a NOP then, and the op already failed).
            sync = _L.io_uring_get_sqe(self._ring)
            _L.io_uring_prep_fsync(sync, op.fd, 0 if op.flags & SYNC_FSYNC else _L.IORING_FSYNC_DATASYNC)
            data.sync_token = self._next_token()  # fresh per chain: see the module docstring
            sync.user_data = data.sync_token
            self._ops[data.sync_token] = op
        return True

    def _refuse_range(self, op: Op, offset: int, nbytes: int) -> bool:
        """Fail ``op`` (True) when ``nbytes`` at ``offset`` do not lie within the file offsets
        (``base.offset_error``): the kernel must never see such an offset (io_uring reads -1
        as "at the file position", a C field would wrap a larger one)."""
        err = offset_error(offset, nbytes, op.path)
        if err is None:
            return False
        self._fail_now(op, err)
        return True

    def _paths_of(self, op: Op) -> tuple[object, ...]:
        """What the SQE of path op ``op`` points into: its paths as :class:`_RawPath` (and a
        STATX's ``Statx``); empty when a path cannot go to the ring, or the op's buffer is no
        place for a ``struct statx``."""
        first = _ring_path(op.path)
        if first is None:
            return ()
        if op.kind is OpKind.STATX:
            bufs = op.buffers
            if len(bufs) != 1 or bufs[0].readonly or bufs[0].nbytes < STATX_SIZE:
                return ()  # the blocking call reports it
            return (first, _L.Statx())
        if op.kind in (OpKind.RENAMEAT, OpKind.LINKAT, OpKind.SYMLINKAT):
            second = _ring_path(op.newpath)
            return () if second is None else (first, second)
        return (first,)

    def _statx_done(self, op: Op) -> None:
        """A STATX op's CQE said success: its ``struct statx`` into the op's buffer, copied
        from the binding's ``Statx`` the kernel filled (see :meth:`_paths_of`)."""
        data = op.driver_data
        assert isinstance(data, InFlight)
        op.buffers[0][:STATX_SIZE] = ctypes.string_at(_statx_address(data.paths[1]), STATX_SIZE)

    def _path_op_inline(self, op: Op) -> bool:
        """A path op the ring cannot be given (see :meth:`_paths_of`): the blocking call
        here. False, as ``_prep`` returns for an op that queued no SQE."""
        _blocking.perform(op)
        self._ready.append(op)
        return False

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
            if exc.errno not in ENTER_LATER:
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

    def _keep_for_next_reap(self, out: list[Op]) -> None:
        """A reap that raised (a waker: io_uring_c's harvest hands ops to the IOContext's;
        a completion handler, or a signal handler's exception in its frame; a failed
        submit): what finished so far, ``out``, waits in ``_ready`` for the next reap, with
        the op whose CQE was being applied (:meth:`_rescue_raised`), which also submits
        what a continuation queued; the eventfd makes it come."""
        raised = self._take_raised()
        if raised is not None:
            self._rescue_raised(*raised, out)
        # An op may be in both where the reap raised as it moved _ready's ops into out.
        ready = {id(op) for op in self._ready}
        self._ready[:0] = [op for op in out if id(op) not in ready]
        self._sq_deferred = True
        self._signal()

    def _take_raised(self) -> tuple[Op, int, int] | None:
        """The op whose CQE (user_data, res) was retired when the reap raised, not yet
        finished or handed over; None when none."""
        raised, self._raised = self._raised, None
        return raised

    def _rescue_raised(self, op: Op, token: int, res: int, out: list[Op]) -> None:
        """An exception came while ``op``'s CQE (``token``, ``res``) was applied: whatever
        it was applied to, the op is not lost. Finished (completed or failed) before the
        exception, it goes to ``out``; gone on (its next SQE queued, in the backlog, failed
        at prep into ``_ready``), the driver holds it already; else the CQE is taken as not
        applied, and the op goes back into ``_ops`` with the CQE for the next reap."""
        if any(o is op for o in out) or any(o is op for o in self._ready):
            return
        if op.done:
            out.append(op)
            return
        data = op.driver_data
        # Gone on: back in _ops under its token (kept across an op's SQEs; a linked chain's
        # sync token is fresh per chain, so a sync CQE's op back out is a new chain).
        if any(o is op for o in self._backlog) or (
            isinstance(data, InFlight) and token != data.sync_token and self._ops.get(data.token) is op
        ):
            return
        self._ops[token] = op
        self._unapplied.append((token, res))

    def _collect(self) -> list[Op]:
        c = self._counters
        out: list[Op] = []
        try:
            c.reap_calls += 1
            if self._cancel_later:
                self._retry_cancels()
            if self._sq_unsubmitted or self._sq_deferred:
                self._submit_sq()
            if self._backlog:
                self._retry_backlog()
            out, self._ready = self._ready, out
            limit = self._reap_batch
            if self._unapplied:
                entries, self._unapplied = self._unapplied, []
                if self._apply_cqes(entries, out):
                    self._submit_sq()
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
                    if not self._get_events():
                        self._signal()  # the kernel could not flush now: the next reap will
                        break
                    self._clear_eventfd()
                    continue
                break
            out.extend(self._ready)  # requeues that could not be prepped
            self._ready = []
            # Each op's step once (an op REAPED by a reap that raised after it comes back
            # here, and is not counted or reaped twice); whatever raises meanwhile (a
            # MemoryError, a signal handler's exception) hands every op back to the next reap.
            refs, fd_direct = self._fd_refs, self._fd_direct
            for op in out:
                if op.state is OpState.REAPED:
                    continue
                if isinstance(op.driver_data, InFlight):
                    op.driver_data = None  # frees the Iovec; the op still holds its buffers
                    fd = op.fd
                    left = refs[fd] - 1
                    if left:
                        refs[fd] = left
                    else:
                        del refs[fd]
                        fd_direct.pop(fd, None)
                op.set_state(OpState.REAPED)
                if op.cancel_requested and op.error is not None and op.error.errno == errno.ECANCELED:
                    c.cancelled += 1
                c.completed += 1
        except BaseException:
            self._keep_for_next_reap(out)
            raise
        return out

    def _harvest(self, limit: int, out: list[Op]) -> tuple[bool, bool]:
        """Apply up to ``limit`` CQEs (0: all): finished ops go to ``out``. Returns whether
        an op went on (its next SQE queued) and whether the limit left CQEs behind."""
        entries, left_over = self._take_cqes(limit)
        return self._apply_cqes(entries, out), left_over

    def _apply_cqes(self, entries: list[tuple[int, int]], out: list[Op]) -> bool:
        """Apply retired CQEs (user_data, res): finished ops go to ``out``. Returns whether
        an op went on. One that raises (a handler, or a signal handler's exception in its
        frame) loses nothing: the op it was applying is kept (:meth:`_rescue_raised`), the
        CQEs after it wait in ``_unapplied`` for the next reap."""
        ops = self._ops
        continued = False
        it = iter(entries)
        op: Op | None = None
        token = res = 0
        try:
            for token, res in it:
                op = ops.pop(token, None)
                if op is None:
                    # A cancel's own CQE, or a NOP that stood in for a refused prep; close's
                    # cancels are read (module docstring, "Cancelling at close").
                    if token == _CLOSE_CANCEL and res == -errno.EINVAL:
                        self._close_cancel_refused()
                    continue
                if op.kind is OpKind.WRITE_SYNC:
                    finished = self._on_link_cqe(op, token, res)
                    if finished is None:
                        op = None
                        continue  # the other half's CQE is still out
                else:
                    finished = self._on_cqe(op, res)
                if finished:
                    out.append(op)
                else:
                    continued = True
                op = None
        except BaseException:
            if op is not None:  # taken from _ops (None again once it is dealt with)
                self._raised = (op, token, res)
            elif token in ops:  # retired, its op not taken yet
                self._unapplied.append((token, res))
            self._unapplied.extend(it)  # their ops are still in _ops
            raise
        return continued

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

    def _get_events(self) -> bool:
        """Flush the kernel's CQ overflow list into the CQ; False when io_uring_enter says
        EINTR, EAGAIN or EBUSY (the next reap tries again)."""
        try:
            self._flush_overflow()
        except OSError as exc:
            if exc.errno not in ENTER_LATER:
                raise
            return False
        return True

    def _flush_overflow(self) -> None:
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
                if kind is OpKind.STATX:
                    self._statx_done(op)
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

    def _on_link_cqe(self, op: Op, token: int, res: int) -> bool | None:
        """Apply a CQE of a linked write + sync's chain: None when the chain goes on (a whole
        write's CQE on a kernel that posts it: the sync's follows), else as :meth:`_on_cqe`
        (True: finished; False: the rest went out as a new chain)."""
        data = op.driver_data
        assert isinstance(data, InFlight)
        ops = self._ops
        if token == data.sync_token:
            # The write was whole (its CQE skipped, or applied already): the sync decides.
            ops.pop(data.token, None)
            op.advance(sum(len(b) for b in op.remaining()))
            if res < 0:
                op.fail(-res)  # written whole (op.transferred), not synced
            else:
                op.complete(0)
            return True
        if res >= 0:
            try:
                more = op.advance(res)
            except OSError as exc:  # a write the device accepted nothing of
                ops.pop(data.sync_token, None)
                op.fail(exc)
                return True
            if not more:
                return None  # the sync's CQE follows (the op stays findable by its token)
        ops.pop(data.sync_token, None)  # the kernel cancelled the sync: its CQE, if any, is ignored
        c = self._counters
        if res >= 0:
            c.short_transfers += 1  # go on with the rest and a new sync
        elif res == -errno.EAGAIN and op.retries < MAX_EAGAIN_RETRIES:
            op.retries += 1
            self._eagain += 1
        else:
            op.fail(-res)  # the write's error; the sync never ran
            return True
        if op.cancel_requested:
            op.fail(errno.ECANCELED)  # what was written stays written, once (op.transferred)
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
        if not isinstance(data, InFlight) or data.cancel_queued:
            return  # completed inline, in the backlog (cancelled when retried), or asked already
        token = self._cancel_target(op, data)
        if token is None:
            return
        data.cancel_queued = True
        if not self._queue_cancel(token, 0):
            # No SQ slot even after a flush (the kernel refused the submit for now): the
            # next reap tries again, so an op that only a cancel ends is not forgotten.
            self._cancel_later.append(op)
        # Not submitted here: the next submit or reap sends every cancel of this tick in one
        # io_uring_enter. The eventfd write makes sure a reap comes (one per tick at most).
        self._sq_deferred = True
        self._signal()

    def _cancel_target(self, op: Op, data: InFlight) -> int | None:
        """The ``user_data`` a cancel of ``op`` names: its SQE's, or for a linked write + sync
        whose write is done, the sync's; None when the kernel holds none of them."""
        ops = self._ops
        if ops.get(data.token) is op:
            return data.token
        if data.sync_token and ops.get(data.sync_token) is op:
            return data.sync_token
        return None

    def _queue_cancel(self, token: int, flags: int) -> bool:
        sqe = self._get_sqe()
        if sqe is None:
            return False
        _L.io_uring_prep_cancel64(sqe, token, flags)
        sqe.user_data = self._cancel_user_data()
        return True

    def _cancel_user_data(self) -> int:
        """The ``user_data`` of a cancel SQE: close's are read, the others are not."""
        return _CLOSE_CANCEL if self._closed else _UNTRACKED

    def _retry_cancels(self) -> None:
        later, self._cancel_later = self._cancel_later, []
        for op in later:
            data = op.driver_data
            token = self._cancel_target(op, data) if isinstance(data, InFlight) else None
            if token is None:
                continue  # completed meanwhile
            if not self._queue_cancel(token, 0):
                self._cancel_later.append(op)
            else:
                self._sq_deferred = True

    def close(self) -> list[Op]:
        self._check_process()
        if self._closed:
            return []
        self._cancel_everything()
        out: list[Op] = []
        deadline = 0.0
        while not self._drain_step(out):
            if self._close_cancels == "none":
                # The kernel refused every cancel (module docstring): what does not end on
                # its own in time stays with the driver, kept alive until its CQE.
                now = time.monotonic()
                if not deadline:
                    deadline = now + _UNCANCELLABLE_WAIT_SECONDS
                elif now >= deadline:
                    self._hold_uncancellable(out)
            # The kernel still owns buffers (a running read cannot be stopped): wait for it.
            select.select([self._efd], [], [], _CLOSE_POLL_SECONDS)
            if self._sq_unsubmitted:
                time.sleep(_CLOSE_POLL_SECONDS)
        self._teardown()
        return out

    def _hold_uncancellable(self, drained: list[Op]) -> None:
        """Close gives up waiting for ops no cancel can stop: park this driver (ring, fds,
        ops, buffers) with :mod:`._orphans` until the kernel returns them, and raise."""
        held = list({id(op): op for op in self._ops.values()}.values())
        _orphans.park(self)
        shown = "; ".join(
            f"{op.kind.value} on fd {op.fd}" + (f" ({op.path!r})" if op.path is not None else "")
            for op in held[:4]
        )
        more = f" and {len(held) - 4} more" if len(held) > 4 else ""
        raise OpsStillHeldError(
            f"{self.name} driver closed with {len(held)} op{'s' if len(held) != 1 else ''} the kernel "
            "refuses to cancel "
            f"(no IORING_OP_ASYNC_CANCEL: Linux before 5.5) and that did not end within "
            f"{_UNCANCELLABLE_WAIT_SECONDS} s: {shown}{more}; the ring and their buffers are kept "
            "alive and released when the kernel returns them (a pipe or socket read ends when "
            "data or EOF arrives)",
            held,
            drained,
        )

    def _cancel_everything(self) -> None:
        """Start closing: no new ops, the backlog cancelled (reaped by :meth:`_drain_step`),
        a cancel of every op in flight to be sent by it."""
        self._closed = True
        while self._backlog:
            op = self._backlog.popleft()
            op.cancelled()
            self._ready.append(op)
        self._cancel_later.clear()  # the cancel of everything below covers them
        self._cancel_all_pending = bool(self._ops)
        for op in self._ops.values():
            op.cancel_requested = True  # no continuation after a short transfer

    def _close_cancel_refused(self) -> None:
        """A cancel of close's came back EINVAL (module docstring, "Cancelling at close"):
        the cancel of everything (before 5.19) makes way for one cancel per op, sent by the
        next reap; a per-op cancel (before 5.5) leaves nothing to try."""
        if self._close_cancels == "all":
            self._close_cancels = "each"
            self._cancel_later = list({id(op): op for op in self._ops.values()}.values())
            self._signal()  # the next drain step comes at once and sends them
        else:
            self._close_cancels = "none"
            self._cancel_later.clear()

    def _drain_step(self, out: list[Op]) -> bool:
        """One round of closing: send the cancel of everything (again, if it found no SQ
        slot), reap into ``out``; True once the kernel holds no op of ours."""
        if self._cancel_all_pending and self._queue_cancel(0, _CANCEL_ANY | _CANCEL_ALL):
            self._cancel_all_pending = False
            self._submit_sq()
        self._clear_eventfd()
        out.extend(self._collect())
        return not self._ops and not self._ready

    def __del__(self) -> None:
        # Collected without close(). The kernel may still write into the buffers of ops in
        # flight (see _orphans.py): cancel everything and wait for the CQEs a little; what
        # does not come back in time keeps this driver (ring, ops, buffers) alive on purpose.
        if getattr(self, "_closed", True) or self._generation != fork_generation():
            return  # closed, never set up, or a fork child's copy of the parent's ring
        held = len(self._ops) + len(self._backlog)
        released = False
        try:
            self._cancel_everything()
            out: list[Op] = []
            deadline = time.monotonic() + _COLLECTED_WAIT_SECONDS
            while not (released := self._drain_step(out)):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                select.select([self._efd], [], [], min(left, _CLOSE_POLL_SECONDS))
            if released:
                self._teardown()
        finally:
            if not released:
                _orphans.park(self)  # before anything that may raise (a warning as error)
        if released:
            what = f"{held} ops in flight were cancelled and drained" if held else "nothing was in flight"
            warnings.warn(
                f"unclosed {self.name} driver collected: {what}; call close()", ResourceWarning, stacklevel=1
            )
        else:
            warnings.warn(
                f"unclosed {self.name} driver collected with {len(self._ops)} ops the kernel has not "
                f"returned within {_COLLECTED_WAIT_SECONDS} s of a cancel: its ring and their buffers are "
                "kept alive until it does (never freed under the kernel); call close()",
                ResourceWarning,
                stacklevel=1,
            )

    def orphan_fd(self) -> int:
        """The completion fd, for :mod:`._orphans` (a parked driver's)."""
        return self._efd

    def orphan_step(self) -> bool:
        """Reap a parked driver; once the kernel holds nothing, release ring and fds."""
        if not self._drain_step([]):
            return False
        self._teardown()
        return True

    def _teardown(self) -> None:
        """Release the ring and the eventfd (nothing is in flight any more)."""
        _L.io_uring_unregister_eventfd(self._ring)
        _L.io_uring_queue_exit(self._ring)
        os.close(self._efd)

    def _ops_out(self) -> int:
        """Ops the kernel holds: ops, not SQEs (a linked write + sync is in ``_ops`` under both
        its user_datas)."""
        return len({id(op) for op in self._ops.values()})

    def statistics(self) -> DriverStatistics:
        return self._counters.snapshot(
            self.name,
            self._ops_out() + len(self._ready) + len(self._backlog),
            entries=self._sq_entries,
            cq_entries=self._cq_entries,
            fast_path_hits=self._fast_path_hits,
            eagain_retries=self._eagain,
            ring_submits=self._ring_submits,
        )
