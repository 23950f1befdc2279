"""One wake-up shared by the committers parked behind one round (asyncio, Python >= 3.11).

Under group commit every committer of a round parks until the round's sync is done. With
one :class:`aiopg_io._glue.Park` each, a round makes and sets one future per committer; a
:class:`GroupPark` is one future that all of them await, so a round of 64 commits makes
one (docs/benchmarks.md, "The WAL's lone commit and 64 committers", has what it saves).

Facts relied on (CPython's ``asyncio.Task``, C and Python alike, 3.11+):

- A task awaiting a future registers its wake-up as one of the future's done callbacks;
  ``set_result`` schedules them in registration order, so the parked committers resume in
  arrival order, which is LSN order.
- ``Task.cancel()`` counts the request (``Task.cancelling()``, new in 3.11) and then calls
  ``cancel()`` on the future the task awaits. On a shared future that throws
  ``CancelledError`` into *every* task awaiting it. A task whose ``cancelling()`` is 0 was
  not cancelled itself: :meth:`GroupPark.spurious` tells it so, and it waits again on a
  fresh future (:meth:`GroupPark.wait` makes one, already set when the group's wake-up came
  meanwhile). A task cancelled after the future was done (``cancel()`` then returns False)
  gets its ``CancelledError`` from the task itself, with ``cancelling()`` above 0 too.
- An exact ``asyncio.Future`` keeps the C task's fast path; a subclass overriding
  ``cancel`` would leave it (measured in the same subsection), hence this protocol rather
  than a future that refuses cancellation.

On trio and on Python 3.10 (no ``Task.cancelling``) each committer parks on its own
(:func:`group_parks` says which).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable

from aiopg_io._glue import Glue

__all__ = ["GroupPark", "group_parks"]


def group_parks(glue: Glue) -> bool:
    """True when committers of ``glue``'s loop can share a :class:`GroupPark`: asyncio
    (its waiters are futures: ``future_factory``) on Python >= 3.11."""
    return glue.future_factory is not None and sys.version_info >= (3, 11)


class GroupPark:
    """:class:`aiopg_io._glue.Park` for several tasks of one asyncio loop: one future.

    ``target`` is the highest LSN a member needs (the group's key among the parked);
    ``members`` counts the tasks parked on it and not yet resumed (:meth:`left`)."""

    __slots__ = ("_fut", "_loop", "_set", "members", "target")

    def __init__(self, loop: asyncio.AbstractEventLoop, target: int) -> None:
        self._loop = loop
        self._fut: asyncio.Future[None] = asyncio.Future(loop=loop)
        self._set = False
        self.members = 0
        self.target = target

    @property
    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        fut = self._fut
        if not fut.done():
            fut.set_result(None)

    def wait(self) -> Awaitable[None]:
        fut = self._fut
        if fut.cancelled():  # a member was cancelled: the others wait on a new one
            fut = self._fut = asyncio.Future(loop=self._loop)
            if self._set:
                fut.set_result(None)
        return fut

    @staticmethod
    def spurious(exc: BaseException) -> bool:
        """True when ``exc``, raised by awaiting :meth:`wait`, came from another member's
        cancellation, not this task's: wait again."""
        if not isinstance(exc, asyncio.CancelledError):
            return False
        task = asyncio.current_task()
        return task is not None and task.cancelling() == 0  # type: ignore[attr-defined,unused-ignore]

    def left(self) -> int:
        """One member resumed (woken, or gone with its own cancellation); the members left."""
        self.members -= 1
        return self.members
