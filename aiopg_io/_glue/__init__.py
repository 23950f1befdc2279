"""Loop glue: everything aiopg_io needs from an event loop, one module per loop.

This package is the only place that knows which loop runs (trio's ``_run.py`` chooses its
I/O backend once; anyio's high-level code never asks). A glue object is bound to one
running loop (an asyncio loop, uvloop's included, or one ``trio.run``). It can run a
callback at the end of the current tick, watch an fd for readability, park the current
task on an op and wake it, hand out one-shot wake-ups (:class:`Park`) for the WAL's group
commit, and name the current task (:func:`current_task_identity`) for the buffer pool's
pins. The IOContext, the WAL and the pool hold every policy; the glue holds none.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from ..drivers.base import Op

__all__ = [
    "Glue",
    "Park",
    "SharedPark",
    "coroutine_function",
    "current_glue",
    "current_task_identity",
    "trio_park_status",
]

_F = TypeVar("_F", bound=Callable[..., Any])


def coroutine_function(fn: _F) -> _F:
    """Mark a plain function that returns an awaitable (``AsyncFile``'s fast-path calls) as a
    coroutine function: awaited like one, it says so to frameworks that dispatch on it.

    Python 3.12+: ``inspect.markcoroutinefunction``, so ``inspect.iscoroutinefunction`` and
    ``asyncio.iscoroutinefunction`` say True. 3.10 and 3.11 have no public marker:
    ``inspect.iscoroutinefunction`` only reads the code object's CO_COROUTINE flag and says
    False; ``asyncio.iscoroutinefunction`` also accepts ``asyncio.coroutines._is_coroutine``
    on the function, the marker ``unittest.mock.AsyncMock`` and asgiref's
    ``markcoroutinefunction`` set there, so it is set here too and that one says True
    (docs/guide.md, "The cursor API").
    """
    mark = getattr(inspect, "markcoroutinefunction", None)
    if mark is not None:
        marked: _F = mark(fn)
        return marked
    import asyncio.coroutines

    marker = getattr(asyncio.coroutines, "_is_coroutine", None)
    if marker is not None:
        fn._is_coroutine = marker  # type: ignore[attr-defined]
    return fn


class Park(Protocol):
    """A one-shot wake-up for one parked task: :meth:`set` before or during :meth:`wait`
    makes the wait return; a cancelled wait raises the loop's cancellation, and
    :attr:`is_set` then tells whether a wake-up was given anyway (so the caller can pass
    it on). Cheaper than ``anyio.Event``: one future on asyncio, ``wait_task_rescheduled``
    on trio (docs/benchmarks.md, "The committer's wake-up", has what it saved)."""

    @property
    def is_set(self) -> bool: ...

    def set(self) -> None: ...

    def wait(self) -> Awaitable[None]: ...


class SharedPark(Park, Protocol):
    """A :class:`Park` that several tasks of one loop wait on at once: one wake-up for all
    (asyncio: one future). A task that is cancelled while it waits may wake the others
    with the loop's cancellation too; :meth:`spurious` tells each whether the exception
    it got is its own, and a task for which it is not waits again. ``members`` and
    ``key`` are its owner's to keep (the WAL: the tasks parked on it, their highest LSN)."""

    members: int
    key: int

    def spurious(self, exc: BaseException) -> bool:
        """True when ``exc``, raised by awaiting :meth:`wait`, came from another waiter's
        cancellation, not the current task's: wait again (:meth:`wait` then gives a new
        awaitable, already done if the wake-up came meanwhile)."""


class Glue(Protocol):
    #: Identifies the running loop: contexts are kept per (loop key, driver key).
    loop_key: object

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once every task runnable now has run (the end of this tick)."""

    def watch(self, fd: int, on_readable: Callable[[], None], on_loop_end: Callable[[], None]) -> None:
        """Call ``on_readable`` whenever ``fd`` is readable, until :meth:`unwatch`; call
        ``on_loop_end`` if the loop ends (trio's run returns) while still watching."""

    def at_loop_end(self, fn: Callable[[], None]) -> bool:
        """Call ``fn`` when the loop ends (as ``watch``'s ``on_loop_end``, with no fd);
        False, and ``fn`` is never called, when the loop has ended already."""

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd``; after it the fd may be closed."""

    def wait(self, op: Op, on_cancel: Callable[[Op], bool]) -> Awaitable[None]:
        """Park the current task until :meth:`wake` is called for ``op``; the trio/asyncio
        cancellation model: on cancel call ``on_cancel(op)``, which returns True when the op
        was dropped (the cancellation goes through at once) and False when it must still be
        reaped: the task keeps waiting until then, and the cancellation is raised after.
        An awaitable: a coroutine, or on trio a C object (``_wake.TaskParker``) where trio's
        shapes allow it, so a wait runs no Python frame."""

    def wake(self, op: Op) -> None:
        """Resume the task parked on ``op`` (from a callback on the loop thread)."""

    #: What makes the waiter of an op parked from C (``_uring.c``'s RingWait): a callable
    #: returning a future that :meth:`wake` (and the C waker) completes and a task can
    #: await (asyncio: ``loop.create_future``); None where the loop's waiters are not
    #: futures (trio): ops staged from C then park through :meth:`wait`.
    future_factory: Callable[[], object] | None

    async def rejoin(self, op: Op, on_cancel: Callable[[Op], bool], exc: BaseException) -> None:
        """What :meth:`wait` does once ``exc`` was thrown into it, for an op parked from C
        on a :attr:`future_factory` future: a cancellation asks ``on_cancel(op)`` and, unless
        the op was dropped, keeps waiting until it is reaped; then ``exc`` is raised."""

    def waker(self, twin: Callable[[Op], object]) -> Callable[[Op], object]:
        """One callable a driver may call per op from C (``Driver.reap_and_wake``): it
        resumes a task parked by :meth:`wait` itself and hands every other op to ``twin``
        (which decides in Python, e.g. with :meth:`wake`): a C object (``_glue/_wake.c``)
        where that extension is built and not refused (``AIOPG_IO_PURE=1``), else ``twin``."""

    async def checkpoint(self) -> None:
        """A schedule point that also delivers a pending cancellation (trio's
        ``checkpoint``): what an op that completed without parking still owes the loop."""

    def owner_probe(self) -> tuple[Callable[[], object], object]:
        """``(get, owner)``: ``get()`` returns ``owner`` exactly when called from a task of
        this glue's loop, in its thread (else another object, or it raises): :meth:`is_current`
        in a form C code calls with no Python frame (the file calls' fast path)."""

    @property
    def inline_result(self) -> Callable[[Any], Awaitable[Any]] | None:
        """What a file call the C fast path completed returns (``_uring.c``, FastRead): None
        for the fast path's own awaitable (asyncio: a yield to the loop every few completions,
        the rule in docs/guide.md), else a function of the result that makes the awaitable
        (trio: a checkpoint per call, trio's convention)."""

    def registry(self) -> dict[object, Any]:
        """The contexts of this loop, by driver key (kept here, made by the IOContext)."""

    def park(self) -> Park:
        """A new one-shot wake-up for a task of this loop."""

    def shared_park(self) -> SharedPark | None:
        """A new one-shot wake-up for several tasks of this loop, or None where the loop
        wakes each parked task on its own anyway (trio) or a cancelled waiter cannot be
        told from the others (asyncio before 3.11, no ``Task.cancelling``)."""

    def task_identity(self) -> object:
        """:func:`current_task_identity` for a task of this loop, without finding the loop
        first (the buffer pool asks on every pin)."""

    def is_current(self) -> bool:
        """True when called from a task of this glue's loop, in this glue's thread."""

    def running(self) -> bool:
        """False once the loop can no longer run anything (closed, or its run ended)."""

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> bool:
        """Run ``fn`` on this glue's loop, from any thread or loop. False when the loop no
        longer runs (closed, or its ``trio.run`` returned): then nothing will ever run on
        it again, and the caller may do the work itself."""

    #: True when an anyio socket stream's raw socket may be written to directly: on trio
    #: it is a trio socket that nothing else buffers for; on asyncio anyio builds its
    #: streams over a transport, which owns the socket and may hold unsent bytes.
    raw_stream_sockets: bool

    #: What this loop's own streams raise when the peer is gone (trio's
    #: ``BrokenResourceError``); anyio's are known everywhere.
    broken_stream_errors: tuple[type[Exception], ...]

    async def wait_writable(self, fd: int) -> None:
        """Return once ``fd`` (a non-blocking socket) is writable; cancellable, and a
        cancelled wait leaves nothing registered on the loop."""

    async def wait_readable(self, fd: int) -> None:
        """As :meth:`wait_writable`, for readability (a TLS socket's renegotiation)."""


def current_task_identity() -> object:
    """The coroutine of the running task, on whichever loop runs: the buffer pool records
    it as a pin's holder. A finished task's coroutine has no frame (``cr_frame is None``)
    on asyncio and trio alike, which tells a pin its holder can no longer release."""
    if "trio" in sys.modules:
        import trio

        try:
            return trio.lowlevel.current_task().coro
        except RuntimeError:
            pass  # not in trio: asyncio
    import asyncio

    task = asyncio.current_task()
    return task.get_coro() if task is not None else None


def trio_park_status() -> str:
    """How a task waits for an op on trio here (``python -m aiopg_io info``): parked from C
    where trio's shapes allow it, else in Python and why; or that trio is not installed."""
    try:
        import trio  # noqa: F401
    except ImportError:
        return "not installed"
    from . import _trio

    return _trio.park_status()


def current_glue() -> Glue:
    """The glue for the loop running in this thread; RuntimeError when there is none."""
    if "trio" in sys.modules:
        from . import _trio

        glue = _trio.current()
        if glue is not None:
            return glue
    from . import _asyncio

    return _asyncio.current()
