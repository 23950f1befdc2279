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
from aiopg_io.drivers import DRIVER_NAMES, unavailable_reason
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


_USER_TESTS = """
import errno

import pytest

import aiopg_io
from aiopg_io.drivers import DRIVER_NAMES, unavailable_reason
from aiopg_io.testing import Fault

pytestmark = pytest.mark.anyio
LEFT_OPEN = []


@pytest.fixture(params=["asyncio", ("asyncio", {"use_uvloop": True}), "trio"])
def anyio_backend(request):
    return request.param


@pytest.fixture(params=[n for n in DRIVER_NAMES if unavailable_reason(n) is None])
def driver(request):
    return request.param


async def test_fixtures(tmp_path, driver, fault_injector, power_loss, io_sweep):
    sim = power_loss(driver)
    inj = fault_injector(Fault(kind="fdatasync", errno=errno.EIO), driver=sim)
    async with aiopg_io.open(tmp_path / "f", "wb", driver=inj) as f:
        await f.pwrite(b"data", 0)
        with pytest.raises(OSError, match="injected"):
            await f.fdatasync()
    assert [e.kind.value for e in inj.log] == ["fdatasync"]
    sim.crash(seed=1)

    async def scenario(injector):
        async with aiopg_io.open(tmp_path / "g", "wb", driver=injector) as g:
            await g.pwrite(b"y", 0)

    report = await io_sweep(scenario, driver=driver)
    assert [o.completed for o in report.outcomes] == [False, True]


async def test_a_file_left_open(tmp_path, fault_injector):
    LEFT_OPEN.append(await aiopg_io.open(tmp_path / "h", "wb", driver=fault_injector(driver="sync")))
"""


def test_the_entry_point_gives_users_the_fixtures(tmp_path: Path) -> None:
    """A user's project, with aiopg_io installed and no conftest: pytest finds the fixtures
    through the ``pytest11`` entry point, on every loop x driver. A test that leaves a file
    open passes: anyio's runner ends its loop before the fixture's teardown, and the end of
    a loop (``trio.run`` returning, asyncio's ``shutdown_asyncgens``) closes the drivers it
    left open. The injector fixture's check fails a test when the loop outlives it
    (tests/testing/test_pytest_asyncio.py)."""
    (tmp_path / "test_user.py").write_text(_USER_TESTS)
    # -rN: no short summary, whose lines pytest truncates to the terminal's width except
    # when CI is set; what is counted below is then the same everywhere.
    r = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-rN"),
            *("-p", "no:cacheprovider", "-W", "ignore::ResourceWarning"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    ran = 3 * sum(unavailable_reason(n) is None for n in DRIVER_NAMES) + 3
    assert f"{ran} passed in" in r.stdout, r.stdout + r.stderr
    assert "fault injectors with drivers still open" not in r.stdout, r.stdout
    assert "Exception ignored" not in r.stderr, r.stderr
