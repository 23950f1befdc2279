"""The C structures POSIX AIO takes, laid out with ctypes for each system.

Facts this module relies on
===========================

All six targets (Linux, FreeBSD and macOS on x86_64 and aarch64) are LP64: int 4 bytes,
long / pointer / size_t / off_t 8 bytes, natural alignment; ctypes applies the same rules,
so one layout per OS serves both machines. Each class's docstring names the header and the
field list it copies.

- glibc (Linux; ``aio.h``, ``bits/types/sigevent_t.h``, glibc 2.34-2.36).
- FreeBSD (``sys/sys/aio.h``, ``sys/sys/signal.h``; FreeBSD 13-14): ``aio_iov`` /
  ``aio_iovcnt`` alias ``aio_buf`` / ``aio_nbytes``; ``sigev_notify_kqueue`` aliases
  ``sigev_signo``.
- macOS (XNU ``bsd/sys/aio.h``, ``bsd/sys/signal.h``).

Layout checks: the Linux structs are compared with this machine's glibc headers by a C
program (sizes, every offset, the constants); the FreeBSD and macOS structs are written out
field for field from their headers in C and laid out by the same compiler (LP64 natural
alignment, as on amd64/arm64), and their constants are compared with the header values
written down in the test (``tests/drivers/test_posix_aio.py``). Their own headers are not
compiled against here.
"""

from __future__ import annotations

import ctypes

__all__ = [
    "FreeBSDAiocb",
    "FreeBSDSigevent",
    "GlibcAioinit",
    "LinuxAiocb",
    "LinuxSigevThread",
    "LinuxSigevUnion",
    "LinuxSigevent",
    "MacOSAiocb",
    "MacOSSigevent",
    "Timespec",
]


class _Sigval(ctypes.Union):
    # union sigval { int sival_int; void *sival_ptr; } -- identical on all three systems.
    _fields_ = [("sival_int", ctypes.c_int), ("sival_ptr", ctypes.c_void_p)]


class LinuxSigevThread(ctypes.Structure):
    _fields_ = [("function", ctypes.c_void_p), ("attribute", ctypes.c_void_p)]


class LinuxSigevUnion(ctypes.Union):
    # glibc bits/types/sigevent_t.h: __SIGEV_MAX_SIZE 64; on __WORDSIZE 64
    # __SIGEV_PAD_SIZE = 64 / sizeof(int) - 4 = 12 ints.
    _fields_ = [("pad", ctypes.c_int * 12), ("tid", ctypes.c_int), ("thread", LinuxSigevThread)]


class LinuxSigevent(ctypes.Structure):
    """glibc ``bits/types/sigevent_t.h`` (glibc 2.36, generic for 64-bit words): sigev_value,
    sigev_signo, sigev_notify, then the 48-byte union ``_sigev_un`` {_pad[12], _tid,
    _sigev_thread {_function, _attribute}}; 64 bytes. sigev_notify values from
    ``bits/sigevent-consts.h``: SIGEV_SIGNAL 0, SIGEV_NONE 1, SIGEV_THREAD 2, SIGEV_THREAD_ID 4."""

    _fields_ = [
        ("sigev_value", _Sigval),
        ("sigev_signo", ctypes.c_int),
        ("sigev_notify", ctypes.c_int),
        ("sigev_un", LinuxSigevUnion),
    ]


class LinuxAiocb(ctypes.Structure):
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
        ("aio_sigevent", LinuxSigevent),
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
        ("thread", LinuxSigevThread),  # {void (*_function)(union sigval); struct pthread_attr **}
        ("kevent_flags", ctypes.c_ushort),
        ("spare", ctypes.c_long * 8),
    ]


class FreeBSDSigevent(ctypes.Structure):
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


class FreeBSDAiocb(ctypes.Structure):
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
        ("aio_sigevent", FreeBSDSigevent),
    ]


class MacOSSigevent(ctypes.Structure):
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


class MacOSAiocb(ctypes.Structure):
    """XNU ``bsd/sys/aio.h`` ``struct aiocb``: aio_fildes, aio_offset, aio_buf, aio_nbytes,
    aio_reqprio, aio_sigevent, aio_lio_opcode; 80 bytes on arm64 and x86_64. Checked against
    a C compiler's layout of that field list, not against the SDK's header."""

    _fields_ = [
        ("aio_fildes", ctypes.c_int),
        ("aio_offset", ctypes.c_int64),
        ("aio_buf", ctypes.c_void_p),
        ("aio_nbytes", ctypes.c_size_t),
        ("aio_reqprio", ctypes.c_int),
        ("aio_sigevent", MacOSSigevent),
        ("aio_lio_opcode", ctypes.c_int),
    ]


class GlibcAioinit(ctypes.Structure):
    """glibc ``aio.h`` lines 86-97, ``struct aioinit``: eight ints (``aio_init``'s argument)."""

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


class Timespec(ctypes.Structure):
    """``struct timespec`` (``aio_suspend``'s timeout): two longs on LP64."""

    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]
