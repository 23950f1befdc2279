"""Loop glue: the few things an IOContext needs from an event loop, one module per loop.

A glue object is bound to one running loop (an asyncio loop, uvloop's included, or one
``trio.run``). It can run a callback at the end of the current tick, watch an fd for
readability, park the current task on an op and wake it, and hand completions back.
The IOContext holds every policy; the glue holds none.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .._context import IOContext
    from ..drivers.base import Op

__all__ = ["Glue", "current_glue"]


class Glue(Protocol):
    #: Identifies the running loop: contexts are kept per (loop key, driver key).
    loop_key: object

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once every task runnable now has run (the end of this tick)."""

    def watch(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Call ``on_readable`` whenever ``fd`` is readable, until :meth:`unwatch`."""

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd``; after it the fd may be closed."""

    async def wait(self, ctx: IOContext, op: Op) -> None:
        """Park the current task until ``ctx`` wakes ``op``; the trio/asyncio cancellation
        model: on cancel ask ``ctx.cancel(op)``, keep waiting until the op is reaped, then
        let the cancellation through. Returns when the op is reaped."""

    def wake(self, op: Op) -> None:
        """Resume the task parked on ``op`` (from a callback on the loop thread)."""

    async def checkpoint(self) -> None:
        """A schedule point that also delivers a pending cancellation (trio's
        ``checkpoint``): what an op that completed without parking still owes the loop."""

    def registry(self) -> dict[object, IOContext]:
        """The contexts of this loop, by driver key."""

    def is_current(self) -> bool:
        """True when called from a task of this glue's loop, in this glue's thread."""

    def running(self) -> bool:
        """False once the loop can no longer run anything (closed, or its run ended)."""

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> bool:
        """Run ``fn`` on this glue's loop, from any thread or loop. False when the loop no
        longer runs (closed, or its ``trio.run`` returned): then nothing will ever run on
        it again, and the caller may do the work itself."""


def current_glue() -> Glue:
    """The glue for the loop running in this thread; RuntimeError when there is none."""
    if "trio" in sys.modules:
        from . import _trio

        glue = _trio.current()
        if glue is not None:
            return glue
    from . import _asyncio

    return _asyncio.current()
