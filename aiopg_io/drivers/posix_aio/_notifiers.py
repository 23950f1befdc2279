"""How the driver learns that requests finished: one pollable fd per driver, two ways.

Facts this module relies on
===========================

Completion notification on Linux (glibc 2.34-2.36, ``rt/aio_misc.c``; the choice, and why):

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
  submission, which then costs no pipe round trip (:class:`SuspendNotifier`). What the
  calls themselves do (``aio_suspend``, ``aio_error``, ``aio_return``, ``aio_cancel``) is
  in ``_libc``.

FreeBSD (``sys/sys/aio.h``, ``sys/sys/signal.h``, ``sys/sys/event.h``, aio(4); FreeBSD
13-14): ``SIGEV_KEVENT`` with ``sigev_notify_kqueue`` (an alias of ``sigev_signo``) naming a
kqueue posts an ``EVFILT_AIO`` event whose ``ident`` is the aiocb address and ``udata`` the
``sigev_value``; the kqueue fd is the completion fd (:class:`FreeBSDNotifier`). AIO on
pipes/sockets needs ``vfs.aio.enable_unsafe``; regular files are "safe" (so no wake pipe is
needed or used there).

macOS (XNU ``bsd/kern/kern_event.c``, ``bsd/sys/aio.h``): XNU's kqueue long had
``[~EVFILT_AIO] = &bad_filtops``; newer kernels grew an ``aio_filtops`` but the public SDK
gives no registration contract to rely on. Fallback, documented: the Linux notification
thread without a wake aiocb (XNU AIO does not take pipes), re-reading its list every
:data:`MACOS_RESCAN` seconds while requests are in flight and asleep on a condition while
none are; the completion fd is then a pipe. That fallback also runs on Linux, where the
tests exercise it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import threading
import time
from collections.abc import Callable

from .._notify import Notifier
from ._layouts import Timespec
from ._libc import AioLib
from ._platforms import Platform
from ._requests import Request

__all__ = [
    "FREEBSD_EVFILT_AIO",
    "FREEBSD_EVFILT_TIMER",
    "FREEBSD_EVFILT_USER",
    "FREEBSD_NOTE_TRIGGER",
    "FREEBSD_SIGEV_KEVENT",
    "MACOS_RESCAN",
    "FreeBSDNotifier",
    "Notif",
    "SuspendNotifier",
    "make_notifier",
]

FREEBSD_EVFILT_AIO = -3  # sys/sys/event.h
FREEBSD_EVFILT_TIMER = -7
FREEBSD_EVFILT_USER = -11
FREEBSD_NOTE_TRIGGER = 0x01000000
FREEBSD_SIGEV_KEVENT = 3
MACOS_RESCAN = 0.002  # seconds: how late the macOS fallback may notice a new submission


class SuspendNotifier:
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

    def __init__(self, lib: AioLib, plat: Platform, *, wake_pipe: bool, rescan: float | None) -> None:
        self._lib = lib
        self._plat = plat
        self._flag = Notifier()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._watched: dict[int, Request] = {}
        self._done: list[Request] = []
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

    def add(self, requests: list[Request]) -> None:
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

    def collect(self) -> list[Request]:
        with self._lock:
            done, self._done = self._done, []
        return done

    def _wake(self) -> None:
        if self._pipe is not None:
            with contextlib.suppress(BlockingIOError):  # full: wake-ups enough are pending
                os.write(self._pipe[1], b"w")

    def _arm_wake(self) -> None:
        assert self._pipe is not None
        cb = self._plat.new_aiocb(
            self._pipe[0], buf=ctypes.addressof(self._wake_buf), nbytes=len(self._wake_buf)
        )
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
        timeout = Timespec()
        lock = self._lock
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
                self._grace(seen, None if retry_at is None else max(0.0, retry_at - time.monotonic()))
            with lock:
                self._state = self._BUSY
            if self._wake_cb is not None and aio_error(ctypes.byref(self._wake_cb)) != inprogress:
                aio_return(ctypes.byref(self._wake_cb))
                self._arm_wake()
                wake_addr = ctypes.addressof(self._wake_cb)
            finished = self._finished(items, peek)
            fire = False
            with lock:
                for addr in [ctypes.addressof(r.cb) for r in finished]:
                    del self._watched[addr]
                if finished:
                    self._done.extend(finished)
                    fire = True
                if self._retry_at is not None and time.monotonic() >= self._retry_at:
                    self._retry_at = None
                    fire = True
            # Handed over: this thread must not keep the requests (their ops, their buffers)
            # alive while it waits for the next ones.
            items, finished = [], []
            if fire:
                self._flag.raise_flag()
                self._grace(seen, self._GRACE_SECONDS)
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

    def _finished(self, items: list[tuple[int, Request]], peek: bool) -> list[Request]:
        """The requests of ``items`` the system is done with, their result and error filled in
        (a function of its own so that no local of the waiting thread outlives the scan)."""
        aio_error, aio_return = self._lib.aio_error, self._lib.aio_return
        inprogress = errno.EINPROGRESS
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
        return finished

    def _grace(self, seen: int, timeout: float | None) -> None:
        """Wait on the condition (state ``_GRACE``) unless requests came in after the list
        was taken at ``seen`` or the notifier is closing: ``add`` / ``close`` end the wait."""
        with self._lock:
            if self._added == seen and not self._closing:
                self._state = self._GRACE
                self._cond.wait(timeout)
                self._state = self._BUSY

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


class FreeBSDNotifier:
    """FreeBSD: SIGEV_KEVENT posts EVFILT_AIO on our kqueue; the kqueue fd is the completion fd.

    Facts (sys/sys/event.h, aio(4)): the event's ``ident`` is the aiocb address and its
    ``udata`` the aiocb's ``sigev_value``; EVFILT_USER (-11) with NOTE_TRIGGER wakes the fd
    for completions made without the kernel; EVFILT_TIMER (-7, milliseconds) paces EAGAIN
    retries. Untested on this machine.
    """

    _USER_IDENT = 1
    _TIMER_IDENT = 2

    def __init__(self, lib: AioLib, plat: Platform) -> None:
        self._lib = lib
        self._kq = select.kqueue()  # type: ignore[attr-defined,unused-ignore]
        self._watched: dict[int, Request] = {}
        self._kev = select.kevent  # type: ignore[attr-defined,unused-ignore]
        flags = select.KQ_EV_ADD | select.KQ_EV_CLEAR  # type: ignore[attr-defined,unused-ignore]
        self._kq.control([self._kev(self._USER_IDENT, FREEBSD_EVFILT_USER, flags)], 0)

    def fileno(self) -> int:
        fd: int = self._kq.fileno()
        return fd

    def prepare(self, r: Request) -> None:
        sev = r.cb.aio_sigevent
        sev.sigev_notify = FREEBSD_SIGEV_KEVENT
        sev.sigev_signo = self._kq.fileno()  # sigev_notify_kqueue
        sev.sigev_value.sival_ptr = ctypes.addressof(r.cb)

    def add(self, requests: list[Request]) -> None:
        for r in requests:
            self._watched[ctypes.addressof(r.cb)] = r

    def raise_flag(self) -> None:
        kev = self._kev(self._USER_IDENT, FREEBSD_EVFILT_USER, 0, FREEBSD_NOTE_TRIGGER)
        self._kq.control([kev], 0)

    def retry_later(self, delay: float) -> None:
        flags = select.KQ_EV_ADD | select.KQ_EV_ONESHOT  # type: ignore[attr-defined,unused-ignore]
        kev = self._kev(self._TIMER_IDENT, FREEBSD_EVFILT_TIMER, flags, 0, max(1, int(delay * 1000)))
        self._kq.control([kev], 0)

    def clear(self) -> None:
        """Readiness is cleared by draining the events in :meth:`collect`."""

    def collect(self) -> list[Request]:
        out = []
        while True:
            events = self._kq.control(None, 256, 0)
            for ev in events:
                if ev.filter != FREEBSD_EVFILT_AIO:
                    continue
                r = self._watched.pop(ev.ident, None)
                if r is None:
                    continue
                r.error = self._lib.aio_error(ctypes.byref(r.cb))
                r.result = self._lib.aio_return(ctypes.byref(r.cb))
                out.append(r)
            if len(events) < 256:
                return out

    def close(self) -> None:
        self._kq.close()


Notif = SuspendNotifier | FreeBSDNotifier


def make_notifier(lib: AioLib, plat: Platform) -> Notif:
    """The notifier the platform facts name (chosen in :func:`select_platform`)."""
    if plat.notifier == "kqueue":
        return FreeBSDNotifier(lib, plat)
    if plat.notifier == "suspend+rescan":
        return SuspendNotifier(lib, plat, wake_pipe=False, rescan=MACOS_RESCAN)
    return SuspendNotifier(lib, plat, wake_pipe=True, rescan=None)
