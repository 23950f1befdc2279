"""``sqpoll=1`` on both io_uring drivers: a kernel thread polls the SQ (issue 14, item 4).

Data is read back through files on every loop, the options are checked, the C ring wakes a
sleeping SQ thread (IORING_SQ_NEED_WAKEUP -> IORING_ENTER_SQ_WAKEUP), close drains what is
in flight, a fork child gets the parent-ring error while the parent's ring (and its SQ
thread) go on, and ``python -m aiopg_io info`` says whether SQPOLL runs here.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

import aiopg_io
from aiopg_io import _info
from aiopg_io.drivers import driver_class, unavailable_reason
from aiopg_io.drivers.base import Op, OpKind, OpState
from aiopg_io.drivers.io_uring import DEFAULT_SQPOLL, IoUringDriver, _setup_flag_names
from aiopg_io.errors import DriverOptionError

from .._driving import wait_all
from ..conftest import in_child, open_fds

NAMES = ["io_uring", "io_uring_c"]


def sqpoll_driver(name: str, **options: object) -> IoUringDriver:
    reason = unavailable_reason(name) or driver_class(name).sqpoll_unavailable_reason()  # type: ignore[attr-defined]
    if reason is not None:
        pytest.skip(f"{name} sqpoll=1 cannot run here: {reason}")
    d = driver_class(name)(sqpoll=1, **options)
    assert isinstance(d, IoUringDriver) and d.sqpoll is True
    return d


@pytest.mark.anyio
@pytest.mark.parametrize("name", NAMES)
async def test_files_read_back_with_sqpoll_on_every_loop(name: str, tmp_path: Path) -> None:
    sqpoll_driver(name).close()  # skips where it cannot run
    data = os.urandom(3 * 4096 + 100)
    p = tmp_path / "f.bin"
    async with aiopg_io.open(p, "w+b", driver=f"{name}:sqpoll=1") as f:
        assert await f.write(data) == len(data)
        await f.fsync()
        buf = bytearray(len(data))
        assert await f.preadinto(buf, 0) == len(data)
        assert buf == data
        stats = f.driver_statistics()
        assert stats.driver == name and stats.in_flight == 0
    async with aiopg_io.open(p, "rb", direct=True, driver=f"{name}:sqpoll=1") as f:
        block = aiopg_io.aligned_buffer(4096)
        assert await f.preadinto(block, 4096) == 4096
        assert bytes(block) == data[4096:8192]
    with pytest.raises(FileNotFoundError, match="No such file or directory"):
        await aiopg_io.open(tmp_path / "missing", "rb", driver=f"{name}:sqpoll=1")


@pytest.mark.parametrize("name", NAMES)
def test_options_are_checked(name: str) -> None:
    if unavailable_reason(name) is not None:
        pytest.skip(f"{name} cannot run here")
    with pytest.raises(DriverOptionError, match=rf"{name} sqpoll='maybe' is not a boolean \(use 0 or 1\)"):
        driver_class(name)(sqpoll="maybe")
    d = driver_class(name)()
    try:
        assert isinstance(d, IoUringDriver) and d.sqpoll is DEFAULT_SQPOLL
        assert f"sqpoll={DEFAULT_SQPOLL}" in repr(d)
    finally:
        d.close()


def test_sq_thread_idle_is_checked_and_a_sleeping_thread_is_woken() -> None:
    if unavailable_reason("io_uring_c") is not None:
        pytest.skip("io_uring_c cannot run here")
    with pytest.raises(DriverOptionError, match=r"io_uring_c sq_thread_idle=-1 is out of range: 0 to 60000"):
        driver_class("io_uring_c")(sqpoll=1, sq_thread_idle=-1)
    with pytest.raises(DriverOptionError, match=r"sq_thread_idle=1.5 is not a whole number"):
        driver_class("io_uring_c")(sqpoll=1, sq_thread_idle=1.5)
    d = sqpoll_driver("io_uring_c", sq_thread_idle=1)  # the thread sleeps after 1 ms idle
    try:
        woken = 0
        for _ in range(200):  # every NOP completes, whether the thread slept or not
            op = Op(OpKind.NOP, -1)
            d.submit([op])
            wait_all(d, [op])
            assert op.result == 0
            woken = dict(d.statistics().extra)["sqpoll_wakeups"]
            if woken:
                break
            time.sleep(0.01)  # let the thread go idle, so the next submit must wake it
        assert woken >= 1
    finally:
        d.close()


@pytest.mark.parametrize("name", NAMES)
def test_close_drains_ops_in_flight(name: str) -> None:
    before = open_fds()
    rfd, wfd = os.pipe()
    d = sqpoll_driver(name)
    try:
        stuck = Op(OpKind.READ, rfd, 0, (memoryview(bytearray(16)),))  # only a cancel ends it
        d.submit([stuck])
        assert d.close() == [stuck]
        assert stuck.state is OpState.REAPED
        assert isinstance(stuck.error, OSError) and stuck.error.errno == errno.ECANCELED
    finally:
        os.close(rfd)
        os.close(wfd)
    assert open_fds() == before


@pytest.mark.parametrize("name", NAMES)
def test_fork_child_is_refused_and_the_parents_sq_thread_goes_on(name: str, tmp_path: Path) -> None:
    d = sqpoll_driver(name)
    try:

        def child() -> str:
            try:
                d.submit([Op(OpKind.NOP, -1)])
            except RuntimeError as exc:
                return str(exc)
            return "no error"

        assert "belongs to the parent process" in in_child(child)
        p = tmp_path / "after-fork"
        p.write_bytes(b"parent data")
        fd = os.open(p, os.O_RDONLY)
        try:
            buf = bytearray(11)
            op = Op(OpKind.READ, fd, 0, (memoryview(buf),), direct=True)  # through the ring
            d.submit([op])
            wait_all(d, [op])
            assert op.result == 11 and buf == b"parent data"
        finally:
            os.close(fd)
    finally:
        d.close()


def test_info_says_whether_sqpoll_runs(tmp_path: Path) -> None:
    m = _info.machine_matrix(str(tmp_path))
    text = _info.render(m)
    for name in NAMES:
        if m.drivers[name]["buffered"] != "available":
            assert name not in m.sqpoll
            continue
        reason = driver_class(name).sqpoll_unavailable_reason()  # type: ignore[attr-defined]
        want = (
            f"available, {'on' if DEFAULT_SQPOLL else 'off'} by default "
            f"({name}:sqpoll={int(not DEFAULT_SQPOLL)} to change)"
            if reason is None
            else f"no: {reason}"
        )
        assert m.sqpoll[name] == want
        assert f"  sqpoll    {name}: {want}" in text.splitlines()


@pytest.mark.parametrize("name", NAMES)
def test_setup_flags_name_what_the_ring_runs_with(name: str) -> None:
    """``setup_flags`` reads the flags back from the ring (not from the options): SUBMIT_ALL
    where the kernel took it (5.18; this driver asks for it), SQPOLL only with sqpoll=1, and
    never the DEFER_TASKRUN/SINGLE_ISSUER pair (measured, not kept: docs/benchmarks.md)."""
    if (reason := unavailable_reason(name)) is not None:
        pytest.skip(f"{name} cannot run here: {reason}")
    d = driver_class(name)()
    assert isinstance(d, IoUringDriver)
    try:
        flags = d.setup_flags
        # The pure ring's package needs 6.14, which has SUBMIT_ALL; the C ring drops it on
        # a kernel that refuses it (before 5.18), and says so.
        submit_all = d._ring.submit_all if name == "io_uring_c" else True
    finally:
        d.close()
    assert ("IORING_SETUP_SUBMIT_ALL" in flags) == submit_all
    assert "IORING_SETUP_SQPOLL" not in flags
    assert not {"IORING_SETUP_DEFER_TASKRUN", "IORING_SETUP_SINGLE_ISSUER"} & set(flags)
    d = sqpoll_driver(name)
    try:
        assert "IORING_SETUP_SQPOLL" in d.setup_flags
    finally:
        d.close()


def test_setup_flag_names_cover_unknown_bits() -> None:
    assert _setup_flag_names(0) == ()
    assert _setup_flag_names((1 << 7) | (1 << 1)) == ("IORING_SETUP_SQPOLL", "IORING_SETUP_SUBMIT_ALL")
    assert _setup_flag_names((1 << 13) | (1 << 12)) == (
        "IORING_SETUP_SINGLE_ISSUER",
        "IORING_SETUP_DEFER_TASKRUN",
    )
    assert _setup_flag_names((1 << 30) | 1) == ("IORING_SETUP_IOPOLL", hex(1 << 30))


def test_info_names_the_ring_setup_flags(tmp_path: Path) -> None:
    m = _info.machine_matrix(str(tmp_path))
    text = _info.render(m).splitlines()
    for name in NAMES:
        if m.drivers[name]["buffered"] != "available":
            assert name not in m.setup
            continue
        d = driver_class(name)()
        assert isinstance(d, IoUringDriver)
        try:
            want = " | ".join(d.setup_flags) or "none"
        finally:
            d.close()
        assert m.setup[name] == want
        assert f"  setup     {name}: {want}" in text
    assert "posix_aio" not in m.setup and "worker" not in m.setup


@pytest.mark.parametrize("name", NAMES)
def test_more_ops_than_the_sq_holds_all_complete(name: str, tmp_path: Path) -> None:
    """A full SQ with a polling thread: the C ring waits for room (IORING_ENTER_SQ_WAIT),
    the pure one keeps the rest in its backlog; every op completes with its own data."""
    p = tmp_path / "f"
    data = os.urandom(64 * 512)
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    d = sqpoll_driver(name, entries=4)
    try:
        bufs = [bytearray(512) for _ in range(64)]
        ops = [Op(OpKind.READ, fd, i * 512, (memoryview(b),), direct=True) for i, b in enumerate(bufs)]
        d.submit(ops)
        wait_all(d, ops)
        assert [op.result for op in ops] == [512] * 64
        assert b"".join(bufs) == data
    finally:
        d.close()
        os.close(fd)
