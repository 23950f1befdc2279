"""What each system's POSIX AIO is, and the one place that chooses this machine's.

Facts this module relies on
===========================

glibc (Linux; read from glibc's ``rt/aio_misc.c``, ``rt/lio_listio-common.c``, glibc
2.34-2.36; since 2.34 the aio_* functions live in libc.so.6, before in librt.so.1):

- AIO is user space: a helper thread does each request (``_libc`` and ``_driver`` say
  what follows from that). There is no ``AIO_LISTIO_MAX`` (``sysconf`` says -1).
- ``aio_fsync`` accepts ``O_SYNC`` and ``O_DSYNC`` (EINVAL otherwise).
- The ``aiocb`` has the private ``__error_code`` that ``aio_error`` returns
  (``glibc_error_field``: the driver presets it, the notifier peeks at it).
- Its state (helper-thread counts, request table, mutex) is not reset in a fork child
  (``survives_fork``; ``_libc`` says what follows).

FreeBSD (``sys/sys/aio.h``, ``sys/sys/fcntl.h``; FreeBSD 13-14): kernel AIO.
``AIO_LISTIO_MAX`` is 16; ``vfs.aio.max_aio_queue_per_proc`` (default 256) bounds the
requests queued per process (then EAGAIN); ``aio_fsync`` takes ``O_DSYNC`` since 13.0.
Completions are posted to a kqueue (``_notifiers``).

macOS (XNU ``bsd/sys/aio.h``): ``aio_fsync`` takes only ``O_SYNC`` (``O_DSYNC`` is "NOT
SUPPORTED"); ``kern.aioprocmax`` defaults to 16 requests per process. Completions are
found by a thread that rescans (``_notifiers``).

Per platform, the code that only FreeBSD or macOS runs is ``FreeBSDNotifier``, the two
layout families and the :data:`FREEBSD` / :data:`MACOS` facts; :func:`select_platform` is
the one place that chooses. Nothing in this package touches a signal disposition.

The three :class:`Platform` records below are data, one field per fact, written out in full
even where two systems agree: each can be read against its own headers.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from dataclasses import dataclass

from ._layouts import FreeBSDAiocb, LinuxAiocb, MacOSAiocb

__all__ = [
    "DEFAULT_KERNEL_LIMIT",
    "FREEBSD",
    "LINUX_GLIBC",
    "MACOS",
    "PLATFORM",
    "PLATFORM_REASON",
    "Platform",
    "select_platform",
    "tested_here",
]


@dataclass(frozen=True)
class Platform:
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
    notifier: str  # "suspend+pipe" | "kqueue" | "suspend+rescan": see make_notifier
    survives_fork: bool  # a fork child of a process that used AIO can use it too (_libc)
    tested: bool  # this package's tests run on it

    def new_aiocb(
        self, fd: int, *, opcode: int = 0, offset: int = 0, buf: int = 0, nbytes: int = 0
    ) -> ctypes.Structure:
        """A zeroed aiocb for one request on ``fd``, notification SIGEV_NONE (a notifier
        that wants another asks for it in its ``prepare``)."""
        cb = self.aiocb(
            aio_fildes=fd, aio_offset=offset, aio_buf=buf, aio_nbytes=nbytes, aio_lio_opcode=opcode
        )
        cb.aio_sigevent.sigev_notify = self.sigev_none
        return cb


LINUX_GLIBC = Platform(
    name="linux-glibc",
    aiocb=LinuxAiocb,
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
    survives_fork=False,  # user-space AIO: its threads and request table are the parent's
    tested=True,
)

FREEBSD = Platform(
    name="freebsd",
    aiocb=FreeBSDAiocb,
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
    survives_fork=True,  # kernel AIO: a child inherits none of the parent's requests
    tested=False,
)

MACOS = Platform(
    name="macos",
    aiocb=MacOSAiocb,
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
    survives_fork=True,  # kernel AIO, as on FreeBSD
    tested=False,
)


DEFAULT_KERNEL_LIMIT = LINUX_GLIBC.default_kernel_limit


def select_platform() -> tuple[Platform | None, str | None]:
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
        return LINUX_GLIBC, None
    if sys.platform.startswith("freebsd"):
        return FREEBSD, None
    if sys.platform == "darwin":
        return MACOS, None
    return None, f"POSIX AIO is not supported by this driver on {sys.platform} (use the worker driver)"


# This machine's facts, or None and why POSIX AIO cannot run here. The driver reads them
# as ``_platforms.PLATFORM`` at each use, so a test can replace them.
PLATFORM, PLATFORM_REASON = select_platform()


def tested_here() -> bool:
    """Whether this platform's code path is the one this package's tests exercise."""
    return PLATFORM is not None and PLATFORM.tested
