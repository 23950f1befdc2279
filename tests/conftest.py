"""The test matrix: every async test runs on asyncio, uvloop and trio x every driver here.

anyio's pytest plugin runs a test marked ``anyio`` once per ``anyio_backend`` param. The
``driver`` fixture adds the driver axis; a driver that cannot run on this machine is skipped
with its reason (never silently passed). Tests get the driver both as a value to pass as
``driver=`` and through ``AIOPG_IO_DRIVER``, so components that open files themselves (the
WAL, the buffer pool) use it too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiopg_io.drivers import DRIVER_NAMES, unavailable_reason

BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    pytest.param(("trio", {}), id="trio"),
]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture(params=DRIVER_NAMES)
def driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of a driver that runs here (skipped with the reason for one that does not)."""
    name: str = request.param
    reason = unavailable_reason(name)
    if reason is not None:
        pytest.skip(f"driver {name} cannot run here: {reason}")
    monkeypatch.setenv("AIOPG_IO_DRIVER", name)
    return name


@pytest.fixture
def direct_driver(driver: str) -> str:
    """A driver that also runs O_DIRECT here."""
    reason = unavailable_reason(driver, direct=True)
    if reason is not None:
        pytest.skip(f"driver {driver} cannot run direct I/O here: {reason}")
    return driver


def open_fds() -> list[str]:
    """This process's fd table, as names (``/proc/self/fd`` or ``/dev/fd``)."""
    for d in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(d):
            return sorted(os.listdir(d))
    pytest.skip("no fd table to inspect on this platform")


def fd_targets() -> dict[str, str]:
    out = {}
    for name in open_fds():
        try:
            out[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return out


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A directory on a filesystem that accepts O_DIRECT (pytest's tmp_path, checked)."""
    probe = tmp_path / ".odirect-probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_RDWR | getattr(os, "O_DIRECT", 0))
    except OSError as exc:
        pytest.skip(f"{tmp_path} refuses O_DIRECT: {exc}")
    os.close(fd)
    probe.unlink()
    return tmp_path


@pytest.fixture(autouse=True)
def _no_context_left() -> Iterator[None]:
    """Every test must leave no IOContext (driver, ring, threads, fds) behind."""
    yield
    from aiopg_io._context import live_contexts

    left = live_contexts()
    assert not left, f"IOContexts left open after the test: {left}"


def in_child(child: Callable[[], str]) -> str:
    """Run ``child`` in a forked process and return the report it wrote on a pipe; the child
    never returns into pytest (or into a running event loop)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.write(wfd, child().encode())
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        _, status = os.waitpid(pid, 0)
        report = os.read(rfd, 4096).decode()
    finally:
        os.close(rfd)
    assert os.waitstatus_to_exitcode(status) == 0, report
    return report
