"""A power cut at a chosen step: the simulator the crash tests cut with (and the
``power_cuts`` fixture, tests/wal/conftest.py, that shows it the ops)."""

from __future__ import annotations

import os
import stat

from aiopg_io.drivers import Op, OpKind
from aiopg_io.testing import PowerLossSimulator, _simulated_disk


class Cut(Exception):
    """The power went out here."""


class CuttingSimulator(PowerLossSimulator):
    """A simulator that cuts the power (raises :class:`Cut`) at the ``cut_at``-th step of
    what is armed: a sync of the control file, a rename, an unlink, a directory fsync. Each
    step is cut *before* it takes effect: the op is failed with the cut as its error (the
    wrapper fails an op whose recording raised), so the step never happened."""

    def __init__(self, driver: str, cut_at: int | None) -> None:
        super().__init__(driver)
        self.cut_at = cut_at
        self.armed = False
        self.steps: list[str] = []

    def _step(self, what: str) -> None:
        if self.armed:
            self.steps.append(what)
            if len(self.steps) == self.cut_at:
                self.armed = False
                raise Cut(what)

    def see(self, op: Op) -> None:
        """Count ``op`` if it is a step (raising :class:`Cut` at the chosen one)."""
        kind = op.kind
        if kind in (OpKind.FSYNC, OpKind.FDATASYNC) and op.path and op.path.endswith("wal.control"):
            self._step("sync wal.control")
        elif kind is OpKind.RENAMEAT:
            self._step(f"rename {os.path.basename(op.path or '')} {os.path.basename(op.newpath or '')}")
        elif kind is OpKind.UNLINKAT:
            self._step(f"unlink {os.path.basename(op.path or '')}")
        elif kind is OpKind.FSYNC and stat.S_ISDIR(os.fstat(op.fd).st_mode):
            self._step("fsync directory")


def see_then_record(disk: _simulated_disk.SimulatedDisk, op: Op) -> _simulated_disk.Note:
    """The model's ``before_op``, with a :class:`CuttingSimulator` shown ``op`` first: a cut
    is an exception from the model, which the simulator's driver turns into the op's error."""
    if isinstance(disk, CuttingSimulator):
        disk.see(op)
    return _simulated_disk.before_op(disk, op)
