"""The pytest plugin's fixtures (imported here by name: the entry point registers them only
when aiopg_io is installed)."""

from __future__ import annotations

import errno
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import aiopg_io
from aiopg_io.testing import Fault, FaultInjector, PowerLossSimulator, sweep
from aiopg_io.testing.pytest_plugin import fault_injector, io_sweep, power_loss

from ._util import fds

__all__ = ["fault_injector", "io_sweep", "power_loss"]  # the fixtures, used by name below

pytestmark = pytest.mark.anyio


async def test_fault_injector_fixture(
    driver: str, tmp_path: Path, fault_injector: Callable[..., FaultInjector]
) -> None:
    inj = fault_injector(Fault(kind="fdatasync", errno=errno.EIO), driver=driver)
    async with aiopg_io.open(tmp_path / "f", "wb", driver=inj) as f:
        with pytest.raises(OSError, match=r"Input/output error \(injected"):
            await f.fdatasync()
    assert len(inj.log) == 1


async def test_power_loss_fixture(
    driver: str, tmp_path: Path, power_loss: Callable[..., PowerLossSimulator]
) -> None:
    before = fds()
    sim = power_loss(driver, safe_append=True)
    async with aiopg_io.open(tmp_path / "f", "wb", driver=sim) as f:
        await f.pwrite(b"x", 0)
    assert sim.safe_append and sim.unsynced() == {str(tmp_path / "f"): 1}
    assert fds() != before  # the simulator's descriptor; the fixture closes it at teardown


def test_io_sweep_fixture(io_sweep: Callable[..., Any]) -> None:
    assert io_sweep is sweep


def test_the_plugin_registers_nothing_but_fixtures() -> None:
    code = (
        "import aiopg_io.testing.pytest_plugin as p, inspect\n"
        "names = [n for n in vars(p) if n.startswith('pytest_')]\n"
        "print(names, sorted(p.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] ['fault_injector', 'io_sweep', 'power_loss']"
