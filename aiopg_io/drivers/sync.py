"""The ``sync`` driver: every op runs inline, blocking, inside ``submit``.

PostgreSQL's ``io_method=sync``. It is the reference the other drivers are compared with in
the differential tests, and the one to reach for when debugging: a traceback points at the
system call. It blocks the event loop for the duration of each call, so it is never what
``auto`` picks.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._blocking import perform
from .base import ALL_KINDS, Capabilities, Driver, DriverCounters, DriverStatistics, Op, OpState

__all__ = ["SyncDriver"]


class SyncDriver(Driver):
    name = "sync"

    def __init__(self) -> None:
        self._done: list[Op] = []
        self._closed = False
        self._counters = DriverCounters()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(asynchronous=False, max_in_flight=1024, kinds=ALL_KINDS)

    def submit(self, ops: Sequence[Op]) -> None:
        if self._closed:
            raise RuntimeError("sync driver is closed")
        c = self._counters
        c.submit_calls += 1
        for op in ops:
            op.set_state(OpState.SUBMITTED)
            c.submitted += 1
            if op.cancel_requested:
                op.cancelled()
            else:
                perform(op)
            self._done.append(op)

    def fileno(self) -> int | None:
        return None

    def reap(self) -> list[Op]:
        done, self._done = self._done, []
        self._counters.reaped(done)
        return done

    def cancel(self, op: Op) -> None:
        # Nothing is ever in flight between submit() and reap(): the op already ran.
        op.cancel_requested = True

    def close(self) -> list[Op]:
        self._closed = True
        return self.reap()

    def statistics(self) -> DriverStatistics:
        return self._counters.snapshot(self.name, len(self._done))
