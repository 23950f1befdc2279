"""Tasks waiting their turn, in arrival order: the one hand-off primitive.

Three places park tasks in a line and let them through one at a time: a file's cursor calls
(:class:`FifoLock`, as ``io.Buffered*`` serialises threads), the WAL's piecewise record
copies (one at a time, ahead of later appends), and the IOContext's callers waiting for a
slot under its cap on ops in flight (:class:`HandOff`).

What they share, and why it is subtle: a wake-up is given to a task that may be cancelled
before it runs. That task can no longer use its turn, so it hands the turn on as it leaves
(to the next in line, or back to the lock when nobody waits); otherwise the line would stall
with a turn given and never taken. trio's ``ParkingLot`` and asyncio's ``Lock`` do the same
(asyncio's ``Lock._wake_up_first`` on a cancelled acquire). Built on ``anyio.Event``, so it
is the same on every loop; uncontended, neither class awaits anything.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from types import TracebackType

import anyio

__all__ = ["FifoLock", "HandOff"]


class HandOff:
    """A line of parked tasks, woken one at a time in arrival order.

    ``on_unused`` is what to do with a wake-up whose task was cancelled before it could use
    it; by default it goes to the next task in line.
    """

    __slots__ = ("_on_unused", "_waiters")

    def __init__(self, on_unused: Callable[[], None] | None = None) -> None:
        self._waiters: deque[anyio.Event] = deque()
        self._on_unused = on_unused if on_unused is not None else self.wake_one

    def __len__(self) -> int:
        return len(self._waiters)

    async def wait(self) -> None:
        """Park until woken by :meth:`wake_one` (or :meth:`wake_all`)."""
        ev = anyio.Event()
        self._waiters.append(ev)
        try:
            await ev.wait()
        except BaseException:
            if ev.is_set():
                self._on_unused()
            else:
                self._waiters.remove(ev)
            raise

    def wake_one(self) -> bool:
        """Wake the first task in line; False when the line is empty."""
        if self._waiters:
            self._waiters.popleft().set()
            return True
        return False

    def wake_all(self) -> None:
        while self._waiters:
            self._waiters.popleft().set()


class FifoLock:
    """Mutual exclusion in arrival order; on release the lock passes straight to the first
    waiter (no task can barge in between). Free when uncontended (no checkpoint)."""

    __slots__ = ("_busy", "_line")

    def __init__(self) -> None:
        self._busy = False
        self._line = HandOff(on_unused=self.release)

    @property
    def contended(self) -> bool:
        """True while held or waited for: a newcomer would have to queue."""
        return self._busy or bool(self._line)

    async def acquire(self) -> None:
        if not self._busy:
            self._busy = True
            return
        await self._line.wait()  # woken owning the lock: _busy stayed True

    def release(self) -> None:
        if not self._line.wake_one():
            self._busy = False

    def wake_all(self) -> None:
        """Let every waiter through at once (the guarded object is closing: each will find
        it closed, and release in turn)."""
        self._line.wake_all()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
