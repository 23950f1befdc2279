"""aiopg_io under pytest-asyncio: files and the plugin's fixtures in ``@pytest.mark.asyncio``
tests on function-, module- and session-scoped loops, and each loop's IOContexts (ring,
threads, eventfds) closed when pytest-asyncio closes the loop, with no warning.

Runs pytest in a subprocess on a generated project, as tests/testing/test_plugin.py does,
so the loops pytest-asyncio makes and closes are its own; the project's conftest writes
the process's fd table and threads at the end of the session (after the session loop closed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from aiopg_io.drivers import DRIVER_NAMES, unavailable_reason

_CONFTEST = '''
import asyncio
import json
import os
import threading

import pytest

import aiopg_io
from aiopg_io._context import live_contexts
from aiopg_io.drivers import DRIVER_NAMES, unavailable_reason

DRIVERS = [n for n in DRIVER_NAMES if unavailable_reason(n) is None]
LEFT_OPEN = []  # files the tests leave open: their loops' ends must close their contexts


def kernel_objects():
    """What a driver holds in the fd table: eventfds and rings (by kind), pipes (by inode:
    pytest's capture dups the pipes it was given)."""
    anon, pipes = {}, set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("anon_inode:"):
            anon[target] = anon.get(target, 0) + 1
        elif target.startswith("pipe:"):
            pipes.add(target)
    return {"anon": anon, "pipes": sorted(pipes)}


BEFORE = {}


def pytest_configure(config):
    BEFORE["kernel"] = kernel_objects()


@pytest.fixture(params=DRIVERS)
def driver(request):
    return request.param


def pytest_unconfigure(config):
    report = {
        "kernel_before": BEFORE["kernel"],
        "kernel_after": kernel_objects(),
        "threads": sorted(t.name for t in threading.enumerate() if t.name.startswith("aiopg_io")),
        "live": [repr(c) for c in live_contexts() if c.completion_fd is not None],
        "left_open": len(LEFT_OPEN),
    }
    for f in LEFT_OPEN:  # aclose() works from any loop; the user's duty, done here
        asyncio.run(f.aclose())
    with open(os.environ["AIOPG_IO_REPORT"], "w") as out:
        json.dump(report, out)
'''

_FUNCTION_LOOPS = """
import errno

import pytest

import aiopg_io
from aiopg_io._context import live_contexts
from aiopg_io.testing import Fault
from conftest import LEFT_OPEN


@pytest.mark.asyncio
async def test_files(tmp_path, driver):
    async with aiopg_io.open(tmp_path / "f", "w+b", driver=driver) as f:
        await f.write(b"hello")
        await f.seek(0)
        assert await f.peek(1) == b"hello"
        assert await f.read1(2) == b"he"
    async with aiopg_io.open(tmp_path / "f", encoding="utf-8", driver=driver) as t:
        assert await t.read() == "hello"


@pytest.mark.asyncio
async def test_fixtures(tmp_path, driver, fault_injector, power_loss, io_sweep):
    sim = power_loss(driver)
    inj = fault_injector(Fault(kind="fdatasync", errno=errno.EIO), driver=sim)
    async with aiopg_io.open(tmp_path / "f", "wb", driver=inj) as f:
        await f.pwrite(b"data", 0)
        with pytest.raises(OSError, match="injected"):
            await f.fdatasync()
    sim.crash(seed=1)

    async def scenario(injector):
        async with aiopg_io.open(tmp_path / "g", "wb", driver=injector) as g:
            await g.pwrite(b"y", 0)

    report = await io_sweep(scenario, driver=driver)
    assert [o.completed for o in report.outcomes] == [False, True]


@pytest.mark.asyncio
async def test_left_open(tmp_path, driver):
    LEFT_OPEN.append(await aiopg_io.open(tmp_path / "left", "wb", driver=driver))


def test_each_function_loop_closed_its_contexts():
    assert [c for c in live_contexts() if c.completion_fd is not None] == []
"""

_MODULE_LOOP = """
import pytest
import pytest_asyncio

import aiopg_io
from aiopg_io._context import live_contexts
from conftest import LEFT_OPEN

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared(tmp_path_factory):
    async with aiopg_io.open(tmp_path_factory.mktemp("m") / "f", "w+b", driver="worker") as f:
        yield f


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def left_open(tmp_path_factory):
    f = await aiopg_io.open(tmp_path_factory.mktemp("m") / "g", "wb", driver="worker")
    LEFT_OPEN.append(f)
    return f


async def test_write(shared, left_open):
    await shared.write(b"across tests")
    await left_open.write(b"x")


async def test_read(shared):
    await shared.seek(0)
    assert await shared.read() == b"across tests"


async def test_the_injector_fixture_sees_a_file_left_open(tmp_path, fault_injector):
    # The module's loop outlives this test's fixtures: the check at teardown fails it.
    LEFT_OPEN.append(await aiopg_io.open(tmp_path / "h", "wb", driver=fault_injector(driver="sync")))


async def test_contexts_of_a_running_module_loop_stay_open():
    assert len([c for c in live_contexts() if c.completion_fd is not None]) == 2
"""

_MODULE_LOOP_ENDED = """
from aiopg_io._context import live_contexts


def test_the_module_loop_closed_its_contexts():
    assert [c for c in live_contexts() if c.completion_fd is not None] == []
"""

_SESSION_LOOP = """
import pytest
import pytest_asyncio

import aiopg_io
from conftest import LEFT_OPEN


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def session_file(tmp_path_factory):
    f = await aiopg_io.open(tmp_path_factory.mktemp("s") / "f", "w+b", driver="worker")
    LEFT_OPEN.append(f)  # closed by nobody: the session loop's end closes its context
    return f


@pytest.mark.asyncio(loop_scope="session")
async def test_session_loop(session_file, driver):
    await session_file.write(driver.encode())
    async with aiopg_io.open(session_file.path, "rb", driver=driver) as f:
        assert await f.read(0) == b""
"""


def test_pytest_asyncio_loops_close_their_contexts(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(_CONFTEST)
    (project / "test_a_function_loops.py").write_text(_FUNCTION_LOOPS)
    (project / "test_b_module_loop.py").write_text(_MODULE_LOOP)
    (project / "test_c_module_loop_ended.py").write_text(_MODULE_LOOP_ENDED)
    (project / "test_d_session_loop.py").write_text(_SESSION_LOOP)
    (project / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    report_path = tmp_path / "report.json"
    # -W error: any warning (a ResourceWarning, pytest-asyncio's own) fails the run.
    command = [sys.executable, "-m", "pytest", "-q", "-rN", "-p", "no:cacheprovider", "-p", "no:anyio"]
    r = subprocess.run(
        [*command, "-W", "error"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "AIOPG_IO_REPORT": str(report_path)},
    )
    drivers = sum(unavailable_reason(n) is None for n in DRIVER_NAMES)
    passed = 3 * drivers + 1 + 4 + 1 + drivers
    assert f"{passed} passed, 1 error in" in r.stdout, r.stdout + r.stderr
    assert "ERROR at teardown of test_the_injector_fixture_sees_a_file_left_open" in r.stdout, r.stdout
    assert "fault injectors with drivers still open" in r.stdout, r.stdout
    assert "Exception ignored" not in r.stderr and "Warning" not in r.stderr, r.stderr
    report = json.loads(report_path.read_text())
    assert report["left_open"] == drivers + 3
    assert report["live"] == []
    assert report["threads"] == []
    assert report["kernel_after"] == report["kernel_before"]
