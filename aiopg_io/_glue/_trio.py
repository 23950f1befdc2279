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
- The park in C: ``wait`` is ``_wake.TaskParker`` where its shapes of trio hold, else the
  Python twin ``_wait_twin`` (the same steps: the ``_Parked`` record is the C park itself,
  the abort function the same). ``wait_task_rescheduled`` is two coroutine frames and an
  attrs ``__init__`` in, an ``unwrap`` out, around the glue's frame, per op;
  the C park yields trio's trap object (``WaitTaskRescheduled``) itself and reads the
  Outcome sent back, which leans on trio internals a release may change. So the shapes are
  checked at import (``_park_shapes``: the trap class the run loop tests for, how
  ``wait_task_rescheduled`` and ``current_task`` are written, a trap built the C way equal
  to trio's own) and on trio older than ``_PARK_TRIO_MIN`` (the oldest tested) or any shape
  that differs, the twin runs; ``python -m aiopg_io info`` says which (``park_status``).
  docs/benchmarks.md ("trio's park in C") has what it saves.
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

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import outcome
import trio

from ..drivers._compiled import load

if TYPE_CHECKING:
    from ..drivers.base import Op

__all__ = ["TrioGlue", "current"]

_WAKE, _WAKE_WHY = load("aiopg_io._glue._wake")
_GLUE: trio.lowlevel.RunVar[TrioGlue] = trio.lowlevel.RunVar("aiopg_io_glue")
_log = logging.getLogger("aiopg_io")


def _run_reported(fn: Callable[[], None]) -> None:
    """``fn()``, an ``Exception`` it raises logged and dropped (see the module docstring)."""
    try:
        fn()
    except Exception as exc:
        _log.error("Exception in %r, run by aiopg_io on trio", fn, exc_info=exc)


#: The oldest trio the C park was tested on (the suite's anyio needs it too); older ones get
#: the Python twin.
_PARK_TRIO_MIN = (0, 32)
_IN_PYTHON = "tasks wait on ops in Python: "


def _park_shapes() -> tuple[tuple[Any, ...] | None, str]:
    """``(TaskParker's arguments, what was checked)`` where the C park may run on this trio,
    else ``(None, why not)``. Every fact the park relies on is checked here, once."""
    if _WAKE is None:
        return None, f"{_IN_PYTHON}{_WAKE_WHY}"
    try:
        version = tuple(int(part) for part in trio.__version__.split(".")[:2])
    except ValueError:
        return None, f"{_IN_PYTHON}trio's version {trio.__version__!r} does not parse"
    if version < _PARK_TRIO_MIN:
        oldest = ".".join(map(str, _PARK_TRIO_MIN))
        return None, f"{_IN_PYTHON}trio {trio.__version__} is older than {oldest}, the oldest tested"
    try:
        from trio._core import _run, _traps
    except ImportError as exc:
        return None, f"{_IN_PYTHON}trio's internals moved ({exc})"
    trap_type: Any = getattr(_traps, "WaitTaskRescheduled", None)
    run_context: Any = getattr(_run, "GLOBAL_RUN_CONTEXT", None)
    # trio's run loop takes a task that yields exactly this class as parked ...
    if not isinstance(trap_type, type) or getattr(_run, "WaitTaskRescheduled", None) is not trap_type:
        return None, _IN_PYTHON + "trio's run loop no longer tests for _traps.WaitTaskRescheduled"
    # ... which wait_task_rescheduled yields (through _async_yield) and unwraps the reply of;
    # current_task() is the run context's task; reschedule() is the run context's runner's
    # (the glue calls that runner's own, and asks the run context for it as the owner check).
    waits = trio.lowlevel.wait_task_rescheduled.__code__.co_names
    current = trio.lowlevel.current_task.__code__.co_names
    reschedules = trio.lowlevel.reschedule.__code__.co_names
    if not {"_async_yield", "WaitTaskRescheduled", "unwrap"} <= set(waits):
        return None, _IN_PYTHON + "trio's wait_task_rescheduled is not the shape the C park copies"
    if run_context is None or not {"GLOBAL_RUN_CONTEXT", "task"} <= set(current):
        return None, _IN_PYTHON + "trio's current_task() no longer reads GLOBAL_RUN_CONTEXT.task"
    if not {"GLOBAL_RUN_CONTEXT", "runner", "reschedule"} <= set(reschedules):
        return None, _IN_PYTHON + "trio's reschedule() no longer calls GLOBAL_RUN_CONTEXT.runner's"
    if not isinstance(outcome.Value, type):
        return None, _IN_PYTHON + "outcome.Value is not a class"
    Abort = trio.lowlevel.Abort
    args: tuple[Any, ...] = (run_context, trap_type, outcome.Value, Abort.SUCCEEDED, Abort.FAILED)
    try:  # a trap built as the C park builds it must be trio's own
        own = args[1](_park_shapes)
        probe = _WAKE.TaskParker(*args).trap(_park_shapes)
        same = type(probe) is type(own) and probe.abort_func is _park_shapes and probe == own
    except Exception as exc:  # any shape that differs falls back, and says so
        return None, f"{_IN_PYTHON}trio's WaitTaskRescheduled cannot be built from C ({exc!r})"
    if not same:
        return None, _IN_PYTHON + "a WaitTaskRescheduled built from C is not trio's own"
    return args, f"tasks wait on ops from C (trio {trio.__version__}'s WaitTaskRescheduled yielded directly)"


_PARK_ARGS, _PARK_WHY = _park_shapes()


def park_status() -> str:
    """How a task waits for an op on trio here: parked from C, or in Python and why."""
    return _PARK_WHY


class _Parked:
    __slots__ = ("raise_cancel", "task")

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.raise_cancel: Callable[[], Any] | None = None


#: What the glue's wait makes an op's waiter: the twin's record, or the C park itself.
_PARKED_TYPES: tuple[type, ...] = (_Parked,) if _WAKE is None else (_Parked, _WAKE.TaskPark)


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
        # The park in C where trio's shapes allow it (module docstring), else the twin; with
        # it, the owner check and the wakers go to this run's runner with no Python frame
        # (RunVar.get and trio.lowlevel.reschedule are a frame or two each, per op).
        self.wait: Callable[[Op, Callable[[Op], bool]], Awaitable[None]] = self._wait_twin
        self._owner_probe: tuple[Callable[[], object], object] = (_GLUE.get, self)
        self._reschedule: Callable[..., object] = trio.lowlevel.reschedule
        self._woken: tuple[outcome.Value[None], ...] = ()
        if _PARK_ARGS is not None:
            run_context = _PARK_ARGS[0]
            runner = run_context.runner
            self.wait = _WAKE.TaskParker(*_PARK_ARGS)
            self._owner_probe = (functools.partial(getattr, run_context, "runner"), runner)
            self._reschedule = runner.reschedule
            self._woken = (outcome.Value(None),)
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

    async def _wait_twin(self, op: Op, on_cancel: Callable[[Op], bool]) -> None:
        """``wait`` in Python: what ``_wake.TaskParker`` does where trio's shapes allow."""
        parked = _Parked(trio.lowlevel.current_task())
        op.waiter = parked

        def abort(raise_cancel: Callable[[], Any]) -> trio.lowlevel.Abort:
            if on_cancel(op):
                return trio.lowlevel.Abort.SUCCEEDED
            parked.raise_cancel = raise_cancel
            return trio.lowlevel.Abort.FAILED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def wake(self, op: Op) -> None:
        parked: Any = op.waiter
        if type(parked) not in _PARKED_TYPES:
            return
        op.waiter = None
        task = parked.task
        if task is None:  # a C park left by throw or close: no task waits on it now
            return
        if parked.raise_cancel is None:
            trio.lowlevel.reschedule(task)
        else:
            trio.lowlevel.reschedule(task, outcome.capture(parked.raise_cancel))

    #: Waiters here are parked tasks, not futures: an op staged from C parks through wait.
    future_factory: Callable[[], object] | None = None

    async def rejoin(self, op: Op, on_cancel: Callable[[Op], bool], exc: BaseException) -> None:
        raise exc  # no op waits on a future here (future_factory is None): nothing to rejoin

    def waker(self, twin: Callable[[Op], object]) -> Callable[[Op], object]:
        if _WAKE is None:
            return twin
        waker: Callable[[Op], object] = _WAKE.TaskWaker(_Parked, self._reschedule, twin, *self._woken)
        return waker

    # trio's own, not a coroutine of ours around it: one frame less per call (the cached
    # reads' cursor calls make one each).
    checkpoint = staticmethod(trio.lowlevel.checkpoint)

    @staticmethod
    async def inline_result(result: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return result

    def owner_probe(self) -> tuple[Callable[[], object], object]:
        return self._owner_probe

    async def wait_writable(self, fd: int) -> None:
        await trio.lowlevel.wait_writable(fd)

    async def wait_readable(self, fd: int) -> None:
        await trio.lowlevel.wait_readable(fd)

    def registry(self) -> dict[object, Any]:
        return self._contexts

    def park(self) -> _TrioPark:
        return _TrioPark()

    def shared_park(self) -> None:
        # trio resumes each parked task on its own (wait_task_rescheduled): nothing to share.
        return None

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
