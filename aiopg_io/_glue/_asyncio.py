"""asyncio (and uvloop) glue.

- End of tick: ``loop.call_soon`` appends to the ready queue; a loop iteration runs only the
  callbacks that were ready when it started, so ours runs after every task resumed in this
  iteration has issued its ops (asyncio/base_events.py, ``_run_once``; uvloop keeps the same
  order).
- Cancellation: ``Task.cancel`` cancels the future a task awaits. The op is still owned by
  the driver, so the task then waits on a fresh future, shielded, until the op is reaped,
  and re-raises the CancelledError it caught (so ``Task.uncancel`` bookkeeping stays right).
- Socket readiness (:meth:`AsyncioGlue.wait_writable`): ``add_writer`` with a future,
  removed in ``finally`` so a cancelled wait leaves nothing registered. A selector loop
  refuses ``add_writer`` on a transport's socket ("File descriptor ... is used by
  transport"), and anyio's asyncio streams sit on transports: their raw sockets are not
  written to directly (``raw_stream_sockets = False``).
- A closed loop: ``loop.close()`` leaves its futures behind; setting the result of one that
  has a done-callback schedules it with ``call_soon``, which raises "Event loop is closed".
  A context closed after its loop (a file closed in a later ``asyncio.run``) wakes such
  futures, so waking tolerates it: the task they belong to will never run again anyway.
- The end of a loop: asyncio has no close hook, but every runner that ends a loop in order
  (``asyncio.run``, ``asyncio.Runner`` and so pytest-asyncio's loop fixtures and anyio's
  runner, ``uvloop.run``) awaits ``loop.shutdown_asyncgens()`` before ``loop.close()``,
  which ``aclose()``s every async generator first iterated on the loop (the loop learns of
  them through ``sys.set_asyncgen_hooks``, which ``run_forever`` installs; asyncio/base_events.py).
  So while a completion fd is watched, the glue keeps one such generator suspended; its
  ``finally`` calls each watcher's ``on_loop_end`` (the IOContext closes: ring, threads,
  eventfd), as trio's end of run does, and each callback given to ``at_loop_end`` (a
  context held for the loop's path calls, which may watch no fd: the sync driver). A loop
  closed without that step (``loop.close()`` alone) leaves its contexts to the next user
  that finds the loop gone, as before.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import types
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from ..drivers._compiled import load
from ..drivers.base import Op, OpState

__all__ = ["AsyncioGlue", "current"]

_WAKE: Any = load("aiopg_io._glue._wake")[0]
#: The running task of each loop: before 3.12 ``asyncio.current_task`` is a Python function
#: around this dict's ``get`` (asyncio/tasks.py), a frame the buffer pool would pay on every
#: pin (``task_identity``); from 3.12 it is C itself.
_CURRENT_TASKS: Any = getattr(asyncio.tasks, "_current_tasks", None)
_glues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncioGlue] = weakref.WeakKeyDictionary()


class AsyncioGlue:
    raw_stream_sockets = False
    broken_stream_errors: tuple[type[Exception], ...] = ()
    inline_result: Callable[[Any], Awaitable[Any]] | None = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._task_of: Callable[[], asyncio.Task[Any] | None] = functools.partial(asyncio.current_task, loop)
        python_wrapper = not isinstance(asyncio.current_task, types.BuiltinFunctionType)
        if python_wrapper and isinstance(_CURRENT_TASKS, dict):
            self._task_of = functools.partial(_CURRENT_TASKS.get, loop)
        #: The running Task of this loop (None outside one) with no Python frame: the buffer
        #: pool names a pin's holder with it (and asks task_ended of it), where
        #: task_identity (the task's coroutine) would cost a frame per pin.
        self.current_task = self._task_of
        # The ring path's futures (_uring.c's RingWait): the loop's own create_future, but
        # on a stock asyncio loop, whose create_future is the Python-level
        # ``futures.Future(loop=self)``, that Future's C type called directly (no frame).
        self.future_factory: Callable[[], object] | None = loop.create_future
        if type(loop).create_future is asyncio.BaseEventLoop.create_future:
            self.future_factory = functools.partial(asyncio.Future, loop=loop)
        self.loop_key: object = loop
        # The loop's own call_soon, not the method below around it: one Python frame less
        # per end-of-tick flush (the IOContext's and the ring path's, _uring.c's RunPath).
        self.call_soon = loop.call_soon  # type: ignore[method-assign,assignment]
        self._contexts: dict[object, Any] = {}
        self._on_loop_end: dict[int, Callable[[], None]] = {}
        self._at_loop_end: list[Callable[[], None]] = []
        self._loop_end_sentinel: AsyncGenerator[None, None] | None = None
        self._loop_ended = False

    def call_soon(self, fn: Callable[[], None]) -> None:
        self.loop.call_soon(fn)

    def watch(self, fd: int, on_readable: Callable[[], None], on_loop_end: Callable[[], None]) -> None:
        self.loop.add_reader(fd, on_readable)
        self._on_loop_end[fd] = on_loop_end
        self._track_loop_end()

    def at_loop_end(self, fn: Callable[[], None]) -> bool:
        if self._loop_ended:
            return False
        self._at_loop_end.append(fn)
        self._track_loop_end()
        return True

    def _track_loop_end(self) -> None:
        if self._loop_end_sentinel is None and not self._loop_ended:
            sentinel = self._loop_end_sentinel = self._until_loop_end()
            try:
                sentinel.asend(None).send(None)  # first iteration: the loop now tracks it
            except StopIteration:
                pass  # suspended at its yield, as intended

    async def _until_loop_end(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            # shutdown_asyncgens(): the loop is ending (see the module docstring).
            self._loop_ended = True
            self._loop_end_sentinel = None
            for on_loop_end in [*self._on_loop_end.values(), *self._at_loop_end]:
                on_loop_end()
            self._at_loop_end.clear()

    def unwatch(self, fd: int) -> None:
        self._on_loop_end.pop(fd, None)
        if not self.loop.is_closed():  # a closed loop watches nothing any more
            self.loop.remove_reader(fd)

    async def wait(self, op: Op, on_cancel: Callable[[Op], bool]) -> None:
        fut = self.loop.create_future()
        op.waiter = fut
        try:
            await fut
        except asyncio.CancelledError as exc:
            await self.rejoin(op, on_cancel, exc)

    async def rejoin(self, op: Op, on_cancel: Callable[[Op], bool], exc: BaseException) -> None:
        if not isinstance(exc, asyncio.CancelledError) or on_cancel(op):
            raise exc
        while True:
            fut = self.loop.create_future()
            op.waiter = fut
            if op.state is OpState.REAPED:
                break
            try:
                await asyncio.shield(fut)
                break
            except asyncio.CancelledError:
                if fut.done():
                    break
        raise exc

    def wake(self, op: Op) -> None:
        fut = op.waiter
        if isinstance(fut, asyncio.Future) and not fut.done():
            try:
                fut.set_result(None)
            except RuntimeError:  # its loop is closed (see the module docstring)
                pass

    def waker(self, twin: Callable[[Op], object]) -> Callable[[Op], object]:
        if _WAKE is None:
            return twin
        waker: Callable[[Op], object] = _WAKE.FutureWaker(asyncio.Future, twin)
        return waker

    async def checkpoint(self) -> None:
        await asyncio.sleep(0)

    def registry(self) -> dict[object, Any]:
        return self._contexts

    async def wait_writable(self, fd: int) -> None:
        fut: asyncio.Future[None] = self.loop.create_future()
        self.loop.add_writer(fd, _resolve, fut)
        try:
            await fut
        finally:
            self.loop.remove_writer(fd)

    async def wait_readable(self, fd: int) -> None:
        fut: asyncio.Future[None] = self.loop.create_future()
        self.loop.add_reader(fd, _resolve, fut)
        try:
            await fut
        finally:
            self.loop.remove_reader(fd)

    def park(self) -> _AsyncioPark:
        return _AsyncioPark(self.loop)

    def shared_park(self) -> _AsyncioSharedPark | None:
        return _AsyncioSharedPark(self.loop) if _TASK_CANCELLING else None

    def task_identity(self) -> object:
        task = self._task_of()
        return task.get_coro() if task is not None else None

    def task_ended(self, task: asyncio.Task[Any]) -> bool:
        """Whether a Task ``current_task`` named has ended."""
        return task.done()

    def is_current(self) -> bool:
        return asyncio._get_running_loop() is self.loop

    def owner_probe(self) -> tuple[Callable[[], object], object]:
        return asyncio._get_running_loop, self.loop

    def running(self) -> bool:
        return self.loop.is_running()

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> bool:
        loop = self.loop
        if not loop.is_running():  # a loop that stopped may never run this
            return False
        try:
            loop.call_soon_threadsafe(fn)
        except RuntimeError:  # closed meanwhile
            return False
        return True


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def current() -> AsyncioGlue:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "aiopg_io needs a running event loop: call it from a coroutine run by "
            "asyncio.run(), uvloop.run() or trio.run()"
        ) from None
    try:
        return _glues[loop]
    except KeyError:
        glue = _glues[loop] = AsyncioGlue(loop)
        return glue


class _AsyncioPark:
    """:class:`aiopg_io._glue.Park` on asyncio: one future."""

    __slots__ = ("_fut",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # The C constructor, not loop.create_future() (a Python call around it): a committer
        # parks one of these per commit.
        self._fut: asyncio.Future[None] = asyncio.Future(loop=loop)

    @property
    def is_set(self) -> bool:
        return self._fut.done() and not self._fut.cancelled()

    def set(self) -> None:
        fut = self._fut
        if not fut.done():
            fut.set_result(None)

    def wait(self) -> Awaitable[None]:
        # The future itself: awaiting it directly saves a coroutine frame per wake-up.
        return self._fut


#: ``Task.cancelling()`` (3.11): what tells a cancelled waiter of a shared future from the others.
_TASK_CANCELLING = sys.version_info >= (3, 11)


class _AsyncioSharedPark:
    """:class:`aiopg_io._glue.SharedPark` on asyncio: one future that several tasks await.

    Facts relied on (CPython's ``asyncio.Task``, C and Python alike, 3.11+): a task awaiting
    a future adds its wake-up to the future's done callbacks, and ``set_result`` schedules
    them in the order they were added. ``Task.cancel()`` first counts the request
    (``Task.cancelling()``), then calls ``cancel()`` on the future the task awaits: on a
    shared future that throws ``CancelledError`` into every task awaiting it, so a task
    whose ``cancelling()`` is 0 was not the one cancelled (:meth:`spurious`). A task
    cancelled once the future was done (``cancel()`` then returns False) gets its
    ``CancelledError`` from the task itself, with ``cancelling()`` above 0 too. An exact
    ``asyncio.Future`` keeps the C task's fast path, which a subclass refusing ``cancel``
    would leave (docs/benchmarks.md, "The WAL's lone commit and 64 committers")."""

    __slots__ = ("_fut", "_loop", "_set", "key", "members")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._fut: asyncio.Future[None] = asyncio.Future(loop=loop)
        self._set = False
        self.members = 0
        self.key = 0

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
        if fut.cancelled():  # a waiter was cancelled: the others wait on a new one
            fut = self._fut = asyncio.Future(loop=self._loop)
            if self._set:
                fut.set_result(None)
        return fut

    def spurious(self, exc: BaseException) -> bool:
        if not isinstance(exc, asyncio.CancelledError):
            return False
        task = asyncio.current_task(self._loop)
        return task is not None and task.cancelling() == 0  # type: ignore[attr-defined,unused-ignore]
