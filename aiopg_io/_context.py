"""IOContext: one driver per running event loop, and the policy around it.

What it does, in PostgreSQL's terms:

- **Batch mode** (``pgaio_enter_batchmode`` / ``pgaio_submit_staged``): ops issued during
  one loop tick are staged and handed to the driver in one ``submit`` at the end of the
  tick, so 32 tasks issuing a read each cost one ``io_uring_submit``, not 32.
- **Ops done inline**: before staging an op, a driver whose capabilities say ``inline``
  may complete it at once without blocking (``Driver.try_inline``: io_uring's buffered
  read of pages the cache holds). The task then only yields once, as any I/O call does:
  no submission, no completion fd, no wake-up. PostgreSQL has no counterpart; for Python
  the wake-up is most of the cost of a cached read (docs/benchmarks.md).
- **A cap on ops in flight** (``io_max_concurrency``): past it, callers wait for a slot.
  A full context is back-pressure, never an error.
- **Waiters**: each op has one parked task; a completion fd watched by the loop glue
  triggers :meth:`_on_completions`, which reaps in a batch and wakes the tasks.
- **Ops with no task waiting** (:meth:`IOContext.start`): the caller gives a function to
  call with the op once it is reaped, and moves on. The completion work (the buffer pool
  marking pages valid and waking whoever waits for them) runs where the completion is
  reaped, without a task spawned per op or a task resumed only to do it. Such an op is not
  cancelled by anyone: it ends on its own, or with ECANCELED when the context closes. A
  caller that starts several and goes on without yielding submits them at once with
  :meth:`IOContext.submit_staged` (PostgreSQL's ``pgaio_submit_staged`` at the end of a
  read stream's look-ahead), so the device works while the caller does.
- **Cancellation**: an op still staged is simply dropped (it never reached the driver).
  An op the driver owns is asked to cancel and its task keeps waiting until the op is
  reaped: its buffers and fd stay alive, and a cancelled write may still have happened.
- **Lifetime**: files (and the WAL and buffer pool, through files) ``acquire`` the
  context and ``release`` it when they close; the last release closes the driver, so
  closing every file leaves no thread, ring or fd behind. A context is created on first
  use, per (loop, driver). Calls that hold no file (``aiopg_io.os``) instead keep it open
  until the loop ends (:meth:`IOContext.hold_for_loop`), so a run of them shares one driver.
- **Ownership**: a context serves the loop that made it, in the process that made it.
  Its completions arrive on that loop, its waiters are that loop's futures or tasks, and
  its driver's rings, threads and eventfds are that process's (a fork child shares the
  parent's eventfd and ring: reading one would steal the parent's wake-ups). So every op
  first checks that it runs on the owner, and raises WrongLoopError at once otherwise,
  before anything is staged. A user that goes away elsewhere (a file closed in another
  loop or thread, collected by the GC, or closed in a fork child) calls
  :meth:`IOContext.release_elsewhere`, which hands the release to the owner's loop, or
  closes the context on the spot when that loop no longer runs, or in a fork child only
  forgets it (the parent still owns it).
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Callable
from typing import Any

from ._direct import Alignment
from ._glue import Glue, current_glue
from ._handoff import HandOff
from .drivers import DriverFactory, resolve
from .drivers._fallback import with_thread_fallback
from .drivers._fork import generation as fork_generation
from .drivers.base import DriverStatistics, Op, OpKind, OpState
from .errors import DriverUnavailableError, OpsStillHeldError, WrongLoopError

__all__ = ["IOContext", "get_context", "live_contexts"]

_live: weakref.WeakSet[IOContext] = weakref.WeakSet()


class _OnDone:
    """An op's waiter when no task waits for it (:meth:`IOContext.start`): what to call."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Op], None]) -> None:
        self.fn = fn


def live_contexts() -> list[IOContext]:
    """The contexts not closed yet, in any loop of this process (for leak checks)."""
    return [c for c in _live if not c.closed]


class IOContext:
    def __init__(self, factory: DriverFactory, glue: Glue) -> None:
        self.factory = factory
        self.glue = glue
        # A factory of a user's own may make a driver that lacks kinds (DriverSpec and the
        # testing wrappers already add the threads): with_thread_fallback is a no-op otherwise.
        self.driver = with_thread_fallback(factory.create())
        caps = self.driver.capabilities
        self.max_in_flight = caps.max_in_flight
        self._asynchronous = caps.asynchronous
        self._try_inline = self.driver.try_inline if caps.inline else None
        self._staged: list[Op] = []
        self._flush_pending = False
        self._in_flight = 0  # staged + owned by the driver
        self._slot_waiters = HandOff()  # callers waiting for an op slot
        # What the driver may call itself per reaped op (reap_and_wake): the glue resumes
        # parked tasks; the rest (a started op's callback, a cancelled wait) is _wake's.
        self._waker = glue.waker(self._wake)
        self._users = 0
        self._held = False  # see hold_for_loop
        self._fork_generation = fork_generation()
        self._pid = os.getpid()
        self.closed = False
        self.completion_fd = self.driver.fileno()
        self._watching = False
        if self.completion_fd is not None:
            try:
                glue.watch(self.completion_fd, self._on_completions, self.close_now)
                self._watching = True
            except NotImplementedError:
                # A loop that cannot watch an fd (asyncio's Proactor loop): the driver calls
                # back from its threads instead, and the loop is woken thread-safely.
                if not self.driver.notify_with(self._completions_from_elsewhere):
                    self.driver.close()
                    raise DriverUnavailableError(
                        f"driver {factory.name!r} signals completions on an fd, and this event loop "
                        "cannot watch one (it has no add_reader, like asyncio's Proactor loop): use "
                        "driver='worker', or a selector event loop"
                    ) from None
        self._bind_ring_runs()
        _live.add(self)

    def _bind_ring_runs(self) -> None:
        """Lend the driver's ring path (``Driver.ring_runs``) what it needs to do :meth:`run`'s
        work for a file's transfer in C (``_uring.c``, RunPath): this context, the end-of-tick
        flush, the loop's futures (or, where its waiters are no futures, trio, the glue's
        ``wait`` to park on), the owner probe and how to make an :class:`Op` without its
        ``__init__``. Not where the loop cannot watch the driver's fd (its completions then
        arrive by a thread hop)."""
        runs = self.driver.ring_runs
        if runs is None or not self._watching:
            return
        names: tuple[str, ...] = Op.__slots__
        proto = Op(OpKind.READ, -1)
        fields = ("kind", "fd", "offset", "buffers", "path", "keepalive", "direct", "driver_data", "waiter")
        get, owner = self.glue.owner_probe()
        runs.bind(
            self, self.glue.call_soon, self._flush, self.glue.future_factory, get, owner, Op,
            tuple(getattr(Op, n) for n in names), tuple(getattr(proto, n) for n in names),
            tuple(names.index(n) for n in (*fields, "_remaining")),
            OpKind.READ, OpKind.WRITE, self.max_in_flight, self.glue.wait, self.cancel,
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"<IOContext driver={self.factory.name} users={self._users} "
            f"in_flight={self._in_flight} closed={self.closed}>"
        )

    # -- users ------------------------------------------------------------------------------

    def acquire(self) -> None:
        self._users += 1

    def hold_for_loop(self) -> None:
        """Keep this context open until its loop ends, for calls that hold no file
        (``aiopg_io.os``): without it each such call would make and close a driver (a
        ring, threads). The hold is one more user, dropped by closing the context when the
        loop ends (the glue's ``at_loop_end``), so nothing outlives the loop. A loop that
        has ended already (a call from its last clean-up) gets no hold: the caller's own
        acquire/release then closes the context as usual."""
        if self._held or self.closed:
            return
        if self.glue.at_loop_end(self.close_now):
            self._held = True
            self._users += 1

    async def release(self) -> None:
        """Drop one user; the last one closes the driver (after its ops drained)."""
        self._users -= 1
        if self._users > 0 or self.closed:
            return
        while self._in_flight:
            # Only ops whose tasks were cancelled can remain; they finish on their own.
            await self._slot_waiters.wait()
        if self._users == 0 and not self.closed:
            self.close_now()

    def release_elsewhere(self) -> None:
        """Drop one user from outside the owner's tasks: a file closed in another loop or
        thread, collected by the GC, or closed in a fork child (see the module docstring)."""
        if self.forked():
            self._users -= 1  # the parent's driver: the child never touches it
            return
        if sys.is_finalizing():
            return  # at interpreter exit threads are frozen: joining one would hang
        if not self.glue.call_soon_threadsafe(self.release_now):
            # The loop no longer runs, so nothing else can touch this context: its tasks
            # will never resume, and every later use raises WrongLoopError. Close it now,
            # draining what its driver still owns, whoever still holds it.
            self._users -= 1
            self.close_now()

    def release_now(self) -> None:
        """Drop one user at once, on the owner's loop, for a user that cannot await
        :meth:`release` (a file that ``detach()`` turned into a plain ``io.FileIO``; and
        :meth:`release_elsewhere`'s hand-off): the last one closes the driver unless ops
        are still in flight."""
        self._users -= 1
        if self._users <= 0 and not self._in_flight:
            self.close_now()

    def serving(self) -> bool:
        """True while this context's loop still runs it (ops in flight will complete)."""
        return not self.closed and not self.forked() and self.glue.running()

    def forked(self) -> bool:
        """True in a child of the process that made this context."""
        return self._fork_generation != fork_generation()

    def owned_here(self) -> bool:
        """True when called from a task of the loop (and process) this context serves."""
        return self._fork_generation == fork_generation() and self.glue.is_current()

    def foreign_error(self, what: str | None) -> WrongLoopError:
        """The error for using this context outside its owner (``what`` names the file)."""
        subject = f"{what!r}" if what is not None else "this file"
        if self.forked():
            return WrongLoopError(
                f"{subject} was opened in the parent process (pid {self._pid}) before fork(); "
                f"its I/O belongs to that process: open the file anew in the child (pid {os.getpid()})"
            )
        return WrongLoopError(
            f"{subject} was opened in another event loop (an earlier asyncio.run(), another thread's "
            "loop, or another library's loop); a file's I/O is bound to the loop that opened it: "
            "open it in the loop that uses it (aclose() works from any loop)"
        )

    def close_now(self) -> None:
        """Close the driver at once, draining what it still owns (blocking)."""
        if self.closed:
            return
        self.closed = True
        self.glue.registry().pop(self.factory.key, None)
        if self._watching:
            self.glue.unwatch(self.completion_fd)  # type: ignore[arg-type]
        staged, self._staged = self._staged, []
        for op in staged:
            op.cancelled()
            op.set_state(OpState.REAPED)
        held: OpsStillHeldError | None = None
        try:
            drained = self.driver.close()
        except OpsStillHeldError as exc:
            # The kernel keeps ops no cancel stops (io_uring before Linux 5.5): the driver
            # keeps them and their buffers; the ops that did end still get their waiters.
            held, drained = exc, [op for op in exc.drained if isinstance(op, Op)]
        try:
            self._finish_all(staged + drained)
        finally:
            self._slot_waiters.wake_all()
        if held is not None:
            raise held

    # -- ops --------------------------------------------------------------------------------

    def fast_reader(self, fd: int, max_read: int) -> Any:
        """The driver's fast path for one buffered file's reads (``Driver.fast_reads``), bound
        to this context's loop and process; None where the driver has none. Its calls return
        an awaitable of a read the page cache completed, or None: then the caller runs an op
        here, which also raises what a call from elsewhere or on a closed context raises."""
        fast = self.driver.fast_reads
        if fast is None:
            return None
        get, owner = self.glue.owner_probe()
        return fast.reader(fd, get, owner, self.glue.inline_result, max_read)

    def ring_runner(
        self, fd: int, fd_direct: bool, alignment: Alignment | None, readable: bool, writable: bool, path: str
    ) -> Any:
        """The driver's ring path for one file's transfers (``Driver.ring_runs``), bound to
        this context's loop and process; None where the driver has none or it is not bound
        here. Its ``preadinto(file, buf, offset)`` / ``pwrite(file, data, offset)``
        return an awaitable that does :meth:`run`'s work in C, or None: then the caller runs
        the op here, which also raises what a call from elsewhere or on a closed context
        raises. The file gives ``_preadinto``/``_pwrite`` (the twins) and ``_ring_thrown``."""
        runs = self.driver.ring_runs
        if runs is None or not runs.bound:
            return None
        offset, memory = (alignment.offset, alignment.memory) if alignment is not None else (0, 0)
        return runs.runner(fd, fd_direct, offset, memory, readable, writable, path)

    async def run(self, op: Op) -> int:
        """Perform ``op``; return its result or raise its error. See the module docstring.
        Its C twin for a file's transfer is the driver's ring path (:meth:`ring_runner`)."""
        if self._admit(op):
            # Done without parking (a read the page cache held): no submission, no wake-up,
            # but still a schedule point, as every I/O call is, so a task reading cached
            # pages in a loop neither starves the others nor misses its cancellation.
            await self.glue.checkpoint()
        else:
            while self._in_flight >= self.max_in_flight:
                await self._slot_waiters.wait()
            self._stage(op)
            await self.glue.wait(op, self.cancel)
        if op.error is not None:
            raise op.error
        assert op.result is not None
        return op.result

    async def start(self, op: Op, on_done: Callable[[Op], None]) -> None:
        """Perform ``op`` with no task waiting for it: ``on_done(op)`` is called on this
        loop where the op is reaped (at once when it completed inline), with ``op.result``
        or ``op.error`` set; it must not raise. Waits only for a slot under the cap on ops in
        flight; cancelled while waiting for one, the op was never staged."""
        if self._admit(op):
            on_done(op)
            return
        while self._in_flight >= self.max_in_flight:
            await self._slot_waiters.wait()
        op.waiter = _OnDone(on_done)
        self._stage(op)

    def follow(self, op: Op, on_reaped: Callable[[Op], None]) -> bool:
        """The call waiting for ``op`` ended before it was reaped (an exception thrown in
        that was no cancellation, the call closed or collected): True when the op is still
        staged or the driver's, and ``on_reaped(op)`` then runs where it is reaped (its
        waiter from now on, as a started op's); False when it never was (or is reaped)."""
        state = op.state
        if state is OpState.REAPED or (state is OpState.IDLE and not any(o is op for o in self._staged)):
            return False
        op.waiter = _OnDone(on_reaped)
        return True

    def _admit(self, op: Op) -> bool:
        """What :meth:`run` and :meth:`start` do first: the owner's checks, then True when
        the op was done inline (a read the page cache held)."""
        if self._fork_generation != fork_generation() or not self.glue.is_current():
            raise self.foreign_error(op.path)
        if self.closed:
            raise RuntimeError("the IOContext is closed (its last file was closed)")
        try_inline = self._try_inline
        return try_inline is not None and bool(try_inline(op))

    def _stage(self, op: Op) -> None:
        """Stage ``op`` (it has its slot) for the end-of-tick flush: one submit per tick.
        The C twin is RingWait's staging (``_uring.c``)."""
        self._in_flight += 1
        self._staged.append(op)
        if not self._flush_pending:
            self._flush_pending = True
            self.glue.call_soon(self._flush)

    def submit_staged(self) -> None:
        """Hand the ops staged so far to the driver now, not at the end of the tick
        (``pgaio_submit_staged``): for a caller that starts several ops and then goes on
        working without yielding, which would otherwise leave them unsubmitted meanwhile.
        The end-of-tick flush then finds only what was staged after."""
        if self._staged:
            self._flush()

    def _flush(self) -> None:
        self._flush_pending = False
        ops, self._staged = self._staged, []
        if not ops or self.closed:
            return
        try:
            self.driver.submit(ops)
        except Exception as exc:  # the driver broke: fail the batch, lose no waiter
            failed = [op for op in ops if not op.done]
            for op in failed:
                op.fail(OSError(f"driver {self.factory.name} failed to submit: {exc!r}"))
                op.set_state(OpState.REAPED)
            self._finish_all(failed)
            return
        if not self._asynchronous:
            self._on_completions()

    def _completions_from_elsewhere(self) -> None:
        self.glue.call_soon_threadsafe(self._on_signalled)

    def _on_signalled(self) -> None:
        if not self.closed:  # a signal still on its way when the context closed
            self._on_completions()

    def _on_completions(self) -> None:
        if self._fork_generation != fork_generation():
            # A child that goes on running the parent's loop: the completion fd is the
            # parent's (reading it would eat the parent's wake-up). Stop watching it here.
            if self._watching:
                self.glue.unwatch(self.completion_fd)  # type: ignore[arg-type]
                self._watching = False
            return
        # A waker that raises (a started op's callback breaking its contract, an exception
        # from a signal handler) loses no op: the driver keeps what it reaped until then for
        # the next reap, and makes that reap come, before the error propagates here.
        ops, woken = self.driver.reap_and_wake(self._waker)
        try:
            if woken:
                # Ops the driver reaped and handed to the glue's waker itself: their slots back.
                self._in_flight -= woken
                slots = self._slot_waiters
                while woken and slots.wake_one():
                    woken -= 1
        finally:  # whatever raised meanwhile (a signal handler's exception), ops get their waiters
            self._finish_all(ops)

    def _finish_all(self, ops: list[Op]) -> None:
        """:meth:`_finish` every op; one whose waiter raises does not keep the others from
        theirs: the first error propagates (to the loop, which reports it) after all."""
        error: BaseException | None = None
        for op in ops:
            try:
                self._finish(op)
            except BaseException as exc:
                if error is None:
                    error = exc
        if error is not None:
            raise error

    def _finish(self, op: Op) -> None:
        self._in_flight -= 1
        try:
            self._wake(op)
        finally:
            self._slot_waiters.wake_one()

    def _wake(self, op: Op) -> None:
        """Whoever waits for ``op``: a started op's callback (:meth:`start`) or a parked task."""
        waiter = op.waiter
        if type(waiter) is _OnDone:
            waiter.fn(op)
        else:
            self.glue.wake(op)

    def cancel(self, op: Op) -> bool:
        """Ask for ``op`` to be cancelled. True when it was dropped before reaching the
        driver (the caller may raise at once); False when the caller must keep waiting."""
        if op.state is OpState.IDLE:
            try:
                self._staged.remove(op)
            except ValueError:
                pass
            else:
                op.cancelled()
                op.set_state(OpState.REAPED)
                self._in_flight -= 1
                self._slot_waiters.wake_one()
                return True
        if op.state is OpState.REAPED:
            return False
        op.cancel_requested = True
        self.driver.cancel(op)
        return False

    def statistics(self) -> DriverStatistics:
        return self.driver.statistics()


def get_context(driver: str | DriverFactory | None = None, *, direct: bool = False) -> IOContext:
    """The context of the running loop for ``driver`` (see :func:`aiopg_io.drivers.resolve`),
    created on first use. The caller must :meth:`~IOContext.acquire` it."""
    factory = resolve(driver, direct=direct)
    glue = current_glue()
    contexts = glue.registry()
    ctx = contexts.get(factory.key)
    if ctx is None or ctx.closed or ctx.forked():
        ctx = contexts[factory.key] = IOContext(factory, glue)
    return ctx
