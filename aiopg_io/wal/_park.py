"""A one-shot wake-up for one parked task, cheaper than ``anyio.Event`` on the commit path.

Group commit parks every committer once per commit, so the parking primitive is on the hot
path. ``anyio.Event`` wraps ``asyncio.Event`` (a deque of futures behind two layers of
Python) or trio's ``Event`` (a parking lot); a committer only ever needs "one task waits,
one wake-up", which is one future on asyncio/uvloop and ``wait_task_rescheduled`` on trio
(trio's documented low-level API, trio.lowlevel). Replacing ``anyio.Event`` by this raised
group commit's commits/s on every loop (docs/benchmarks.md, "The committer's wake-up").

Semantics (both backends): :meth:`set` before or during :meth:`wait` makes the wait
return; a cancelled wait raises the backend's cancellation, and :attr:`is_set` then tells
whether a wake-up was given anyway (so the caller can pass it on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

__all__ = ["Park", "park_factory"]


class Park(Protocol):
    @property
    def is_set(self) -> bool: ...

    def set(self) -> None: ...

    def wait(self) -> Awaitable[None]: ...


class _AsyncioPark:
    __slots__ = ("_fut",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._fut: asyncio.Future[None] = loop.create_future()

    @property
    def is_set(self) -> bool:
        return self._fut.done() and not self._fut.cancelled()

    def set(self) -> None:
        if not self._fut.done():
            self._fut.set_result(None)

    def wait(self) -> Awaitable[None]:
        # The future itself: awaiting it directly saves a coroutine frame per wake-up.
        return self._fut


class _TrioPark:
    __slots__ = ("_flag", "_task")

    def __init__(self) -> None:
        self._flag = False
        self._task: Any = None

    @property
    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        import trio

        self._flag = True
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def wait(self) -> Awaitable[None]:
        return self._wait()

    async def _wait(self) -> None:
        import trio

        if self._flag:
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


def park_factory() -> Callable[[], Park]:
    """A maker of :class:`Park` objects for the event loop running now."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (nor uvloop): trio, the only other loop aiopg_io runs on
        return _TrioPark
    return lambda: _AsyncioPark(loop)
