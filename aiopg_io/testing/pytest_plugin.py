"""pytest fixtures for aiopg_io's testing tools (entry point ``pytest11: aiopg_io``).

pytest loads this module into every run of a project that has aiopg_io installed, so it
defines fixtures and nothing else: no hooks, no autouse fixture, no global state. Loading
it changes nothing until a test asks for one of these:

- ``fault_injector``: a function ``(*faults, driver=None, seed=0) -> FaultInjector``. At
  teardown, every injector it made must have no driver left open (a file not closed).
- ``power_loss``: a function ``(driver=None, *, sector_size=512, atomic_sectors=False,
  safe_append=False) -> PowerLossSimulator``. At teardown the simulators' records are
  discarded and the descriptors they hold closed.
- ``io_sweep``: :func:`aiopg_io.testing.sweep` itself.

Tests that only need the default-driver override write ``with aiopg_io.testing.inject(...)``
and need no fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aiopg_io.drivers import DriverFactory
from aiopg_io.testing import Fault, FaultInjector, PowerLossSimulator, sweep

__all__ = ["fault_injector", "io_sweep", "power_loss"]


@pytest.fixture
def fault_injector() -> Iterator[Callable[..., FaultInjector]]:
    """Build :class:`~aiopg_io.testing.FaultInjector` objects checked at teardown."""
    made: list[FaultInjector] = []

    def make(*faults: Fault, driver: str | DriverFactory | None = None, seed: int = 0) -> FaultInjector:
        injector = FaultInjector(*faults, driver=driver, seed=seed)
        made.append(injector)
        return injector

    yield make
    left = [i for i in made if i.open_drivers]
    assert not left, f"fault injectors with drivers still open after the test (a file not closed?): {left}"


@pytest.fixture
def power_loss() -> Iterator[Callable[..., PowerLossSimulator]]:
    """Build :class:`~aiopg_io.testing.PowerLossSimulator` objects discarded at teardown."""
    made: list[PowerLossSimulator] = []

    def make(driver: str | DriverFactory | None = None, **options: Any) -> PowerLossSimulator:
        sim = PowerLossSimulator(driver, **options)
        made.append(sim)
        return sim

    yield make
    for sim in made:
        sim.discard()


@pytest.fixture
def io_sweep() -> Callable[..., Any]:
    """:func:`aiopg_io.testing.sweep`."""
    return sweep
