"""Tools to test code that does file I/O through aiopg_io, for this project and its users.

- :class:`FaultInjector` / :func:`inject`: a driver wrapper that makes chosen ops fail (EIO,
  ENOSPC, EAGAIN, any errno), come back short, or wait, by rule (:class:`Fault`); seeded,
  with a log of what it did (PostgreSQL's src/test/modules/test_aio in spirit).
- :class:`PowerLossSimulator` / :func:`simulate`: a driver wrapper that remembers what is not
  durable yet and, on :meth:`~PowerLossSimulator.crash`, leaves the files as a power cut could
  (SQLite's src/test6.c model).
- :class:`CheckpointWorkload`: a power-loss scenario for a buffer pool (writers and
  checkpoints, the power cut after a given number of changes), with :func:`page_version`.
- :func:`sweep`: run a scenario failing its 1st, 2nd, 3rd... I/O until a run completes.
- :func:`default_driver`: make any driver factory the default for files opened in a block.
- A pytest plugin (:mod:`aiopg_io.testing.pytest_plugin`, entry point ``aiopg_io``) with the
  fixtures ``fault_injector``, ``power_loss`` and ``io_sweep``.

docs/testing.md says what each tool models and what it cannot.
"""

from __future__ import annotations

from ..drivers import default_driver as default_driver
from ._checkpoint_workload import CheckpointWorkload as CheckpointWorkload
from ._checkpoint_workload import page_version as page_version
from ._errors import SimulatorBusyError as SimulatorBusyError
from ._errors import SweepLimitError as SweepLimitError
from ._faults import KIND_GROUPS as KIND_GROUPS
from ._faults import Fault as Fault
from ._faults import Injection as Injection
from ._injector import FaultInjector as FaultInjector
from ._injector import FaultyDriver as FaultyDriver
from ._injector import inject as inject
from ._powerloss import PowerLossDriver as PowerLossDriver
from ._powerloss import PowerLossSimulator as PowerLossSimulator
from ._powerloss import simulate as simulate
from ._simulated_disk import CrashReport as CrashReport
from ._simulated_disk import EntryCrash as EntryCrash
from ._simulated_disk import FileCrash as FileCrash
from ._sweep import SweepOutcome as SweepOutcome
from ._sweep import SweepReport as SweepReport
from ._sweep import sweep as sweep

__all__ = [
    "KIND_GROUPS",
    "CheckpointWorkload",
    "CrashReport",
    "EntryCrash",
    "Fault",
    "FaultInjector",
    "FaultyDriver",
    "FileCrash",
    "Injection",
    "PowerLossDriver",
    "PowerLossSimulator",
    "SimulatorBusyError",
    "SweepLimitError",
    "SweepOutcome",
    "SweepReport",
    "default_driver",
    "inject",
    "page_version",
    "simulate",
    "sweep",
]
