"""The thread fallback (aiopg_io/drivers/_fallback.py): the op kinds a driver lacks run on
threads, the others go to the driver."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

import aiopg_io
from aiopg_io import _paths
from aiopg_io.drivers import DriverSpec, Op, OpKind
from aiopg_io.drivers._fallback import ThreadFallback
from aiopg_io.drivers.base import AT_FDCWD, FILE_KINDS, Capabilities
from aiopg_io.drivers.sync import SyncDriver
from tests.conftest import open_fds

from .._driving import Factory

pytestmark = pytest.mark.anyio


class _NoPathOps(SyncDriver):
    """A driver that runs only the file kinds, and fails loudly if handed another."""

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(asynchronous=False, kinds=FILE_KINDS)

    def submit(self, ops: Sequence[Op]) -> None:
        for op in ops:
            assert op.kind in FILE_KINDS, f"{op.kind} reached a driver that does not run it"
        super().submit(ops)


async def test_a_driver_whose_capabilities_deny_path_ops_gets_them_run_in_threads(
    tmp_path: Path, anyio_backend: object
) -> None:
    factory = Factory(_NoPathOps, "no-path-ops")
    before = open_fds()
    async with aiopg_io.open(tmp_path / "keep", "wb", driver=factory) as f:
        assert isinstance(f._ctx.driver, ThreadFallback)
        await f.write(b"through the driver")
        await _paths.create(tmp_path / "a", factory)
        await _paths.rename(tmp_path / "a", tmp_path / "b", factory)
        await _paths.fsync_directory(tmp_path, factory)
        with pytest.raises(FileNotFoundError):
            await _paths.unlink(tmp_path / "a", factory)
        await _paths.unlink(tmp_path / "b", factory)
        stats = f._ctx.driver.statistics()
    assert dict(stats.extra)["fallback_ops"] == 7
    assert (tmp_path / "keep").read_bytes() == b"through the driver"
    assert sorted(os.listdir(tmp_path)) == ["keep"]
    assert open_fds() == before


def test_io_uring_without_an_opcode_runs_that_kind_in_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiopg_io.drivers import io_uring, unavailable_reason

    reason = unavailable_reason("io_uring")
    if reason is not None:
        pytest.skip(f"driver io_uring cannot run here: {reason}")
    ops = dict(io_uring._opcodes())
    ops["IORING_OP_RENAMEAT"] = False  # a kernel before 5.11
    monkeypatch.setattr(io_uring, "_PROBED", [ops])
    d = DriverSpec("io_uring").create()
    try:
        assert isinstance(d, ThreadFallback)
        assert OpKind.RENAMEAT not in d.inner.capabilities.kinds
        assert OpKind.UNLINKAT in d.inner.capabilities.kinds
        (tmp_path / "a").write_bytes(b"1")
        op = Op(OpKind.RENAMEAT, AT_FDCWD, path=str(tmp_path / "a"), newpath=str(tmp_path / "b"))
        d.submit([op])
        while not op.done:
            d.reap()
        assert op.error is None and (tmp_path / "b").read_bytes() == b"1"
        assert dict(d.statistics().extra)["fallback_ops"] == 1
    finally:
        d.close()


def test_io_uring_that_cannot_read_statx_s_struct_runs_statx_in_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ring's STATX needs the binding's ``struct statx`` (its getters lose nanoseconds):
    found and checked here; where the object is not laid out as expected, threads run STATX
    and give the same record."""
    from aiopg_io.drivers import _statx, io_uring, unavailable_reason

    reason = unavailable_reason("io_uring")
    if reason is not None:
        pytest.skip(f"driver io_uring cannot run here: {reason}")
    assert io_uring._check_statx_address() is True  # the binding's layout, as relied on
    monkeypatch.setattr(io_uring, "_statx_address", lambda stx: 0)
    assert io_uring._check_statx_address() is False
    monkeypatch.setattr(io_uring, "_STATX_CHECKED", [False])
    d = DriverSpec("io_uring").create()
    try:
        assert isinstance(d, ThreadFallback)
        assert OpKind.STATX not in d.inner.capabilities.kinds
        assert OpKind.STATX in d.capabilities.threaded_kinds
        assert OpKind.SYMLINKAT not in d.capabilities.threaded_kinds
        (tmp_path / "f").write_bytes(b"12345")
        buf = _statx.new_buffer()
        op = Op(OpKind.STATX, AT_FDCWD, buffers=(buf,), path=str(tmp_path / "f"))
        d.submit([op])
        while not op.done:
            d.reap()
        assert op.error is None and _statx.to_stat_result(buf) == os.stat(tmp_path / "f")
        assert dict(d.statistics().extra)["fallback_ops"] == 1
    finally:
        d.close()
