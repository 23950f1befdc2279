"""The one fallback for op kinds a driver does not run itself: a few threads beside it.

A driver names the kinds its ``submit`` runs in :attr:`Capabilities.kinds`: posix_aio has
no AIO form of a path op (POSIX ``aio_*`` covers read, write and fsync only), and an
io_uring kernel may lack an opcode (RENAMEAT and UNLINKAT came in 5.11; the driver asks the
kernel's probe, ``io_uring_get_probe(3)``). :func:`with_thread_fallback` wraps such a driver
in a :class:`ThreadFallback`, which hands the other kinds to a small ``worker`` driver
(:mod:`aiopg_io.drivers.worker`, so they run through the same blocking body,
``_blocking.perform``, as on the worker and sync drivers) and everything else to the
driver untouched. Both complete ops the usual way: through ``Op.set_state`` and ``reap``.

Why here, under every wrapper: a :class:`~aiopg_io.drivers.DriverSpec` applies it when it
makes a driver, and the testing wrappers (fault injector, power-loss simulator) apply it to
what their inner factory made, so they see path ops like any other whatever the driver.
The IOContext applies it too, for a factory of a user's own whose driver lacks kinds.

Completions: the worker's flag is raised through its ``notify_with`` hook on the wrapper's
own flag, multiplexed with the driver's completion fd (:mod:`aiopg_io.drivers._mux`), so the
IOContext still watches one fd. A driver that completes everything inside ``submit``
(``capabilities.asynchronous`` False) is reaped by the wrapper's flag instead.

Cancellation is the worker's: an op still queued is cancelled at once, one a thread has
taken runs to the end (a rename may have happened).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from ..errors import OpsStillHeldError
from ._mux import Mux
from .base import ALL_KINDS, Capabilities, Driver, DriverStatistics, Op, OpKind
from .worker import WorkerDriver

__all__ = ["FALLBACK_THREADS", "ThreadFallback", "with_thread_fallback"]

#: Threads for the kinds a driver lacks: metadata calls, issued one at a time by the WAL
#: and the pool; a directory fsync may wait for a journal commit, so more than one.
FALLBACK_THREADS = 4


def with_thread_fallback(driver: Driver) -> Driver:
    """``driver`` itself when it runs every op kind, else a :class:`ThreadFallback` over it."""
    if driver.capabilities.kinds >= ALL_KINDS:
        return driver
    return ThreadFallback(driver)


class ThreadFallback(Driver):
    """``inner`` for the kinds it runs (``inner.capabilities.kinds``), threads for the others."""

    name = "fallback"

    def __init__(self, inner: Driver) -> None:
        self.inner = inner
        caps = inner.capabilities
        self._native = caps.kinds
        self._inner_fd = inner.fileno() if caps.asynchronous else None
        self._mux = Mux(self._inner_fd)
        self._threads = WorkerDriver(threads=FALLBACK_THREADS)
        self._threads.notify_with(self._mux.notifier.raise_flag)
        self._in_threads: set[Op] = set()
        self._inner_pending = False  # a synchronous inner completed ops not reaped yet
        self._closed = False
        # Reads are the inner driver's: its fast path (if any) is this driver's too.
        if OpKind.READ in self._native:
            self.fast_reads = inner.fast_reads
        if OpKind.READ in self._native and OpKind.WRITE in self._native:
            self.ring_runs = inner.ring_runs  # its ops go through this driver's submit

    def __repr__(self) -> str:
        return f"<ThreadFallback {self.inner!r} in_threads={len(self._in_threads)}>"

    @classmethod
    def unavailable_reason(cls, *, direct: bool = False) -> str | None:
        return None

    @property
    def capabilities(self) -> Capabilities:
        caps = self.inner.capabilities
        return dataclasses.replace(
            caps,
            kinds=ALL_KINDS,
            asynchronous=True,
            threaded_kinds=caps.threaded_kinds | (ALL_KINDS - self._native),
        )

    def try_inline(self, op: Op) -> bool:
        return op.kind in self._native and self.inner.try_inline(op)

    def submit(self, ops: Sequence[Op]) -> None:
        if self._closed:
            raise RuntimeError(f"driver {self.inner.name} is closed")
        native = self._native
        mine = [op for op in ops if op.kind not in native]
        if mine:
            self._in_threads.update(mine)
            self._threads.submit(mine)
            ops = [op for op in ops if op.kind in native]
        if ops:
            self.inner.submit(ops)
            if self._inner_fd is None:
                self._inner_pending = True
                self._mux.notifier.raise_flag()

    def fileno(self) -> int:
        return self._mux.fileno()

    def notify_with(self, fn: Callable[[], None]) -> bool:
        if self._inner_fd is not None and not self.inner.notify_with(fn):
            return False
        self._mux.notifier.on_raise = fn
        return True

    def reap(self) -> list[Op]:
        return self._reap(None)[0]

    def reap_and_wake(self, waker: Callable[[Op], object]) -> tuple[list[Op], int]:
        return self._reap(waker)

    def _reap(self, waker: Callable[[Op], object] | None) -> tuple[list[Op], int]:
        if self._closed:
            return [], 0
        # The threads raise the wrapper's flag after each completion they queue: a flag
        # that is down means none to collect (and no eventfd read that fails with EAGAIN).
        # They are collected after the inner driver, so a waker raising there loses none.
        threads_done = self._mux.notifier.clear_if_raised()
        out: list[Op] = []
        woken = 0
        if self._inner_fd is not None or self._inner_pending:
            self._inner_pending = False
            try:
                if waker is None:
                    out = self.inner.reap()
                else:
                    out, woken = self.inner.reap_and_wake(waker)
            except BaseException:
                # A waker that raised: the inner driver keeps what it reaped for its next
                # reap; the threads' ops wait for it too (not reaped yet): make it come.
                self._inner_pending = self._inner_fd is None
                self._mux.notifier.raise_flag()
                raise
        if threads_done:
            threads = self._threads.reap()
            self._in_threads.difference_update(threads)
            out = threads + out
        return out, woken

    def cancel(self, op: Op) -> None:
        (self._threads if op in self._in_threads else self.inner).cancel(op)

    def close(self) -> list[Op]:
        if self._closed:
            return []
        self._closed = True
        out = self._threads.close()
        try:
            out += self.inner.close()
        except OpsStillHeldError as exc:
            exc.drained[:0] = out  # the threads' ops ended too: whoever catches it wakes them
            raise
        finally:
            self._in_threads.clear()
            self._mux.close()
        return out

    def statistics(self) -> DriverStatistics:
        stats = self.inner.statistics()
        threads = self._threads.statistics()
        return dataclasses.replace(
            stats,
            in_flight=stats.in_flight + threads.in_flight,
            submitted=stats.submitted + threads.submitted,
            completed=stats.completed + threads.completed,
            cancelled=stats.cancelled + threads.cancelled,
            extra=(*stats.extra, ("fallback_ops", threads.submitted)),
        )
