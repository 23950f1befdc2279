"""The C library's aio_* functions, bound once through ctypes, and the probe that tries them.

Facts this module relies on
===========================

glibc (Linux; read from glibc's ``rt/aio_misc.c``, ``rt/lio_listio-common.c``,
``rt/aio_suspend.c``, glibc 2.34-2.36; since 2.34 the functions live in libc.so.6, before
in librt.so.1):

- Every request is a ``pread``/``pwrite``/``fsync`` done by a helper thread. At most 20
  helper threads run (``optim = {20, 64, ...}``); an idle one exits after 1 s.
  ``aio_init`` can change the cap only before the process's first request
  (``__aio_init``: "Only allow writing new values if the table is not yet allocated"); this
  module asks for 64 (see :func:`_glibc_aio_init`).
- ``aio_suspend`` waits on a futex until any listed request is no longer EINPROGRESS; it
  returns at once when one already is, and with EINTR when a signal hits the thread.
  ``aio_error`` is a locked read of ``__error_code``; ``aio_return`` a read of
  ``__return_value`` (no resource is freed: calling it is still required by POSIX).
- ``aio_cancel`` cancels only requests still queued (they complete with ECANCELED and wake
  ``aio_suspend``); the running one of a chain answers AIO_NOTCANCELED and finishes.
- Only ``aio_suspend`` blocks; the other calls take glibc's request mutex (on FreeBSD they
  enter the kernel briefly). Hence the two bindings in :class:`AioLib`.
- Nothing of this state is reset in a fork child (no ``atfork`` handler in ``rt/``): the
  child inherits the counts ``nthreads`` and ``idle_thread_count`` and the request lists,
  but none of the helper threads. ``__aio_enqueue_request`` starts a thread only when
  ``idle_thread_count`` is 0; otherwise it signals a condition that no thread of the child
  waits on, so the request is never run. A parent that used AIO less than the idle time
  (1 s) before forking has idle threads, and the child's first request hangs for ever
  (seen here on glibc 2.36: a fork right after a read, the child's own read never
  completed). Requests the parent had in flight stay "running" in the child's table, so
  a child request on the same fd number queues behind them for ever too, and a fork
  while another thread held ``__aio_requests_mutex`` leaves it locked. None of it can be
  repaired from outside glibc, so a process that is a fork child of one that used AIO
  does not use it (:func:`inherited_reason`); a child of a process that never did starts
  glibc's AIO afresh and runs it normally.

FreeBSD (``sys/sys/aio.h``) and macOS (XNU ``bsd/sys/aio.h``) name the same functions with
the same signatures in their C library; only the aiocb layout differs (``_layouts``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile
from collections.abc import Callable

from .._fork import generation
from ._layouts import GlibcAioinit, Timespec
from ._platforms import Platform

__all__ = ["AioLib", "inherited_reason", "probe"]

# The fork generation (``_fork.generation``) of the process that first bound the aio_*
# functions (every request, the probe's included, goes through an AioLib), or None while no
# process in this one's ancestry has. Copied into a fork child with the rest of memory,
# where the generation has moved on: the C library's AIO state is then the parent's.
_bound_in_generation: int | None = None


def inherited_reason(plat: Platform) -> str | None:
    """Why this process cannot use ``plat``'s AIO because it is a fork child of a process
    that did (the C library's state is the parent's), or None."""
    if plat.survives_fork or _bound_in_generation in (None, generation()):
        return None
    return (
        "this process is a fork child of one that used POSIX AIO, and glibc does not reset "
        "its AIO state in a fork child (its helper threads are gone but still counted, so a "
        "request would never complete); use the worker driver in the child, or start the "
        "child with multiprocessing's 'spawn' or 'forkserver'"
    )


class AioLib:
    """The aio_* functions, bound once. Tests may wrap an instance to inject failures.

    Only ``aio_suspend`` blocks, so only it goes through ``CDLL`` (which releases the GIL for
    the call). The others only take glibc's request mutex (or enter the kernel briefly on
    FreeBSD) and are bound through ``PyDLL``, which keeps the GIL: a GIL hand-off per call
    between the loop thread and the notification thread cost more than the calls.
    """

    def __init__(self, plat: Platform) -> None:
        global _bound_in_generation
        if _bound_in_generation is None:
            _bound_in_generation = generation()
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
    fn.argtypes = [ctypes.POINTER(GlibcAioinit)]
    fn.restype = None
    fn(ctypes.byref(GlibcAioinit(aio_threads=_GLIBC_AIO_THREADS, aio_num=64)))


def probe(lib: AioLib, plat: Platform) -> str | None:
    """A round trip: aio_write then aio_read of a temporary file, waited for in aio_suspend."""
    try:
        with tempfile.TemporaryFile() as f:
            fd = f.fileno()
            payload = ctypes.create_string_buffer(b"aiopg", 5)
            for opcode, call in ((plat.lio_write, lib.aio_write), (plat.lio_read, lib.aio_read)):
                cb = plat.new_aiocb(fd, opcode=opcode, buf=ctypes.addressof(payload), nbytes=5)
                if call(ctypes.byref(cb)) != 0:
                    err = ctypes.get_errno()
                    return f"aio_read/aio_write refused a temporary file: {os.strerror(err)}"
                one = (ctypes.c_void_p * 1)(ctypes.addressof(cb))
                limit = Timespec(5, 0)
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
