"""The ``worker`` driver: a pool of threads doing blocking system calls.

PostgreSQL's ``io_method=worker`` (the default since PostgreSQL 18), and the portable
fallback here. What makes it cheaper than ``loop.run_in_executor`` per call (aiofiles):

- a batch is handed over with one queue operation per op and no future per op;
- threads do the I/O with the GIL released (``os.preadv``/``os.pwritev``);
- completions go into one deque and raise one :class:`Notifier` flag, so a burst of N
  completions wakes the loop once and is reaped in one callback, not N.

Cancellation: an op still in the queue is completed with ECANCELED at once, by ``cancel``
itself, so its task gets control back without waiting for the ops queued ahead of it; one a
thread has taken runs to the end (a thread cannot be interrupted safely). Who owns a queued
op is settled by one atomic ``dict.pop`` on ``_queued``: the thread that dequeues it and
``cancel`` both pop, and only the one that gets it back may touch the op (a thread that finds
it gone skips it, and never touches its buffers).

Thread count: ``threads`` (default :data:`DEFAULT_THREADS`, or ``AIOPG_IO_WORKERS``). A file
read that misses the page cache holds its thread for a device round trip, so the count bounds
how many device requests are outstanding; PostgreSQL defaults to 3 I/O workers for a server
process, a library serving one loop with tens of ops in flight wants more.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence

from ._blocking import perform
from ._notify import Notifier
from .base import ALL_KINDS, Capabilities, Driver, DriverCounters, DriverStatistics, Op, OpState, int_option

__all__ = ["DEFAULT_THREADS", "WorkerDriver"]

DEFAULT_THREADS = 16


def _default_threads() -> int:
    raw = os.environ.get("AIOPG_IO_WORKERS")
    if raw is None:
        return DEFAULT_THREADS
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"AIOPG_IO_WORKERS={raw!r} is not a whole number") from None
    if not 1 <= n <= 1024:
        raise ValueError(f"AIOPG_IO_WORKERS={n} is out of range: 1 to 1024")
    return n


class WorkerDriver(Driver):
    name = "worker"

    def __init__(self, *, threads: int | None = None) -> None:
        n = _default_threads() if threads is None else int_option("worker", "threads", threads, 1, 1024)
        self._nthreads = n
        self._queue: queue.SimpleQueue[Op | None] = queue.SimpleQueue()
        self._done: deque[Op] = deque()
        self._notifier = Notifier()
        self._threads: list[threading.Thread] = []
        self._in_flight: set[Op] = set()
        self._queued: dict[Op, bool] = {}  # submitted, not yet taken by a thread nor cancelled
        self._closed = False
        self._counters = DriverCounters()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            max_in_flight=max(256, 4 * self._nthreads),
            threads=True,
            kinds=ALL_KINDS,
            threaded_kinds=ALL_KINDS,
        )

    def _run(self) -> None:
        get, done, notifier, claim = self._queue.get, self._done, self._notifier, self._queued.pop
        while True:
            op = get()
            if op is None:
                return
            if not claim(op, False):
                continue  # cancel() completed it while it was queued
            if op.cancel_requested:
                op.cancelled()
            else:
                perform(op)
            done.append(op)
            notifier.raise_flag()
            # Handed over: waiting for the next op, this thread must not keep this one (and
            # its buffers) alive.
            op = None

    def submit(self, ops: Sequence[Op]) -> None:
        if self._closed:
            raise RuntimeError("worker driver is closed")
        if not self._threads:
            for i in range(self._nthreads):
                t = threading.Thread(target=self._run, name=f"aiopg_io-worker-{i}", daemon=True)
                t.start()
                self._threads.append(t)
        c = self._counters
        c.submit_calls += 1
        put, track, queued = self._queue.put, self._in_flight.add, self._queued
        for op in ops:
            op.set_state(OpState.SUBMITTED)
            track(op)
            queued[op] = True
            put(op)
        c.submitted += len(ops)

    def fileno(self) -> int:
        return self._notifier.fileno()

    def notify_with(self, fn: Callable[[], None]) -> bool:
        self._notifier.on_raise = fn
        return True

    def reap(self) -> list[Op]:
        self._notifier.clear()
        done = self._done
        out: list[Op] = []
        pop = done.popleft
        untrack = self._in_flight.discard
        while done:
            op = pop()
            untrack(op)
            out.append(op)
        self._counters.reaped(out)
        return out

    def cancel(self, op: Op) -> None:
        op.cancel_requested = True
        if self._queued.pop(op, False):
            # No thread has it, and none will touch it now: complete it here, signal as a
            # thread would (the IOContext reaps it on the next readiness).
            op.cancelled()
            self._done.append(op)
            self._notifier.raise_flag()

    def close(self) -> list[Op]:
        if self._closed:
            return []
        self._closed = True
        # Queued ops are cancelled by the threads that dequeue them; running ones finish.
        # The sentinels queue behind every op, so each thread drains before it exits.
        for op in self._in_flight:
            op.cancel_requested = True
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()
        self._threads.clear()
        out = self.reap()
        self._notifier.close()
        return out

    def statistics(self) -> DriverStatistics:
        return self._counters.snapshot(self.name, len(self._in_flight), threads=self._nthreads)
