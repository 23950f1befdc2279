"""The sync driver (aiopg_io/drivers/sync.py): each op runs inside submit, blocking, and is
handed back by the next reap; a failure is the op's OSError; close hands back what was not
reaped and refuses later submits. The protocol it shares with every driver is tested in
tests/test_file.py (test_every_driver_keeps_the_protocol)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiopg_io.drivers import Op, OpKind, OpState
from aiopg_io.drivers.sync import SyncDriver
from tests.conftest import rand


@pytest.fixture
def fd(tmp_path: Path) -> Iterator[int]:
    p = tmp_path / "s.bin"
    p.write_bytes(rand(8192, 1))
    fd = os.open(p, os.O_RDWR)
    try:
        yield fd
    finally:
        os.close(fd)


def test_submit_performs_the_op_before_returning(fd: int) -> None:
    d = SyncDriver()
    assert not d.capabilities.asynchronous and d.fileno() is None
    buf = bytearray(4096)
    new = rand(100, 2)
    ops = [
        Op(OpKind.READ, fd, 4096, (memoryview(buf),), keepalive=buf),
        Op(OpKind.WRITE, fd, 8192, (memoryview(new),)),
    ]
    d.submit(ops)
    # Done already, before any reap: the read filled the buffer, the write reached the file.
    assert [op.state for op in ops] == [OpState.COMPLETED, OpState.COMPLETED]
    assert [op.result for op in ops] == [4096, 100]
    assert bytes(buf) == rand(8192, 1)[4096:]
    assert os.pread(fd, 200, 8192) == new
    assert d.statistics().in_flight == 2  # done but not reaped yet
    assert d.reap() == ops
    assert all(op.state is OpState.REAPED for op in ops)
    assert d.reap() == []
    stats = d.statistics()
    assert (stats.submit_calls, stats.submitted, stats.completed, stats.in_flight) == (1, 2, 2, 0)
    assert d.close() == []


def test_an_error_becomes_the_op_oserror(fd: int, tmp_path: Path) -> None:
    d = SyncDriver()
    bad = Op(OpKind.READ, 1 << 20, 0, (memoryview(bytearray(8)),), path="gone.bin")
    missing = Op(OpKind.UNLINKAT, -100, path=str(tmp_path / "nope"))
    good = Op(OpKind.FSYNC, fd)
    d.submit([bad, missing, good])  # submit raises nothing: each op carries its outcome
    assert d.reap() == [bad, missing, good]
    assert bad.result is None and isinstance(bad.error, OSError)
    assert (bad.error.errno, bad.error.filename) == (errno.EBADF, "gone.bin")
    assert isinstance(missing.error, FileNotFoundError) and missing.error.filename == str(tmp_path / "nope")
    assert good.error is None and good.result == 0
    d.close()


def test_a_cancel_requested_before_submit_never_runs(fd: int) -> None:
    d = SyncDriver()
    trunc = Op(OpKind.FTRUNCATE, fd, length=0)
    trunc.cancel_requested = True
    d.submit([trunc])
    assert d.reap() == [trunc]
    assert isinstance(trunc.error, OSError) and trunc.error.errno == errno.ECANCELED
    assert os.fstat(fd).st_size == 8192  # not truncated
    ran = Op(OpKind.NOP, fd)
    d.submit([ran])
    d.cancel(ran)  # too late: it already ran, and keeps its result
    assert d.reap() == [ran] and ran.error is None and ran.result == 0
    d.close()


def test_close_hands_back_the_unreaped_and_refuses_submits(fd: int) -> None:
    d = SyncDriver()
    ops = [Op(OpKind.NOP, fd), Op(OpKind.FDATASYNC, fd)]
    d.submit(ops)
    assert d.close() == ops
    assert all(op.state is OpState.REAPED for op in ops)
    assert d.close() == []  # idempotent
    late = Op(OpKind.NOP, fd)
    with pytest.raises(RuntimeError, match=r"^sync driver is closed$"):
        d.submit([late])
    assert late.state is OpState.IDLE
