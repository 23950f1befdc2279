"""The exceptions of :mod:`aiopg_io.testing` (all under :class:`aiopg_io.errors.AiopgIOError`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import AiopgIOError

if TYPE_CHECKING:
    from ._sweep import SweepReport

__all__ = ["SimulatorBusyError", "SweepLimitError"]


class SweepLimitError(AiopgIOError, RuntimeError):
    """:func:`~aiopg_io.testing.sweep` reached ``max_n`` and every run still had a fault
    injected; ``report`` holds the outcomes so far."""

    def __init__(self, message: str, report: SweepReport) -> None:
        super().__init__(message)
        self.report = report


class SimulatorBusyError(AiopgIOError, RuntimeError):
    """:meth:`~aiopg_io.testing.PowerLossSimulator.crash` was called while a driver made by
    the simulator is still open (a file or context using it was not closed)."""
