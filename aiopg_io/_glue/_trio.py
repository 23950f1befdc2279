"""trio glue.

- End of tick: a system task, parked in ``wait_task_rescheduled``, runs the queued
  callbacks. ``reschedule`` puts it in trio's *next* batch of runnable tasks, behind every
  task already runnable now, so all ops issued in this batch go out together. This costs
  no system call; ``TrioToken.run_sync_soon`` would take a lock and write trio's wake-up
  socket on every tick (it is built for other threads), which showed as two ``recv`` calls
  per op in a profile.
- Completion fd: a system task loops on ``trio.lowlevel.wait_readable``; ``unwatch`` cancels
  it and calls ``notify_closing`` so the fd can be closed safely (trio's rule: never close
  an fd another task waits on without telling trio first).
- Cancellation: ``wait_task_rescheduled`` with an abort function that asks the context to
  cancel the op. An op not yet handed to the driver is dropped and the abort succeeds; an
  op the driver owns returns ``Abort.FAILED`` and the task stays parked until the op is
  reaped, then is rescheduled with the cancellation (trio's own pattern for Windows
  overlapped I/O in ``_io_windows.py``).
- A callback of ours that raises an ``Exception`` (the end-of-tick flush, a completion's
  reap: a ``start_preadv``/``start_pwritev`` callback or a waker's twin that breaks its
  contract, a driver's completion handler) is logged on the ``aiopg_io`` logger with its
  traceback and the run goes on, as asyncio's loop reports a callback's exception through
  its exception handler and goes on (the driver keeps every op for its next reap): in a
  system task it would end the run with ``TrioInternalError``, and the op's caller has
  returned long since. A ``BaseException`` (KeyboardInterrupt, SystemExit) still ends it.
- End of run: system tasks are cancelled when the main task returns; the reaper's
  ``finally`` calls the watcher's ``on_loop_end`` (the IOContext closes itself), so
  nothing outlives ``trio.run``; the end-of-tick task's ``finally`` runs the callbacks
  given to ``at_loop_end`` the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import outcome
import trio

from ..drivers._compiled import load

if TYPE_CHECKING:
    from ..drivers.base import Op

__all__ = ["TrioGlue", "current"]

_WAKE: Any = load("aiopg_io._glue._wake")[0]
_GLUE: trio.lowlevel.RunVar[TrioGlue] = trio.lowlevel.RunVar("aiopg_io_glue")
_log = logging.getLogger("aiopg_io")


def _run_reported(fn: Callable[[], None]) -> None:
    """``fn()``, an ``Exception`` it raises logged and dropped (see the module docstring)."""
    try:
        fn()
    except Exception as exc:
        _log.error("Exception in %r, run by aiopg_io on trio", fn, exc_info=exc)


class _Parked:
    __slots__ = ("raise_cancel", "task")

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.raise_cancel: Callable[[], Any] | None = None


class TrioGlue:
    raw_stream_sockets = True
    broken_stream_errors: tuple[type[Exception], ...] = (trio.BrokenResourceError, trio.ClosedResourceError)

    def __init__(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.loop_key: object = self.token
        self._contexts: dict[object, Any] = {}
        self._watchers: dict[int, trio.CancelScope] = {}
        self._soon: list[Callable[[], None]] = []
        self._runner: trio.lowlevel.Task | None = None  # set while parked
        self._ended = False
        self._at_loop_end: list[Callable[[], None]] = []
        trio.lowlevel.spawn_system_task(self._run_soon, name="aiopg_io-end-of-tick")

    async def _run_soon(self) -> None:
        def abort(_: Callable[[], Any]) -> trio.lowlevel.Abort:
            self._runner = None
            return trio.lowlevel.Abort.SUCCEEDED  # the run is ending

        try:
            while True:
                if not self._soon:
                    self._runner = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(abort)
                callbacks, self._soon = self._soon, []
                for fn in callbacks:
                    _run_reported(fn)
        finally:
            self._ended = True  # system tasks are cancelled when the run ends
            at_end, self._at_loop_end = self._at_loop_end, []
            for fn in at_end:
                fn()

    def at_loop_end(self, fn: Callable[[], None]) -> bool:
        if self._ended:
            return False
        self._at_loop_end.append(fn)
        return True

    def call_soon(self, fn: Callable[[], None]) -> None:
        self._soon.append(fn)
        runner = self._runner
        if runner is not None:
            self._runner = None
            trio.lowlevel.reschedule(runner)

    def watch(self, fd: int, on_readable: Callable[[], None], on_loop_end: Callable[[], None]) -> None:
        scope = trio.CancelScope()
        self._watchers[fd] = scope
        trio.lowlevel.spawn_system_task(
            self._reaper, fd, on_readable, on_loop_end, scope, name=f"aiopg_io-reaper-{fd}"
        )

    async def _reaper(
        self,
        fd: int,
        on_readable: Callable[[], None],
        on_loop_end: Callable[[], None],
        scope: trio.CancelScope,
    ) -> None:
        try:
            with scope:
                # Unwatched before this task first ran (a context made and closed within
                # one tick): the fd may be closed already, and wait_readable would register
                # it with epoll before it checks for cancellation (EBADF inside trio).
                while not scope.cancel_called:
                    await trio.lowlevel.wait_readable(fd)
                    if scope.cancel_called:  # unwatched while the wake-up was on its way
                        break
                    _run_reported(on_readable)
        except trio.ClosedResourceError:
            pass
        finally:
            if self._watchers.get(fd) is scope:
                on_loop_end()  # the run is ending while the fd is still watched

    def unwatch(self, fd: int) -> None:
        scope = self._watchers.pop(fd, None)
        if scope is not None:
            scope.cancel()
            trio.lowlevel.notify_closing(fd)

    async def wait(self, op: Op, on_cancel: Callable[[Op], bool]) -> None:
        parked = _Parked(trio.lowlevel.current_task())
        op.waiter = parked

        def abort(raise_cancel: Callable[[], Any]) -> trio.lowlevel.Abort:
            if on_cancel(op):
                return trio.lowlevel.Abort.SUCCEEDED
            parked.raise_cancel = raise_cancel
            return trio.lowlevel.Abort.FAILED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def wake(self, op: Op) -> None:
        parked = op.waiter
        if not isinstance(parked, _Parked):
            return
        op.waiter = None
        if parked.raise_cancel is None:
            trio.lowlevel.reschedule(parked.task)
        else:
            trio.lowlevel.reschedule(parked.task, outcome.capture(parked.raise_cancel))

    #: Waiters here are parked tasks, not futures: an op staged from C parks through wait.
    future_factory: Callable[[], object] | None = None

    async def rejoin(self, op: Op, on_cancel: Callable[[Op], bool], exc: BaseException) -> None:
        raise exc  # no op waits on a future here (future_factory is None): nothing to rejoin

    def waker(self, twin: Callable[[Op], object]) -> Callable[[Op], object]:
        if _WAKE is None:
            return twin
        waker: Callable[[Op], object] = _WAKE.TaskWaker(_Parked, trio.lowlevel.reschedule, twin)
        return waker

    # trio's own, not a coroutine of ours around it: one frame less per call (the cached
    # reads' cursor calls make one each).
    checkpoint = staticmethod(trio.lowlevel.checkpoint)

    @staticmethod
    async def inline_result(result: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return result

    def owner_probe(self) -> tuple[Callable[[], object], object]:
        return _GLUE.get, self

    async def wait_writable(self, fd: int) -> None:
        await trio.lowlevel.wait_writable(fd)

    async def wait_readable(self, fd: int) -> None:
        await trio.lowlevel.wait_readable(fd)

    def registry(self) -> dict[object, Any]:
        return self._contexts

    def park(self) -> _TrioPark:
        return _TrioPark()

    def task_identity(self) -> object:
        return trio.lowlevel.current_task().coro

    def is_current(self) -> bool:
        try:
            return _GLUE.get() is self
        except (LookupError, RuntimeError):  # not inside any trio.run, or not this one's
            return False

    def running(self) -> bool:
        return not self._ended

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> bool:
        if self._ended:
            return False
        try:
            self.token.run_sync_soon(fn)
        except trio.RunFinishedError:
            return False
        return True


def current() -> TrioGlue | None:
    """The glue of the running trio run, or None outside trio."""
    try:
        return _GLUE.get()
    except LookupError:
        pass
    except RuntimeError:  # not inside trio.run
        return None
    try:
        glue = TrioGlue()
    except RuntimeError:
        return None
    _GLUE.set(glue)
    return glue


class _TrioPark:
    """:class:`aiopg_io._glue.Park` on trio: ``wait_task_rescheduled`` (trio.lowlevel)."""

    __slots__ = ("_flag", "_task")

    def __init__(self) -> None:
        self._flag = False
        self._task: trio.lowlevel.Task | None = None

    @property
    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def wait(self) -> Awaitable[None]:
        return self._wait()

    async def _wait(self) -> None:
        if self._flag:
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()

        def abort(_: Callable[[], Any]) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
