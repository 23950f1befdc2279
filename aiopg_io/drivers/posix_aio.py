"""The ``posix_aio`` driver: aio_read / aio_write / aio_fsync / lio_listio through ctypes.

PostgreSQL's porting-branch ``io_method=posix_aio``. On FreeBSD this is kernel AIO and beats
a thread pool; on Linux glibc implements POSIX AIO with its own threads in user space, so the
driver is mostly a second opinion there (and what the whole suite also runs against).

Facts this module relies on
===========================

glibc (Linux; read from glibc's ``rt/aio_misc.c``, ``rt/lio_listio-common.c``,
``rt/aio_suspend.c``, glibc 2.34-2.36; since 2.34 the functions live in libc.so.6, before
in librt.so.1):

- Every request is a ``pread``/``pwrite``/``fsync`` done by a helper thread. Requests on the
  *same file descriptor* are chained and run one after another by one thread
  (``__aio_enqueue_request``: "It makes no sense to start another thread since this new
  thread would fight with the running thread"). At most 20 helper threads run (``optim =
  {20, 64, ...}``; ``aio_init`` can change it only before first use); an idle one exits
  after 1 s; this module asks for 64 with ``aio_init`` (see :func:`_glibc_aio_init`). So N
  requests on one fd are *serial*. This driver spreads concurrent requests
  on one fd over ``dup()``s of it (same open file description, so positional I/O is
  identical), closing the duplicates when the fd has nothing in flight (``spread_fds``):
  up to 15 for an O_DIRECT fd, 2 for a buffered one (see :class:`_FdSpread`).
- ``lio_listio(LIO_NOWAIT, list, n, NULL)`` enqueues under one mutex. A request that could
  not be enqueued for want of memory (``get_elem`` failing -> EAGAIN) does *not* get its
  ``__error_code`` set, so the driver presets it to EAGAIN before the call (POSIX says an
  unqueued aiocb reports EAGAIN; glibc leaves the field as the caller left it).
- ``aio_cancel`` cancels only requests still queued (they complete with ECANCELED and wake
  ``aio_suspend``); the running one of a chain answers AIO_NOTCANCELED and finishes.
- ``aio_suspend`` waits on a futex until any listed request is no longer EINPROGRESS; it
  returns at once when one already is, and with EINTR when a signal hits the thread.
  ``aio_error`` is a locked read of ``__error_code``; ``aio_return`` a read of
  ``__return_value`` (no resource is freed: calling it is still required by POSIX).
- glibc ``aio_fsync`` accepts ``O_SYNC`` and ``O_DSYNC`` (EINVAL otherwise).

Completion notification on Linux (the choice, and why):

- SIGEV_SIGNAL / SIGEV_THREAD_ID would need a signal blocked in *every* thread (else the
  default action of a real-time signal kills the process) or a handler installed: a library
  must not change the process's dispositions. glibc's AIO does not implement
  SIGEV_THREAD_ID at all (``__aio_notify_only`` knows SIGEV_THREAD and SIGEV_SIGNAL).
- SIGEV_THREAD makes glibc ``pthread_create`` a thread *per completion* that would call a
  ctypes callback: it must take the GIL from a foreign thread, and the CFUNCTYPE object must
  outlive every thread glibc may still start. Slow and fragile.
- Chosen: SIGEV_NONE plus one notification thread per driver that sleeps in
  ``aio_suspend`` over the aiocbs in flight (ctypes releases the GIL for the call), collects
  what finished with ``aio_error``/``aio_return`` and raises a :class:`Notifier` eventfd,
  the driver's ``fileno()``. New submissions must join the list the thread waits on: the
  list also holds a *wake aiocb*, an ``aio_read`` of one pipe whose write end the loop
  writes when it added requests since the thread built its list (a glibc helper thread sits
  blocked in that ``read``; the classic trick). Lock order: the loop adds requests and
  decides whether to wake under the same lock under which the thread snapshots its list,
  so a request is either in the snapshot or the wake byte is written. Right after raising
  the flag the thread waits a few hundred microseconds on a condition for the loop's next
  submission, which then costs no pipe round trip (:class:`_SuspendNotifier`). The calls
  that do not block keep the GIL (:class:`_AioLib`).

FreeBSD (``sys/sys/aio.h``, ``sys/sys/signal.h``, ``sys/sys/event.h``; FreeBSD 13-14):
kernel AIO; ``SIGEV_KEVENT`` with ``sigev_notify_kqueue`` (an alias of ``sigev_signo``)
naming a kqueue posts an ``EVFILT_AIO`` event whose ``ident`` is the aiocb address and
``udata`` the ``sigev_value``; the kqueue fd is the completion fd. ``AIO_LISTIO_MAX`` is 16;
``vfs.aio.max_aio_queue_per_proc`` (default 256) bounds requests queued per process (then
EAGAIN). AIO on pipes/sockets needs ``vfs.aio.enable_unsafe``; regular files are "safe".
FreeBSD >= 13 has ``aio_readv``/``aio_writev`` (``aio_iov``/``aio_iovcnt`` alias
``aio_buf``/``aio_nbytes``); glibc and macOS have no vectored AIO. This driver takes one
code path for every platform (see "Vectored ops" below).

macOS (XNU ``bsd/sys/aio.h``, ``bsd/sys/signal.h``): aio_fsync takes only ``O_SYNC``
(``O_DSYNC`` is "NOT SUPPORTED"); ``kern.aioprocmax`` defaults to 16 requests per process.
XNU's kqueue long had ``[~EVFILT_AIO] = &bad_filtops`` (``bsd/kern/kern_event.c``); newer
kernels grew an ``aio_filtops`` but the public SDK gives no registration contract to rely
on. Fallback, documented: the Linux notification thread without a wake aiocb (XNU AIO does
not take pipes), re-reading its list every ``_MACOS_RESCAN`` seconds while requests are in
flight and asleep on a condition while none are; the completion fd is then a pipe. That
fallback also runs on Linux, where the tests exercise it.

Layout checks: the Linux structs are compared with this machine's glibc headers by a C
program (sizes, every offset, the constants); the FreeBSD and macOS structs are written out
field for field from their headers in C and laid out by the same compiler (LP64 natural
alignment, as on amd64/arm64), and their constants are compared with the header values
written down in the test (``tests/drivers/test_posix_aio.py``). Their own headers are not
compiled against here.

Per platform, the code that only FreeBSD or macOS runs is :class:`_FreeBSDNotifier`, the two
layout classes and the :data:`_FREEBSD` / :data:`_MACOS` facts; :func:`_select_platform` is
the one place that chooses. Nothing here touches a signal disposition.

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

import contextlib
import ctypes
import errno
import os
import platform
import select
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._blocking import perform
from ._memory import aligned_buffer, buffer_address
from ._notify import Notifier
from .base import (
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

__all__ = ["DEFAULT_KERNEL_LIMIT", "PosixAioDriver", "tested_here"]

# ----------------------------------------------------------------------------------------------
# Layouts. All six targets are LP64 (int 4, long/pointer/size_t/off_t 8 bytes, natural
# alignment), so x86_64 and aarch64 share one layout per OS; ctypes applies the same rules.


class _Sigval(ctypes.Union):
    # union sigval { int sival_int; void *sival_ptr; } -- identical on all three systems.
    _fields_ = [("sival_int", ctypes.c_int), ("sival_ptr", ctypes.c_void_p)]


class _LinuxSigevThread(ctypes.Structure):
    _fields_ = [("function", ctypes.c_void_p), ("attribute", ctypes.c_void_p)]


class _LinuxSigevUnion(ctypes.Union):
    # glibc bits/types/sigevent_t.h: __SIGEV_MAX_SIZE 64; on __WORDSIZE 64
    # __SIGEV_PAD_SIZE = 64 / sizeof(int) - 4 = 12 ints.
    _fields_ = [("pad", ctypes.c_int * 12), ("tid", ctypes.c_int), ("thread", _LinuxSigevThread)]


class _LinuxSigevent(ctypes.Structure):
    """glibc ``bits/types/sigevent_t.h`` (glibc 2.36, generic for 64-bit words): sigev_value,
    sigev_signo, sigev_notify, then the 48-byte union ``_sigev_un`` {_pad[12], _tid,
    _sigev_thread {_function, _attribute}}; 64 bytes. sigev_notify values from
    ``bits/sigevent-consts.h``: SIGEV_SIGNAL 0, SIGEV_NONE 1, SIGEV_THREAD 2, SIGEV_THREAD_ID 4."""

    _fields_ = [
        ("sigev_value", _Sigval),
        ("sigev_signo", ctypes.c_int),
        ("sigev_notify", ctypes.c_int),
        ("sigev_un", _LinuxSigevUnion),
    ]


class _LinuxAiocb(ctypes.Structure):
    """glibc ``aio.h`` lines 34-57 (glibc 2.36): aio_fildes, aio_lio_opcode, aio_reqprio,
    aio_buf, aio_nbytes, aio_sigevent, __next_prio, __abs_prio, __policy, __error_code,
    __return_value, aio_offset (off64_t under _FILE_OFFSET_BITS=64, else off_t + pad: 8
    bytes either way on LP64), __glibc_reserved[32]; 168 bytes on x86_64 and aarch64."""

    _fields_ = [
        ("aio_fildes", ctypes.c_int),
        ("aio_lio_opcode", ctypes.c_int),
        ("aio_reqprio", ctypes.c_int),
        ("aio_buf", ctypes.c_void_p),
        ("aio_nbytes", ctypes.c_size_t),
        ("aio_sigevent", _LinuxSigevent),
        ("glibc_next_prio", ctypes.c_void_p),
        ("glibc_abs_prio", ctypes.c_int),
        ("glibc_policy", ctypes.c_int),
        ("glibc_error_code", ctypes.c_int),
        ("glibc_return_value", ctypes.c_ssize_t),
        ("aio_offset", ctypes.c_int64),
        ("glibc_reserved", ctypes.c_char * 32),
    ]


class _FreeBSDSigevUnion(ctypes.Union):
    _fields_ = [
        ("threadid", ctypes.c_int),  # __lwpid_t
        ("thread", _LinuxSigevThread),  # {void (*_function)(union sigval); struct pthread_attr **}
        ("kevent_flags", ctypes.c_ushort),
        ("spare", ctypes.c_long * 8),
    ]


class _FreeBSDSigevent(ctypes.Structure):
    """FreeBSD ``sys/sys/signal.h`` (13.x/14.x) ``struct sigevent``: sigev_notify, sigev_signo
    (alias sigev_notify_kqueue), sigev_value, union _sigev_un {_threadid, _sigev_thread,
    _kevent_flags, long __spare__[8]}; 80 bytes. SIGEV_NONE 0, SIGNAL 1, THREAD 2, KEVENT 3,
    THREAD_ID 4."""

    _fields_ = [
        ("sigev_notify", ctypes.c_int),
        ("sigev_signo", ctypes.c_int),
        ("sigev_value", _Sigval),
        ("sigev_un", _FreeBSDSigevUnion),
    ]


class _FreeBSDAiocbPrivate(ctypes.Structure):
    _fields_ = [("status", ctypes.c_long), ("error", ctypes.c_long), ("kernelinfo", ctypes.c_void_p)]


class _FreeBSDAiocb(ctypes.Structure):
    """FreeBSD ``sys/sys/aio.h`` (13.x/14.x) ``struct aiocb``: aio_fildes, aio_offset, aio_buf
    (alias aio_iov), aio_nbytes (alias aio_iovcnt), int __spare__[2], void *__spare2__,
    aio_lio_opcode, aio_reqprio, struct __aiocb_private {long status; long error; void
    *kernelinfo}, aio_sigevent; 160 bytes on amd64 and arm64 (the Rust libc crate's freebsd
    module agrees). Checked against a C compiler's layout of that field list, not against
    FreeBSD's own header (see the module docstring)."""

    _fields_ = [
        ("aio_fildes", ctypes.c_int),
        ("aio_offset", ctypes.c_int64),
        ("aio_buf", ctypes.c_void_p),
        ("aio_nbytes", ctypes.c_size_t),
        ("spare", ctypes.c_int * 2),
        ("spare2", ctypes.c_void_p),
        ("aio_lio_opcode", ctypes.c_int),
        ("aio_reqprio", ctypes.c_int),
        ("aiocb_private", _FreeBSDAiocbPrivate),
        ("aio_sigevent", _FreeBSDSigevent),
    ]


class _MacOSSigevent(ctypes.Structure):
    """XNU ``bsd/sys/signal.h`` ``struct sigevent``: sigev_notify, sigev_signo, sigev_value,
    sigev_notify_function, sigev_notify_attributes; 32 bytes. SIGEV_NONE 0, SIGNAL 1,
    THREAD 3."""

    _fields_ = [
        ("sigev_notify", ctypes.c_int),
        ("sigev_signo", ctypes.c_int),
        ("sigev_value", _Sigval),
        ("sigev_notify_function", ctypes.c_void_p),
        ("sigev_notify_attributes", ctypes.c_void_p),
    ]


class _MacOSAiocb(ctypes.Structure):
    """XNU ``bsd/sys/aio.h`` ``struct aiocb``: aio_fildes, aio_offset, aio_buf, aio_nbytes,
    aio_reqprio, aio_sigevent, aio_lio_opcode; 80 bytes on arm64 and x86_64. Checked against
    a C compiler's layout of that field list, not against the SDK's header."""

    _fields_ = [
        ("aio_fildes", ctypes.c_int),
        ("aio_offset", ctypes.c_int64),
        ("aio_buf", ctypes.c_void_p),
        ("aio_nbytes", ctypes.c_size_t),
        ("aio_reqprio", ctypes.c_int),
        ("aio_sigevent", _MacOSSigevent),
        ("aio_lio_opcode", ctypes.c_int),
    ]


@dataclass(frozen=True)
class _Platform:
    """The facts about one system's POSIX AIO that the driver needs."""

    name: str
    aiocb: type[ctypes.Structure]
    libraries: tuple[str, ...]  # where the aio_* symbols live, tried in order
    lio_read: int
    lio_write: int
    lio_nowait: int
    aio_canceled: int
    aio_notcanceled: int
    aio_alldone: int
    sigev_none: int
    fsync_op: int
    fdatasync_op: int
    listio_max: int
    default_kernel_limit: int
    spread_fds: bool  # requests on one fd are serialised (glibc)
    glibc_error_field: bool  # aiocb has glibc's __error_code (preset, peeked)
    notifier: str  # "suspend+pipe" | "kqueue" | "suspend+rescan": see _make_notifier
    tested: bool  # this package's tests run on it


_LINUX_GLIBC = _Platform(
    name="linux-glibc",
    aiocb=_LinuxAiocb,
    libraries=("libc.so.6", "librt.so.1"),
    # aio.h enums: LIO_READ 0, LIO_WRITE 1, LIO_NOP 2; LIO_WAIT 0, LIO_NOWAIT 1;
    # AIO_CANCELED 0, AIO_NOTCANCELED 1, AIO_ALLDONE 2.
    lio_read=0,
    lio_write=1,
    lio_nowait=1,
    aio_canceled=0,
    aio_notcanceled=1,
    aio_alldone=2,
    sigev_none=1,
    fsync_op=getattr(os, "O_SYNC", 0),
    fdatasync_op=getattr(os, "O_DSYNC", 0),
    # glibc has no AIO_LISTIO_MAX (sysconf says -1); a batch of 64 keeps the stack VLA small.
    listio_max=64,
    default_kernel_limit=128,
    spread_fds=True,
    glibc_error_field=True,
    notifier="suspend+pipe",
    tested=True,
)

_FREEBSD = _Platform(
    name="freebsd",
    aiocb=_FreeBSDAiocb,
    libraries=("libc.so.7",),
    # sys/aio.h: LIO_NOP 0, LIO_WRITE 1, LIO_READ 2; LIO_NOWAIT 0, LIO_WAIT 1;
    # AIO_CANCELED 1, AIO_NOTCANCELED 2, AIO_ALLDONE 3.
    lio_read=2,
    lio_write=1,
    lio_nowait=0,
    aio_canceled=1,
    aio_notcanceled=2,
    aio_alldone=3,
    sigev_none=0,
    fsync_op=0x80,  # sys/sys/fcntl.h O_SYNC
    fdatasync_op=0x1000000,  # O_DSYNC: aio_fsync takes it since FreeBSD 13.0
    listio_max=16,  # AIO_LISTIO_MAX
    default_kernel_limit=128,  # below vfs.aio.max_aio_queue_per_proc's default of 256
    spread_fds=False,
    glibc_error_field=False,
    notifier="kqueue",
    tested=False,
)

_MACOS = _Platform(
    name="macos",
    aiocb=_MacOSAiocb,
    libraries=("/usr/lib/libSystem.B.dylib",),
    # bsd/sys/aio.h: LIO_NOP 0, LIO_READ 1, LIO_WRITE 2; LIO_NOWAIT 1, LIO_WAIT 2;
    # AIO_ALLDONE 1, AIO_CANCELED 2, AIO_NOTCANCELED 4.
    lio_read=1,
    lio_write=2,
    lio_nowait=1,
    aio_canceled=2,
    aio_notcanceled=4,
    aio_alldone=1,
    sigev_none=0,
    fsync_op=0x80,  # O_SYNC
    fdatasync_op=0x80,  # O_DSYNC is "NOT SUPPORTED" by aio_fsync: O_SYNC is the closest
    listio_max=16,
    default_kernel_limit=16,  # kern.aioprocmax
    spread_fds=False,
    glibc_error_field=False,
    notifier="suspend+rescan",
    tested=False,
)

_FREEBSD_EVFILT_AIO = -3  # sys/sys/event.h
_FREEBSD_EVFILT_TIMER = -7
_FREEBSD_EVFILT_USER = -11
_FREEBSD_NOTE_TRIGGER = 0x01000000
_FREEBSD_SIGEV_KEVENT = 3
_MACOS_RESCAN = 0.002  # seconds: how late the macOS fallback may notice a new submission

DEFAULT_KERNEL_LIMIT = _LINUX_GLIBC.default_kernel_limit


def _select_platform() -> tuple[_Platform | None, str | None]:
    """The one place the platform is chosen: (facts, None) or (None, why not)."""
    if sys.platform.startswith("linux"):
        libc, _ = platform.libc_ver()
        if libc != "glibc":
            return None, (
                f"POSIX AIO through ctypes needs glibc's struct aiocb layout; this Python runs on "
                f"{libc or 'an unknown C library'} (use the worker driver)"
            )
        if ctypes.sizeof(ctypes.c_void_p) != 8:
            return None, "only 64-bit glibc layouts are described (x86_64, aarch64)"
        return _LINUX_GLIBC, None
    if sys.platform.startswith("freebsd"):
        return _FREEBSD, None
    if sys.platform == "darwin":
        return _MACOS, None
    return None, f"POSIX AIO is not supported by this driver on {sys.platform} (use the worker driver)"


_PLATFORM, _PLATFORM_REASON = _select_platform()


def tested_here() -> bool:
    """Whether this platform's code path is the one this package's tests exercise."""
    return _PLATFORM is not None and _PLATFORM.tested


# ----------------------------------------------------------------------------------------------
# The C library.


class _AioLib:
    """The aio_* functions, bound once. Tests may wrap an instance to inject failures.

    Only ``aio_suspend`` blocks, so only it goes through ``CDLL`` (which releases the GIL for
    the call). The others only take glibc's request mutex (or enter the kernel briefly on
    FreeBSD) and are bound through ``PyDLL``, which keeps the GIL: a GIL hand-off per call
    between the loop thread and the notification thread cost more than the calls.
    """

    def __init__(self, plat: _Platform) -> None:
        lib = quick = None
        errors = []
        for name in plat.libraries:
            try:
                candidate = ctypes.CDLL(name, use_errno=True)
                candidate.aio_read  # noqa: B018 -- librt before glibc 2.34, libc after
            except (OSError, AttributeError) as exc:
                errors.append(f"{name}: {exc}")
                continue
            lib, quick = candidate, ctypes.PyDLL(name, use_errno=True)
            break
        if lib is None or quick is None:
            raise OSError(errno.ENOSYS, "aio_* not found: " + "; ".join(errors))
        cb = ctypes.POINTER(plat.aiocb)
        vp = ctypes.c_void_p
        self.aio_read = self._bind(quick, "aio_read", [cb], ctypes.c_int)
        self.aio_write = self._bind(quick, "aio_write", [cb], ctypes.c_int)
        self.aio_fsync = self._bind(quick, "aio_fsync", [ctypes.c_int, cb], ctypes.c_int)
        self.aio_error = self._bind(quick, "aio_error", [cb], ctypes.c_int)
        self.aio_return = self._bind(quick, "aio_return", [cb], ctypes.c_ssize_t)
        self.aio_cancel = self._bind(quick, "aio_cancel", [ctypes.c_int, cb], ctypes.c_int)
        self.aio_suspend = self._bind(
            lib, "aio_suspend", [ctypes.POINTER(vp), ctypes.c_int, ctypes.c_void_p], ctypes.c_int
        )
        self.lio_listio = self._bind(
            quick,
            "lio_listio",
            [ctypes.c_int, ctypes.POINTER(vp), ctypes.c_int, ctypes.c_void_p],
            ctypes.c_int,
        )
        if plat.glibc_error_field:
            _glibc_aio_init(quick)

    @staticmethod
    def _bind(lib: ctypes.CDLL, name: str, argtypes: list[object], restype: object) -> Callable[..., int]:
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype
        result: Callable[..., int] = fn
        return result


class _GlibcAioinit(ctypes.Structure):
    """glibc ``aio.h`` lines 86-97, ``struct aioinit``: eight ints."""

    _fields_ = [
        (name, ctypes.c_int)
        for name in (
            "aio_threads",
            "aio_num",
            "aio_locks",
            "aio_usedba",
            "aio_debug",
            "aio_numusers",
            "aio_idle_time",
            "aio_reserved",
        )
    ]


_GLIBC_AIO_THREADS = 64
_glibc_aio_init_done = False


def _glibc_aio_init(lib: ctypes.CDLL) -> None:
    """Raise glibc's helper-thread cap from 20 to 64, once per process.

    Every driver keeps one helper thread blocked in its wake-up read, so with the default
    cap a process with many event loops (a driver each) would leave no thread for the
    requests themselves. ``aio_init`` only takes effect before the process's first AIO
    request (``__aio_init``: "Only allow writing new values if the table is not yet
    allocated"); the idle time (1 s) is left as it is (0 means unchanged).
    """
    global _glibc_aio_init_done
    if _glibc_aio_init_done:
        return
    _glibc_aio_init_done = True
    fn = getattr(lib, "aio_init", None)
    if fn is None:
        return
    fn.argtypes = [ctypes.POINTER(_GlibcAioinit)]
    fn.restype = None
    fn(ctypes.byref(_GlibcAioinit(aio_threads=_GLIBC_AIO_THREADS, aio_num=64)))


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


# ----------------------------------------------------------------------------------------------
# Requests: one aiocb each.


class _Request:
    """One aiocb in (or queued for) the system, and what keeps its memory alive."""

    __slots__ = ("cb", "error", "fd", "in_kernel", "keep", "nbytes", "op", "result", "run")

    def __init__(self, op: Op, run: _Run, cb: ctypes.Structure, nbytes: int, keep: object) -> None:
        self.op = op
        self.run = run
        self.cb = cb
        self.nbytes = nbytes
        self.keep = keep  # the ctypes view of the buffer: holds a buffer export until done
        self.fd = -1  # the fildes handed to the system (maybe a dup of op.fd)
        self.in_kernel = False
        self.result = 0
        self.error = errno.EINPROGRESS


class _Run:
    """One round of an op: its requests (a split vectored op has one per piece), in file
    order. ``bounce``: a bounced read's buffer and the pieces its bytes are copied out to."""

    __slots__ = ("bounce", "outstanding", "requests")

    def __init__(self) -> None:
        self.requests: list[_Request] = []
        self.outstanding = 0
        self.bounce: tuple[memoryview, list[memoryview]] | None = None


#: Vectored ops up to this size are bounced through one buffer rather than split.
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


# ----------------------------------------------------------------------------------------------
# Completion notifiers: one pollable fd each.


class _SuspendNotifier:
    """Linux (and the macOS fallback): a thread sleeping in aio_suspend raises an eventfd.

    ``wake_pipe``: wake the thread through an aio_read on a pipe (glibc); without it, the
    thread re-reads its list every ``rescan`` seconds while requests are in flight, and
    sleeps on the condition while none are (macOS, whose AIO refuses pipes). The fallback
    runs on Linux too, which is how the tests exercise it.

    The thread is in one of three states, read and changed under ``_lock``:

    - ``_SUSPENDING``: its list is built (or it is in aio_suspend). A request added now is
      not in the list: the adder writes the wake pipe (once until the next list).
    - ``_BUSY``: between aio_suspend and the next list. Nothing to do: the next list
      includes whatever is added meanwhile.
    - ``_GRACE``: it just raised the flag and waits up to ``_GRACE_SECONDS`` on a condition
      for the loop to reap and submit the next ops, which it then puts in its next list
      without the pipe round trip (two glibc thread wake-ups). A completion that lands
      during the grace period is seen at most that much later.
    """

    _SUSPENDING, _BUSY, _GRACE = 0, 1, 2
    _GRACE_SECONDS = 0.0002

    def __init__(self, lib: _AioLib, plat: _Platform, *, wake_pipe: bool, rescan: float | None) -> None:
        self._lib = lib
        self._plat = plat
        self._flag = Notifier()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._watched: dict[int, _Request] = {}
        self._done: list[_Request] = []
        self._state = self._BUSY
        self._added = 0  # requests added, ever: tells the thread whether to wait in grace
        self._wake_pending = False
        self._closing = False
        self._retry_at: float | None = None
        self._rescan = rescan
        self._thread: threading.Thread | None = None
        self._wake_cb: ctypes.Structure | None = None
        self._wake_buf = ctypes.create_string_buffer(64)
        self._pipe: tuple[int, int] | None = None
        if wake_pipe:
            r, w = os.pipe()  # the read end stays blocking: a glibc thread sleeps in read()
            os.set_blocking(w, False)
            self._pipe = (r, w)

    def fileno(self) -> int:
        return self._flag.fileno()

    def raise_flag(self) -> None:
        self._flag.raise_flag()

    def notify_with(self, fn: Callable[[], None]) -> None:
        self._flag.on_raise = fn

    def clear(self) -> None:
        self._flag.clear()

    def add(self, requests: list[_Request]) -> None:
        """Watch ``requests`` (already handed to the system)."""
        with self._lock:
            for r in requests:
                self._watched[ctypes.addressof(r.cb)] = r
            self._added += len(requests)
            wake = self._nudge_locked()
        self._after_nudge(wake)

    def retry_later(self, delay: float) -> None:
        with self._lock:
            self._retry_at = time.monotonic() + delay
            wake = self._nudge_locked()
        self._after_nudge(wake)

    def _nudge_locked(self) -> bool:
        """Make the thread look at its list again; True when the pipe must be written."""
        if self._state == self._GRACE:
            self._cond.notify()
        elif self._state == self._SUSPENDING and not self._wake_pending:
            self._wake_pending = True
            return True
        return False

    def _after_nudge(self, wake: bool) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="aiopg_io-posix_aio", daemon=True)
            self._thread.start()
        elif wake:
            self._wake()

    def collect(self) -> list[_Request]:
        with self._lock:
            done, self._done = self._done, []
        return done

    def _wake(self) -> None:
        if self._pipe is not None:
            with contextlib.suppress(BlockingIOError):  # full: wake-ups enough are pending
                os.write(self._pipe[1], b"w")

    def _arm_wake(self) -> None:
        assert self._pipe is not None
        cb = self._plat.aiocb()
        cb.aio_fildes = self._pipe[0]
        cb.aio_buf = ctypes.addressof(self._wake_buf)
        cb.aio_nbytes = len(self._wake_buf)
        cb.aio_sigevent.sigev_notify = self._plat.sigev_none
        while self._lib.aio_read(ctypes.byref(cb)) != 0:
            err = ctypes.get_errno()
            if err != errno.EAGAIN:  # EAGAIN: glibc could not start a thread just now
                raise OSError(err, f"posix_aio: cannot arm the wake-up read: {os.strerror(err)}")
            time.sleep(0.001)
        self._wake_cb = cb

    def _run(self) -> None:
        lib = self._lib
        aio_error, aio_return, aio_suspend = lib.aio_error, lib.aio_return, lib.aio_suspend
        peek = self._plat.glibc_error_field
        inprogress = errno.EINPROGRESS
        if self._pipe is not None:
            self._arm_wake()
        wake_addr = ctypes.addressof(self._wake_cb) if self._wake_cb is not None else None
        timeout = _Timespec()
        lock, cond = self._lock, self._cond
        while True:
            with lock:
                if self._closing and not self._watched:
                    break
                self._wake_pending = False
                items = list(self._watched.items())
                seen = self._added
                retry_at = self._retry_at
                self._state = self._SUSPENDING
            addrs = [a for a, _ in items]
            if wake_addr is not None:
                addrs.append(wake_addr)
            delay = self._rescan
            if retry_at is not None:
                left = max(0.0, retry_at - time.monotonic())
                delay = left if delay is None else min(delay, left)
            if addrs:
                arr = (ctypes.c_void_p * len(addrs))(*addrs)
                if delay is None:
                    aio_suspend(arr, len(addrs), None)
                else:
                    timeout.tv_sec = int(delay)
                    timeout.tv_nsec = int((delay - int(delay)) * 1e9)
                    aio_suspend(arr, len(addrs), ctypes.byref(timeout))
            else:  # the fallback, nothing in flight: sleep until add(), retry_later() or close()
                with lock:
                    if self._added == seen and not self._closing:
                        self._state = self._GRACE
                        cond.wait(None if retry_at is None else max(0.0, retry_at - time.monotonic()))
                        self._state = self._BUSY
            with lock:
                self._state = self._BUSY
            if self._wake_cb is not None and aio_error(ctypes.byref(self._wake_cb)) != inprogress:
                aio_return(ctypes.byref(self._wake_cb))
                self._arm_wake()
                wake_addr = ctypes.addressof(self._wake_cb)
            finished = []
            for _, r in items:
                cb = r.cb
                # glibc: __error_code is what aio_error returns; peeking it without the
                # lock skips a locked call per unfinished request, and aio_error confirms.
                if peek and cb.glibc_error_code == inprogress:
                    continue
                e = aio_error(ctypes.byref(cb))
                if e == inprogress:
                    continue
                r.result = aio_return(ctypes.byref(cb))
                r.error = e
                finished.append(r)
            fire = False
            with lock:
                for r in finished:
                    del self._watched[ctypes.addressof(r.cb)]
                if finished:
                    self._done.extend(finished)
                    fire = True
                if self._retry_at is not None and time.monotonic() >= self._retry_at:
                    self._retry_at = None
                    fire = True
            if fire:
                self._flag.raise_flag()
                with lock:
                    if self._added == seen and not self._closing:
                        self._state = self._GRACE
                        cond.wait(self._GRACE_SECONDS)
                        self._state = self._BUSY
        self._flag.raise_flag()
        if self._wake_cb is not None and self._pipe is not None:
            # The wake-up read must be over before the pipe closes: cancelled while it waits
            # for a glibc thread (every thread busy), else ended by a byte.
            if lib.aio_cancel(self._pipe[0], ctypes.byref(self._wake_cb)) != self._plat.aio_canceled:
                self._wake()
            one = (ctypes.c_void_p * 1)(ctypes.addressof(self._wake_cb))
            while aio_error(ctypes.byref(self._wake_cb)) == inprogress:
                aio_suspend(one, 1, None)
            aio_return(ctypes.byref(self._wake_cb))

    def wait(self, timeout: float) -> None:
        """Block until the flag fd is readable (used only by close's drain)."""
        select.select([self._flag.fileno()], [], [], timeout)

    def close(self) -> None:
        with self._lock:
            self._closing = True
            wake = self._nudge_locked()
        if self._thread is not None:
            if wake:
                self._wake()
            self._thread.join()
            self._thread = None
        if self._pipe is not None:
            os.close(self._pipe[0])
            os.close(self._pipe[1])
            self._pipe = None
        self._flag.close()


class _FreeBSDNotifier:
    """FreeBSD: SIGEV_KEVENT posts EVFILT_AIO on our kqueue; the kqueue fd is the completion fd.

    Facts (sys/sys/event.h, aio(4)): the event's ``ident`` is the aiocb address and its
    ``udata`` the aiocb's ``sigev_value``; EVFILT_USER (-11) with NOTE_TRIGGER wakes the fd
    for completions made without the kernel; EVFILT_TIMER (-7, milliseconds) paces EAGAIN
    retries. Untested on this machine.
    """

    _USER_IDENT = 1
    _TIMER_IDENT = 2

    def __init__(self, lib: _AioLib, plat: _Platform) -> None:
        self._lib = lib
        self._kq = select.kqueue()  # type: ignore[attr-defined,unused-ignore]
        self._watched: dict[int, _Request] = {}
        self._kev = select.kevent  # type: ignore[attr-defined,unused-ignore]
        flags = select.KQ_EV_ADD | select.KQ_EV_CLEAR  # type: ignore[attr-defined,unused-ignore]
        self._kq.control([self._kev(self._USER_IDENT, _FREEBSD_EVFILT_USER, flags)], 0)

    def fileno(self) -> int:
        fd: int = self._kq.fileno()
        return fd

    def prepare(self, r: _Request) -> None:
        sev = r.cb.aio_sigevent
        sev.sigev_notify = _FREEBSD_SIGEV_KEVENT
        sev.sigev_signo = self._kq.fileno()  # sigev_notify_kqueue
        sev.sigev_value.sival_ptr = ctypes.addressof(r.cb)

    def add(self, requests: list[_Request]) -> None:
        for r in requests:
            self._watched[ctypes.addressof(r.cb)] = r

    def raise_flag(self) -> None:
        kev = self._kev(self._USER_IDENT, _FREEBSD_EVFILT_USER, 0, _FREEBSD_NOTE_TRIGGER)
        self._kq.control([kev], 0)

    def retry_later(self, delay: float) -> None:
        flags = select.KQ_EV_ADD | select.KQ_EV_ONESHOT  # type: ignore[attr-defined,unused-ignore]
        kev = self._kev(self._TIMER_IDENT, _FREEBSD_EVFILT_TIMER, flags, 0, max(1, int(delay * 1000)))
        self._kq.control([kev], 0)

    def clear(self) -> None:
        """Readiness is cleared by draining the events in :meth:`collect`."""

    def collect(self) -> list[_Request]:
        out = []
        while True:
            events = self._kq.control(None, 256, 0)
            for ev in events:
                if ev.filter != _FREEBSD_EVFILT_AIO:
                    continue
                r = self._watched.pop(ev.ident, None)
                if r is None:
                    continue
                r.error = self._lib.aio_error(ctypes.byref(r.cb))
                r.result = self._lib.aio_return(ctypes.byref(r.cb))
                out.append(r)
            if len(events) < 256:
                return out

    def wait(self, timeout: float) -> None:
        select.select([self.fileno()], [], [], timeout)

    def close(self) -> None:
        self._kq.close()


_Notif = _SuspendNotifier | _FreeBSDNotifier


def _make_notifier(lib: _AioLib, plat: _Platform) -> _Notif:
    """The notifier the platform facts name (chosen in :func:`_select_platform`)."""
    if plat.notifier == "kqueue":
        return _FreeBSDNotifier(lib, plat)
    if plat.notifier == "suspend+rescan":
        return _SuspendNotifier(lib, plat, wake_pipe=False, rescan=_MACOS_RESCAN)
    return _SuspendNotifier(lib, plat, wake_pipe=True, rescan=None)


# ----------------------------------------------------------------------------------------------


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
        if _PLATFORM is None:
            raise RuntimeError(f"posix_aio cannot run here: {_PLATFORM_REASON}")
        plat = _PLATFORM
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
        self._lib = _AioLib(plat)
        self._notifier = _make_notifier(self._lib, plat)
        self._queue: deque[_Request] = deque()  # waiting for a slot
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
        if _PLATFORM is None:
            return _PLATFORM_REASON
        try:
            lib = _AioLib(_PLATFORM)
        except OSError as exc:
            return f"the C library has no POSIX AIO: {exc.strerror}"
        if not _PLATFORM.tested:
            return None  # the code exists; `info` marks it "not tested on this machine"
        return _probe(lib, _PLATFORM)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(vectored=False, cancel_in_flight=False, max_in_flight=max(256, self._limit))

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
        if not isinstance(self._notifier, _SuspendNotifier):
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
        if op.state is not OpState.SUBMITTED or not isinstance(run, _Run):
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
            self._notifier.wait(1.0)
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
        run = _Run()
        op.driver_data = run
        aiocb = plat.aiocb
        sigev_none = plat.sigev_none
        if op.kind is _FSYNC or op.kind is _FDATASYNC:
            cb = aiocb()
            cb.aio_fildes = op.fd
            cb.aio_sigevent.sigev_notify = sigev_none
            run.requests.append(_Request(op, run, cb, 0, None))
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
                cb = aiocb()
                cb.aio_fildes = op.fd
                cb.aio_offset = pos
                cb.aio_buf = addr
                cb.aio_nbytes = n
                cb.aio_lio_opcode = opcode
                cb.aio_sigevent.sigev_notify = sigev_none
                run.requests.append(_Request(op, run, cb, n, keep))
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
        batch: list[_Request] = []
        sent: list[_Request] = []
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

    def _listio(self, batch: list[_Request]) -> list[_Request]:
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

    def _refused(self, r: _Request, err: int) -> None:
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

    def _absorb(self, finished: list[_Request]) -> None:
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

    def _request_done(self, r: _Request) -> None:
        r.keep = None
        run = r.run
        run.outstanding -= 1
        if run.outstanding == 0:
            self._finish_run(r.op, run)

    def _finish_run(self, op: Op, run: _Run) -> None:
        """Every request of ``run`` is back: complete ``op`` or start its next round."""
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


def _probe(lib: _AioLib, plat: _Platform) -> str | None:
    """A round trip: aio_write then aio_read of a temporary file, waited for in aio_suspend."""
    try:
        with tempfile.TemporaryFile() as f:
            fd = f.fileno()
            payload = ctypes.create_string_buffer(b"aiopg", 5)
            for opcode, call in ((plat.lio_write, lib.aio_write), (plat.lio_read, lib.aio_read)):
                cb = plat.aiocb()
                cb.aio_fildes = fd
                cb.aio_buf = ctypes.addressof(payload)
                cb.aio_nbytes = 5
                cb.aio_lio_opcode = opcode
                cb.aio_sigevent.sigev_notify = plat.sigev_none
                if call(ctypes.byref(cb)) != 0:
                    err = ctypes.get_errno()
                    return f"aio_read/aio_write refused a temporary file: {os.strerror(err)}"
                one = (ctypes.c_void_p * 1)(ctypes.addressof(cb))
                limit = _Timespec(5, 0)
                while lib.aio_error(ctypes.byref(cb)) == errno.EINPROGRESS:
                    if (
                        lib.aio_suspend(one, 1, ctypes.byref(limit)) != 0
                        and ctypes.get_errno() == errno.EAGAIN
                    ):
                        return "a POSIX AIO probe did not complete within 5 s"
                e = lib.aio_error(ctypes.byref(cb))
                n = lib.aio_return(ctypes.byref(cb))
                if e != 0 or n != 5:
                    return f"a POSIX AIO probe failed: {os.strerror(e) if e else f'{n} bytes of 5'}"
            if payload.raw != b"aiopg":
                return "a POSIX AIO probe read back the wrong bytes"
    except OSError as exc:
        return f"a POSIX AIO probe failed: {exc}"
    return None
