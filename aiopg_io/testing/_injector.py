"""The fault injector: a driver wrapper that rewrites what chosen ops do.

PostgreSQL tests its AIO with injected short reads and EIO (src/test/modules/test_aio);
this is the same idea as a :class:`~aiopg_io.drivers.DriverFactory` any ``aiopg_io.open``
accepts. How it sits between the IOContext and the real driver:

- Every op the context submits gets a number (1-based, in submission order, across every
  driver the injector made) and is matched against the rules when submitted, so the Nth
  op and the seeded coin flips depend only on the order of submissions: a scenario that
  issues its ops in a fixed order sees the same faults on every run and every driver.
- The real driver never sees the caller's op: it gets a *shadow* op over the same fd and
  buffers (trimmed for an injected short transfer). When the shadow completes, its outcome
  is copied to the caller's op, or rewritten by a rule with ``when="after"``. Ops that never
  reach the real driver (``when="before"`` failures) and completions a rule holds back
  (``delay``) are completed by the wrapper itself; it signals them on its own
  :class:`~aiopg_io.drivers._notify.Notifier`, multiplexed with the real driver's fd (see
  :mod:`aiopg_io.drivers._mux`), and a :class:`threading.Timer` raises the flag when a delay is over.
- Facts the rewriting relies on (see :mod:`aiopg_io.drivers.base`): the real drivers
  already continue short transfers and Python retries EINTR (PEP 475), so a caller never
  sees either from a real driver; an injected EAGAIN/EINTR therefore reaches the caller as
  an OSError unless the rule is ``transient``, in which case the wrapper resubmits the op
  as a driver would and counts a retry. A failed write reports the bytes that reached the
  file in ``op.transferred`` (0 for an injected error; ``short`` for a short write).
- A failed fsync/fdatasync with ``when="before"`` is not performed: the model is the
  kernel that dropped the dirty pages and cleared the error (PostgreSQL's "fsyncgate",
  2018: after a failed fsync, Linux may have discarded the data, and a retry succeeds
  without writing it). With ``when="after"`` it was performed and reported as failed.

A linked write + sync (``OpKind.WRITE_SYNC``, ``AsyncFile.pwritev_sync``) is what its
contract says it is (:mod:`aiopg_io.drivers.base`): a write, then a sync once the write is
whole. The wrapper runs it as exactly that, two ops of its own numbered one after the other
(a ``write``, or ``writev`` for several buffers, then an ``fdatasync`` or ``fsync`` on the
same fd), so a rule hits either
half by the half's kind (``"writes"``, ``"syncs"``, ``"fdatasync"``...); a rule naming
``"write_sync"`` itself matches nothing. A failed write half fails the op with its error
and the sync is never issued; a failed sync half fails it with the sync's.

Not thread-safe: one injector serves the ops of one event loop at a time (any number of
its drivers may be open on that loop; they share the counters and the log).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import heapq
import itertools
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ..drivers import DriverFactory, default_driver, resolve
from ..drivers._fallback import with_thread_fallback
from ..drivers._mux import Mux
from ..drivers.base import (
    READ_KINDS,
    SYNC_FSYNC,
    TRANSFER_KINDS,
    WRITE_KINDS,
    Capabilities,
    Driver,
    DriverCounters,
    DriverStatistics,
    Op,
    OpKind,
    OpState,
)
from ._faults import Fault, Injection

__all__ = ["FaultInjector", "FaultyDriver", "inject"]


class FaultInjector:
    """A :class:`~aiopg_io.drivers.DriverFactory` that wraps ``driver`` and applies ``faults``.

    ``driver`` is what the files would use otherwise: a name (``"worker"``), a
    :class:`~aiopg_io.drivers.DriverSpec`, another factory (a
    :class:`~aiopg_io.testing.PowerLossSimulator`, another injector), or None for the
    default (``AIOPG_IO_DRIVER``, else ``auto``, or the override of an enclosing
    :func:`inject`); it is resolved when the injector is built. ``seed`` seeds the
    generator behind :attr:`Fault.probability`.

    Use it as ``aiopg_io.open(path, driver=injector)`` or through :func:`inject`. Each
    injector is its own driver key, so files opened with it on one loop share one
    IOContext and one :class:`FaultyDriver`. :attr:`log` lists every op a fault hit.
    """

    def __init__(self, *faults: Fault, driver: str | DriverFactory | None = None, seed: int = 0) -> None:
        for f in faults:
            if not isinstance(f, Fault):
                raise TypeError(f"FaultInjector takes Fault rules, not {type(f).__name__}")
        self.faults: list[Fault] = list(faults)
        self.inner: DriverFactory = resolve(driver)
        self.seed = seed
        self.log: list[Injection] = []
        self.ops = 0
        self._rng = random.Random(seed)
        self._matched: list[int] = [0] * len(faults)
        self._hits: list[int] = [0] * len(faults)
        self._drivers: list[FaultyDriver] = []

    def __repr__(self) -> str:
        return (
            f"<FaultInjector {self.name} faults={len(self.faults)} ops={self.ops} injected={len(self.log)}>"
        )

    # -- DriverFactory ----------------------------------------------------------------------

    @property
    def key(self) -> object:
        return self

    @property
    def name(self) -> str:
        return f"faulty({self.inner.name})"

    def create(self) -> FaultyDriver:
        d = FaultyDriver(self, with_thread_fallback(self.inner.create()))
        self._drivers.append(d)
        return d

    # -- rules ------------------------------------------------------------------------------

    def add(self, fault: Fault) -> None:
        """Add a rule; it counts matches from the next op on."""
        if not isinstance(fault, Fault):
            raise TypeError(f"FaultInjector takes Fault rules, not {type(fault).__name__}")
        self.faults.append(fault)
        self._matched.append(0)
        self._hits.append(0)

    def reset(self) -> None:
        """Forget the log and the counts, and reseed: the next op is op 1 again."""
        self.log.clear()
        self.ops = 0
        self._rng = random.Random(self.seed)
        self._matched = [0] * len(self.faults)
        self._hits = [0] * len(self.faults)

    @property
    def injected(self) -> bool:
        """Whether any fault hit an op so far."""
        return bool(self.log)

    @property
    def open_drivers(self) -> int:
        """How many drivers this injector made are not closed yet."""
        self._drivers = [d for d in self._drivers if not d.closed]
        return len(self._drivers)

    def _decide(self, op: Op) -> tuple[int, Fault] | None:
        """Number ``op`` and pick the rule that hits it (the first in :attr:`faults` order);
        every matching rule counts the op, hit or not."""
        self.ops += 1
        chosen: tuple[int, Fault] | None = None
        for i, f in enumerate(self.faults):
            if not f.matches(op):
                continue
            self._matched[i] += 1
            if chosen is not None or self._matched[i] < f.nth:
                continue
            if f.times is not None and self._hits[i] >= f.times:
                continue
            if f.probability < 1.0 and self._rng.random() >= f.probability:
                continue
            self._hits[i] += 1
            chosen = (i, f)
        if chosen is not None:
            i, f = chosen
            self.log.append(
                Injection(
                    op=self.ops,
                    kind=op.kind,
                    path=op.path,
                    offset=op.offset if op.kind in TRANSFER_KINDS else 0,
                    nbytes=op.nbytes if op.kind in TRANSFER_KINDS else op.length,
                    fault=i,
                    action=f.action,
                    errno=f.write_errno() if f.short is not None and op.kind in WRITE_KINDS else f.errno,
                    short=f.short,
                    delay=f.delay,
                    when=f.when,
                )
            )
        return chosen


@contextlib.contextmanager
def inject(
    *faults: Fault, driver: str | DriverFactory | None = None, seed: int = 0
) -> Iterator[FaultInjector]:
    """Within the block, files opened without ``driver=`` go through a new
    :class:`FaultInjector` with ``faults`` (yielded, to read its :attr:`~FaultInjector.log`)::

        with inject(Fault(kind="fdatasync", errno=errno.EIO)) as inj:
            async with aiopg_io.open(path, "wb") as f:
                await f.write(b"x")
                with pytest.raises(OSError, match="Input/output error"):
                    await f.fdatasync()
        assert [e.kind.value for e in inj.log] == ["fdatasync"]

    ``driver`` is the driver underneath (default: the one files would use here). The
    override is a context variable: it covers the current task and tasks it starts.
    """
    injector = FaultInjector(*faults, driver=driver, seed=seed)
    with default_driver(injector):
        yield injector


# -- the driver -------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Track:
    """The wrapper's state for one caller op (kept in ``op.driver_data``)."""

    op: Op
    fault: Fault | None
    seq: int
    shadow: Op | None = None
    held: threading.Timer | None = None  # waiting for a delay to pass before it is submitted


@dataclass(eq=False, slots=True)
class _Link:
    """A linked write + sync run as its two halves (kept in the caller's ``op.driver_data``,
    and in each half's ``waiter``)."""

    op: Op
    half: Op | None = None  # the half in flight


def _trim(buffers: Sequence[memoryview], limit: int) -> tuple[memoryview, ...]:
    out: list[memoryview] = []
    for b in buffers:
        if limit <= 0:
            break
        out.append(b[:limit])
        limit -= len(out[-1])
    return tuple(out)


def _injected_error(err: int, op: Op, seq: int) -> OSError:
    message = f"{os.strerror(err)} (injected by aiopg_io.testing into op #{seq})"
    return OSError(err, message, op.path) if op.path else OSError(err, message)


class FaultyDriver(Driver):
    """The driver a :class:`FaultInjector` makes: forwards to ``inner``, applying the rules.

    Always asynchronous (it completes ops of its own on a pollable fd), whatever ``inner``
    is, and never inline (every op passes the rules); ops in flight are capped as the inner
    driver caps them.
    """

    name = "faulty"

    def __init__(self, injector: FaultInjector, inner: Driver) -> None:
        self.injector = injector
        self.inner = inner
        # A driver that is not asynchronous completes its ops inside submit(): reap it then.
        self._inner_fd = inner.fileno() if inner.capabilities.asynchronous else None
        self._mux = Mux(self._inner_fd)
        self._done: deque[Op] = deque()
        self._in_flight: set[Op] = set()
        # A heap by deadline of (deadline, tie-breaker, what to do, the timer thread that wakes us).
        self._timers: list[tuple[float, int, Callable[[], None], threading.Timer]] = []
        self._timer_seq = itertools.count()
        self._counters = DriverCounters()
        self._reaping = False
        self.closed = False

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(self.inner.capabilities, asynchronous=True, inline=False)

    def fileno(self) -> int:
        return self._mux.fileno()

    # -- submit ----------------------------------------------------------------------------

    def submit(self, ops: Sequence[Op]) -> None:
        if self.closed:
            raise RuntimeError(f"driver {self.injector.name} is closed")
        c = self._counters
        c.submit_calls += 1
        c.submitted += len(ops)
        forward: list[_Track] = []
        for op in ops:
            op.set_state(OpState.SUBMITTED)
            self._in_flight.add(op)
            if op.kind is OpKind.WRITE_SYNC:
                op.driver_data = link = _Link(op)
                if op.cancel_requested:
                    op.cancelled()
                    self._finish(op)
                else:
                    kind = OpKind.WRITE if len(op.buffers) == 1 else OpKind.WRITEV
                    half = Op(kind, op.fd, op.offset, op.buffers, path=op.path, keepalive=op)
                    self._start(link, half, forward)
                continue
            self._decide_and_route(op, forward)
        self._forward(forward)

    def _start(self, link: _Link, half: Op, forward: list[_Track]) -> None:
        """Issue one half of a linked write + sync as an op of its own."""
        half.waiter = link
        link.half = half
        half.set_state(OpState.SUBMITTED)
        self._in_flight.add(half)
        self._decide_and_route(half, forward)

    def _half_done(self, half: Op) -> None:
        """A half of a linked write + sync finished: issue the sync after a whole write, or
        finish the caller's op (the write's error skips the sync, as io_uring's link does)."""
        self._in_flight.discard(half)
        link = half.waiter
        assert isinstance(link, _Link)
        op = link.op
        link.half = None
        if half.kind is not OpKind.FSYNC and half.kind is not OpKind.FDATASYNC:
            op.transferred = half.transferred
            if half.error is None and not op.cancel_requested:
                kind = OpKind.FSYNC if op.flags & SYNC_FSYNC else OpKind.FDATASYNC
                forward: list[_Track] = []
                self._start(link, Op(kind, op.fd, path=op.path, keepalive=op), forward)
                self._forward(forward)
                return
            op.fail(half.error if half.error is not None else errno.ECANCELED)
        elif half.error is not None:
            op.fail(half.error)
        else:
            op.complete(0)
        self._finish(op)

    def _decide_and_route(self, op: Op, forward: list[_Track]) -> None:
        """Number ``op``, pick its rule, and forward, hold or fail it as the rule says."""
        chosen = self.injector._decide(op)
        track = _Track(op, chosen[1] if chosen else None, self.injector.ops)
        op.driver_data = track
        if op.cancel_requested:
            op.cancelled()
            self._finish(op)
            return
        f = track.fault
        if f is None or f.when == "after":
            forward.append(track)
        elif f.delay:
            track.held = self._after(f.delay, functools.partial(self._release_held, track))
        else:
            self._before(track, forward)

    def _before(self, track: _Track, forward: list[_Track]) -> None:
        """Apply a ``when="before"`` rule whose delay (if any) is over."""
        f, op = track.fault, track.op
        assert f is not None
        if f.short == 0 and op.kind in WRITE_KINDS:
            # Nothing to write: no driver need see an op without buffers.
            op.fail(_injected_error(f.write_errno(), op, track.seq))
            self._finish(op)
        elif f.short is not None or f.transient:
            if f.transient:
                op.retries += 1
            forward.append(track)
        elif f.errno is not None:
            op.fail(_injected_error(f.errno, op, track.seq))
            self._finish(op)
        else:
            forward.append(track)

    def _release_held(self, track: _Track) -> None:
        op = track.op
        if track.held is None:
            return  # cancelled while held: already completed
        track.held = None
        if op.cancel_requested:
            op.cancelled()
            self._finish(op)
            return
        forward: list[_Track] = []
        self._before(track, forward)
        self._forward(forward)

    def _forward(self, tracks: list[_Track]) -> None:
        if not tracks:
            return
        shadows = []
        for t in tracks:
            op = t.op
            bufs = op.buffers
            f = t.fault
            if f is not None and f.short is not None and f.when == "before" and op.kind in WRITE_KINDS:
                # A short read is cut after the read instead, whatever ``when`` says: reading
                # has no side effect to avoid, and an O_DIRECT read cut to an unaligned
                # length would fail with EINVAL.
                bufs = _trim(bufs, f.short)
            shadow = Op(op.kind, op.fd, op.offset, bufs, op.length, op.mode, op.path, keepalive=op)
            shadow.newpath, shadow.flags = op.newpath, op.flags
            shadow.waiter = t
            t.shadow = shadow
            shadows.append(shadow)
        self.inner.submit(shadows)
        if self._inner_fd is None:
            self._collect_inner()

    # -- completions -----------------------------------------------------------------------

    def _collect_inner(self) -> None:
        resubmit: list[_Track] = []
        for shadow in self.inner.reap():
            t = shadow.waiter
            assert isinstance(t, _Track)
            self._shadow_done(t, shadow, resubmit)
        for t in resubmit:
            t.fault = None  # the retry runs untouched, as a driver's own retry would
        self._forward(resubmit)

    def _shadow_done(self, t: _Track, shadow: Op, resubmit: list[_Track]) -> None:
        op, f = t.op, t.fault
        t.shadow = None
        if f is not None and f.when == "after" and shadow.error is None and f.transient and not self.closed:
            op.retries += 1
            resubmit.append(t)
            return
        if (
            f is not None
            and op.cancel_requested
            and shadow.error is not None
            and shadow.error.errno == errno.ECANCELED
        ):
            f = None  # it never ran: an "after" rule has nothing to rewrite
        if shadow.error is not None and f is None:
            op.transferred = shadow.transferred
            op.fail(shadow.error)
        elif f is None or (f.when == "before" and f.short is None) or f.transient:
            self._copy(op, shadow)
        elif f.short is not None:
            if shadow.error is not None and (f.when == "before" or op.kind in READ_KINDS):
                op.transferred = shadow.transferred
                op.fail(shadow.error)
            elif op.kind in READ_KINDS:
                op.transferred = min(f.short, shadow.transferred)
                op.complete(0)
            else:
                op.transferred = min(f.short, shadow.transferred)
                op.fail(_injected_error(f.write_errno(), op, t.seq))
        elif f.errno is not None:  # after: it ran, the caller is told it failed
            if op.kind is OpKind.OPENAT and shadow.error is None and shadow.result is not None:
                os.close(shadow.result)  # the fd the caller will never hear of
            op.transferred = 0
            op.fail(_injected_error(f.errno, op, t.seq))
        else:
            self._copy(op, shadow)
        if f is not None and f.when == "after" and f.delay and not self.closed:
            self._after(f.delay, lambda: self._finish(op))
        else:
            self._finish(op)

    @staticmethod
    def _copy(op: Op, shadow: Op) -> None:
        op.transferred = shadow.transferred
        if shadow.error is not None:
            op.fail(shadow.error)
        else:
            op.complete(shadow.result or 0)

    def _finish(self, op: Op) -> None:
        if isinstance(op.waiter, _Link):
            self._half_done(op)
            return
        self._done.append(op)
        if not self._reaping:
            # Inside reap() the op is returned by that very call: a flag raised now would
            # be a spurious wake-up after it.
            self._mux.notifier.raise_flag()

    def _after(self, delay: float, action: Callable[[], None]) -> threading.Timer:
        timer = threading.Timer(delay, self._mux.notifier.raise_flag)
        timer.daemon = True
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_seq), action, timer))
        timer.start()
        return timer

    def _run_timers(self, *, everything: bool = False) -> None:
        now = time.monotonic()
        while self._timers and (everything or self._timers[0][0] <= now):
            _, _, action, timer = heapq.heappop(self._timers)
            timer.cancel()  # due already: its wake-up, if still to come, would be spurious
            action()

    def reap(self) -> list[Op]:
        # A loop may still deliver a readiness it saw before the context closed the driver
        # (trio wakes a reaper task, another task closes first): nothing is left to reap.
        if self.closed:
            return []
        return self._reap()

    def _reap(self) -> list[Op]:
        self._mux.notifier.clear()
        self._reaping = True
        try:
            if self._inner_fd is not None and not self.closed:
                self._collect_inner()
            self._run_timers()
        finally:
            self._reaping = False
        c = self._counters
        c.reap_calls += 1
        out: list[Op] = []
        while self._done:
            op = self._done.popleft()
            self._in_flight.discard(op)
            op.set_state(OpState.REAPED)
            op.driver_data = None
            if op.retries:
                c.retries += op.retries
            if op.error is not None and op.cancel_requested and op.error.errno == errno.ECANCELED:
                c.cancelled += 1
            out.append(op)
        c.completed += len(out)
        return out

    def cancel(self, op: Op) -> None:
        op.cancel_requested = True
        t = op.driver_data
        if isinstance(t, _Link):
            if t.half is not None:
                self.cancel(t.half)  # a write cancelled in time never reaches the sync
        elif isinstance(t, _Track) and t.held is not None and not op.done:
            # Held before it ran: it never will. Its heap entry is left to expire as a no-op.
            t.held.cancel()
            t.held = None
            op.cancelled()
            self._finish(op)
        elif isinstance(t, _Track) and t.shadow is not None:
            t.shadow.cancel_requested = True
            self.inner.cancel(t.shadow)

    def close(self) -> list[Op]:
        """Close the real driver (it drains), release held ops and delays at once."""
        if self.closed:
            return []
        self.closed = True
        for op in self._in_flight:
            op.cancel_requested = True
            t = op.driver_data
            if isinstance(t, _Track) and t.shadow is not None:
                t.shadow.cancel_requested = True
        for shadow in self.inner.close():
            t = shadow.waiter
            assert isinstance(t, _Track)
            self._shadow_done(t, shadow, [])
        self._run_timers(everything=True)
        out = self._reap()
        self._mux.close()
        return out

    def statistics(self) -> DriverStatistics:
        return self._counters.snapshot(
            f"faulty({self.injector.inner.name})", len(self._in_flight), injected=len(self.injector.log)
        )
