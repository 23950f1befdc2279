"""The power-loss simulator: a driver wrapper that shows every op to a simulated disk
(:class:`~aiopg_io.testing._simulated_disk.SimulatedDisk`, the model: what is durable, what
a crash does) before it goes to the real driver and once it completed.

:class:`PowerLossSimulator` is the :class:`~aiopg_io.drivers.DriverFactory` users pass as
``driver=`` (or install with :func:`simulate`); each IOContext gets a
:class:`PowerLossDriver` from it. The wrapper changes no op: it forwards every one to the
real driver (with the thread fallback for kinds that driver lacks,
:mod:`aiopg_io.drivers._fallback`, so directory ops are seen on every driver), and reports
none inline, so every op passes through :meth:`PowerLossDriver.submit`. It shows each op to
the model with the model module's two calls, :func:`~._simulated_disk.before_op` and
:func:`~._simulated_disk.after_op`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
from collections.abc import Iterator, Sequence

from ..drivers import DriverFactory, default_driver, resolve
from ..drivers._fallback import with_thread_fallback
from ..drivers._mux import Mux
from ..drivers.base import Capabilities, Driver, DriverStatistics, Op, OpState
from ._errors import SimulatorBusyError
from ._simulated_disk import CrashReport, Note, Policy, SimulatedDisk, after_op, before_op

__all__ = ["PowerLossDriver", "PowerLossSimulator", "simulate"]


class PowerLossSimulator(SimulatedDisk):
    """A :class:`~aiopg_io.drivers.DriverFactory` that wraps ``driver`` (a name, a spec,
    another factory, or None for the default) and records what is not durable; see
    :mod:`aiopg_io.testing._simulated_disk` for the model and its limits.

    Typical use::

        sim = PowerLossSimulator()
        async with aiopg_io.open(path, "wb", driver=sim, opener=sim.opener) as f:
            await f.write(b"durable")
            await f.fdatasync()
            await f.write(b" and not")
        sim.fsync_directory(os.path.dirname(path))
        report = sim.crash(seed=7)          # every file using sim must be closed by now
        data = open(path, "rb").read()      # starts with b"durable"; the rest may be anything

    After :meth:`crash` (or :meth:`discard`) the simulator holds nothing and can be used
    again. Not thread-safe: use it from one event loop at a time.
    """

    def __init__(
        self,
        driver: str | DriverFactory | None = None,
        *,
        sector_size: int = 512,
        atomic_sectors: bool = False,
        safe_append: bool = False,
    ) -> None:
        super().__init__(sector_size=sector_size, atomic_sectors=atomic_sectors, safe_append=safe_append)
        self.inner: DriverFactory = resolve(driver)
        self._drivers: list[PowerLossDriver] = []

    def __repr__(self) -> str:
        return f"<PowerLossSimulator {self.name} files={len(self._files)} entries={len(self._entries)}>"

    # -- DriverFactory ----------------------------------------------------------------------

    @property
    def key(self) -> object:
        return self

    @property
    def name(self) -> str:
        return f"powerloss({self.inner.name})"

    def create(self) -> PowerLossDriver:
        d = PowerLossDriver(self, with_thread_fallback(self.inner.create()))
        self._drivers.append(d)
        return d

    @property
    def open_drivers(self) -> int:
        """How many drivers this simulator made are not closed yet."""
        self._drivers = [d for d in self._drivers if not d.closed]
        return len(self._drivers)

    def crash(self, seed: int = 0, *, policy: Policy = "random") -> CrashReport:
        """Leave every file written through the simulator, and every directory entry it saw
        made, in a state a power cut at this instant could leave; then forget them.

        ``policy``: ``"random"`` (seeded, see :mod:`aiopg_io.testing._simulated_disk`),
        ``"keep"`` (every unsynced change survived), ``"drop"`` (none did: the durable state
        exactly), ``"garble"`` (every unsynced sector is garbage; not with
        ``atomic_sectors``). Raises :class:`SimulatorBusyError` while a driver this
        simulator made is still open."""
        if self.open_drivers:
            raise SimulatorBusyError(
                f"{self.open_drivers} driver(s) of {self!r} still open: close every file (and WAL, buffer "
                "pool) using the simulator before crash(); a power cut leaves no process to close them"
            )
        return super().crash(seed, policy=policy)


@contextlib.contextmanager
def simulate(
    driver: str | DriverFactory | None = None,
    *,
    sector_size: int = 512,
    atomic_sectors: bool = False,
    safe_append: bool = False,
) -> Iterator[PowerLossSimulator]:
    """Within the block, files opened without ``driver=`` go through a new
    :class:`PowerLossSimulator` (yielded). On leaving the block without a :meth:`crash`,
    its records are discarded."""
    sim = PowerLossSimulator(
        driver, sector_size=sector_size, atomic_sectors=atomic_sectors, safe_append=safe_append
    )
    try:
        with default_driver(sim):
            yield sim
    finally:
        sim.discard()


class PowerLossDriver(Driver):
    """The driver a :class:`PowerLossSimulator` makes: forwards every op to ``inner``
    unchanged, showing it to the simulator before it goes (a write's old sectors are kept,
    a rename's replaced file read) and once it completed (a sync, a create, a rename...).

    An op whose old content cannot be kept (its fd cannot be reopened) is failed with the
    reason instead of being forwarded, so the model never silently misses a write; such
    ops are signalled on the wrapper's own flag, multiplexed with the inner fd
    (:mod:`aiopg_io.drivers._mux`).
    """

    name = "powerloss"

    def __init__(self, sim: PowerLossSimulator, inner: Driver) -> None:
        self.sim = sim
        self.inner = inner
        self.closed = False
        self._notes: dict[Op, Note] = {}
        self._refused: list[Op] = []
        self._mux = Mux(inner.fileno())

    @property
    def capabilities(self) -> Capabilities:
        # Every op goes through submit(), where it is recorded: no inline completions.
        return dataclasses.replace(self.inner.capabilities, inline=False)

    def submit(self, ops: Sequence[Op]) -> None:
        if self.closed:
            raise RuntimeError(f"driver {self.sim.name} is closed")
        forward = []
        for op in ops:
            try:
                self._notes[op] = before_op(self.sim, op)
            except Exception as exc:  # submit() never raises for one op: the op fails instead
                op.set_state(OpState.SUBMITTED)
                op.fail(
                    exc if isinstance(exc, OSError) else OSError(errno.EIO, f"power-loss simulator: {exc!r}")
                )
                self._refused.append(op)
                self._mux.notifier.raise_flag()
            else:
                forward.append(op)
        self.inner.submit(forward)

    def fileno(self) -> int:
        return self._mux.fileno()

    def reap(self) -> list[Op]:
        # As FaultyDriver.reap: a readiness delivered after close finds nothing.
        if self.closed:
            return []
        return self._reap()

    def _reap(self) -> list[Op]:
        self._mux.notifier.clear()
        out = self.inner.reap() if not self.closed else []
        for op in out:
            after_op(self.sim, op, self._notes.pop(op, None))
        refused, self._refused = self._refused, []
        for op in refused:
            op.set_state(OpState.REAPED)
        return out + refused

    def cancel(self, op: Op) -> None:
        self.inner.cancel(op)

    def close(self) -> list[Op]:
        if self.closed:
            return []
        out = self.inner.close()
        for op in out:
            after_op(self.sim, op, self._notes.pop(op, None))
        self.closed = True
        out += self._reap()
        self._mux.close()
        return out

    def statistics(self) -> DriverStatistics:
        stats = self.inner.statistics()
        return dataclasses.replace(stats, driver=f"powerloss({stats.driver})")
