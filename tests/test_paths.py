"""Directory operations as ops (aiopg_io/_paths.py), on every loop x driver.

Each call is compared with what ``os`` does with the same path: the result on disk, and on
failure the exception's type and message (``str`` names the path, and both paths for a
rename). The fd table is checked after each. posix_aio has no native path op: it runs them
through the thread fallback (drivers/_fallback.py), checked here too (a driver whose
capabilities deny a kind: tests/drivers/test_fallback.py). Injected faults on these ops
reach the caller, and the power-loss simulator sees them: a rename not followed by a
directory fsync is undone by a crash.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import aiopg_io
from aiopg_io import _paths
from aiopg_io.buffers import BufferPool
from aiopg_io.drivers import Op, OpKind
from aiopg_io.drivers.base import AT_FDCWD
from aiopg_io.testing import Fault, PowerLossSimulator, inject

from .conftest import open_fds, raises_like, stdlib_error

pytestmark = pytest.mark.anyio


async def same_error(want: BaseException, call: Callable[[], Awaitable[object]]) -> None:
    """:func:`raises_like`, and no fd left open."""
    before = open_fds()
    await raises_like(want, call)
    assert open_fds() == before


# -- each kind against os -----------------------------------------------------------------------


async def test_create_exclusive_makes_an_empty_file_and_refuses_an_existing_one(
    tmp_path: Path, driver: str
) -> None:
    p = tmp_path / "new"
    before = open_fds()
    await _paths.create(p, driver)
    assert p.read_bytes() == b""
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask
    assert open_fds() == before
    want = stdlib_error(lambda: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    assert isinstance(want, FileExistsError)
    await same_error(want, lambda: _paths.create(p, driver))
    await _paths.create(p, driver, exclusive=False)  # exists: opened, nothing changes
    missing_dir = tmp_path / "no" / "such"
    await same_error(
        stdlib_error(lambda: os.open(missing_dir, os.O_WRONLY | os.O_CREAT)),
        lambda: _paths.create(missing_dir, driver),
    )
    await same_error(
        stdlib_error(lambda: os.open("a\0b", os.O_WRONLY)), lambda: _paths.create("a\0b", driver)
    )


async def test_rename_replaces_and_reports_errors_as_os_does(tmp_path: Path, driver: str) -> None:
    a, b, d = tmp_path / "a", tmp_path / "b", tmp_path / "dir"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    d.mkdir()
    before = open_fds()
    assert await _paths.rename(a, b, driver) is True  # replaces b
    assert not a.exists() and b.read_bytes() == b"A"
    a.write_bytes(b"A2")
    assert await _paths.rename(a, b, driver, replace=False) is False  # b exists: left alone
    assert a.read_bytes() == b"A2" and b.read_bytes() == b"A"
    c = tmp_path / "c"
    assert await _paths.rename(a, c, driver, replace=False) is True
    assert c.read_bytes() == b"A2" and not a.exists()
    assert open_fds() == before
    missing = tmp_path / "missing"
    await same_error(stdlib_error(lambda: os.rename(missing, b)), lambda: _paths.rename(missing, b, driver))
    # A file where a directory is (the target is a directory): EISDIR, naming both paths.
    await same_error(stdlib_error(lambda: os.rename(c, d)), lambda: _paths.rename(c, d, driver))
    await same_error(stdlib_error(lambda: os.rename(d, c)), lambda: _paths.rename(d, c, driver))  # ENOTDIR
    await same_error(stdlib_error(lambda: os.rename("x\0", c)), lambda: _paths.rename("x\0", c, driver))
    await same_error(stdlib_error(lambda: os.rename(c, "y\0")), lambda: _paths.rename(c, "y\0", driver))
    assert c.read_bytes() == b"A2" and d.is_dir()


async def test_unlink_removes_and_reports_errors_as_os_does(tmp_path: Path, driver: str) -> None:
    f, d = tmp_path / "f", tmp_path / "dir"
    f.write_bytes(b"x")
    d.mkdir()
    before = open_fds()
    await _paths.unlink(f, driver)
    assert not f.exists()
    await _paths.unlink(f, driver, missing_ok=True)
    assert open_fds() == before
    await same_error(stdlib_error(lambda: os.unlink(f)), lambda: _paths.unlink(f, driver))
    await same_error(stdlib_error(lambda: os.unlink(d)), lambda: _paths.unlink(d, driver))  # a directory
    await same_error(stdlib_error(lambda: os.unlink("f\0")), lambda: _paths.unlink("f\0", driver))
    assert d.is_dir()


async def test_fsync_directory_opens_syncs_and_closes(tmp_path: Path, driver: str) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    before = open_fds()
    await _paths.fsync_directory(tmp_path, driver)
    assert open_fds() == before
    directory = os.O_RDONLY | os.O_DIRECTORY
    await same_error(stdlib_error(lambda: os.open(f, directory)), lambda: _paths.fsync_directory(f, driver))
    missing = tmp_path / "missing"
    await same_error(
        stdlib_error(lambda: os.open(missing, directory)), lambda: _paths.fsync_directory(missing, driver)
    )


async def test_path_ops_run_natively_or_through_the_fallback(tmp_path: Path, driver: str) -> None:
    # A file keeps the context (and its driver) alive, so its statistics count the path ops.
    p = tmp_path / "keep"
    async with aiopg_io.open(p, "wb", driver=driver) as f:
        await _paths.create(tmp_path / "n", driver)
        await _paths.rename(tmp_path / "n", tmp_path / "m", driver)
        await _paths.unlink(tmp_path / "m", driver)
        await _paths.fsync_directory(tmp_path, driver)
        extra = dict(f._ctx.driver.statistics().extra)
    # No AIO form of a path op: openat, close, renameat, unlinkat, openat, close go to the
    # fallback threads. Both io_uring drivers run them in the ring (this kernel has them).
    if driver == "posix_aio":
        assert extra["fallback_ops"] == 6
    else:
        assert extra.get("fallback_ops", 0) == 0
    assert sorted(os.listdir(tmp_path)) == ["keep"]


async def test_an_openat_op_gives_an_fd_and_a_close_op_closes_it(tmp_path: Path, driver: str) -> None:
    from aiopg_io._context import get_context

    (tmp_path / "f").write_bytes(b"data")
    before = open_fds()
    ctx = get_context(driver)
    ctx.acquire()
    try:
        dfd = await ctx.run(
            Op(OpKind.OPENAT, AT_FDCWD, path=str(tmp_path), flags=os.O_RDONLY | os.O_DIRECTORY)
        )
        # Relative to a directory fd, as openat(2).
        fd = await ctx.run(Op(OpKind.OPENAT, dfd, path="f", flags=os.O_RDONLY | os.O_CLOEXEC))
        assert os.pread(fd, 4, 0) == b"data"
        assert await ctx.run(Op(OpKind.CLOSE, fd)) == 0
        assert await ctx.run(Op(OpKind.UNLINKAT, dfd, path="f")) == 0
        await ctx.run(Op(OpKind.CLOSE, dfd))
        with pytest.raises(OSError) as info:
            await ctx.run(Op(OpKind.CLOSE, fd))
        assert info.value.errno == errno.EBADF
    finally:
        await ctx.release()
    assert not (tmp_path / "f").exists()
    assert open_fds() == before


# -- faults and power loss ---------------------------------------------------------------------


async def test_injected_faults_on_directory_ops_reach_the_caller(tmp_path: Path, driver: str) -> None:
    before = open_fds()
    with inject(Fault(kind="fsync", path=str(tmp_path), errno=errno.EIO), driver=driver) as inj:
        with pytest.raises(OSError, match="injected") as info:
            await _paths.fsync_directory(tmp_path, inj)
        assert info.value.errno == errno.EIO and info.value.filename == str(tmp_path)
    assert open_fds() == before  # the directory fd was closed all the same

    with inject(Fault(kind="openat", errno=errno.ENOSPC), driver=driver) as inj:
        with pytest.raises(OSError) as info:
            await _paths.create(tmp_path / "full", inj)
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "full")
    assert not (tmp_path / "full").exists()

    exists = Fault(kind="openat", errno=errno.EEXIST)
    with inject(exists, driver=driver) as inj, pytest.raises(FileExistsError):
        await _paths.create(tmp_path / "x", inj)

    (tmp_path / "r").write_bytes(b"r")
    with inject(Fault(kind="paths", errno=errno.EIO, when="after", times=None), driver=driver) as inj:
        with pytest.raises(OSError, match="injected"):
            await _paths.rename(tmp_path / "r", tmp_path / "s", inj)
        with pytest.raises(OSError, match="injected"):  # it ran; the fd it got is closed
            await _paths.create(tmp_path / "t", inj)
    assert (tmp_path / "s").exists() and (tmp_path / "t").exists()  # "after": they happened
    assert open_fds() == before


async def test_the_pool_sees_an_injected_eio_on_its_directory_fsync(tmp_path: Path, driver: str) -> None:
    with inject(Fault(kind="fsync", path=str(tmp_path), errno=errno.EIO), driver=driver) as inj:
        async with BufferPool(4, 4096, driver=inj) as pool:
            rel = await pool.open(tmp_path / "rel", create=True)
            await pool.extend(rel, 1)
            with pytest.raises(OSError, match="Input/output error"):
                await pool.flush()
            await pool.close_relation(rel)
    assert [e.kind for e in inj.log] == [OpKind.FSYNC]


async def test_a_rename_is_undone_by_a_crash_unless_its_directory_was_fsynced(
    tmp_path: Path, driver: str
) -> None:
    for synced in (False, True):
        d = tmp_path / str(synced)
        d.mkdir()
        (d / "old").write_bytes(b"durable")
        sim = PowerLossSimulator(driver)
        await _paths.create(d / "new", sim)
        await _paths.rename(d / "old", d / "renamed", sim)
        if synced:
            await _paths.fsync_directory(d, sim)
        report = sim.crash(policy="drop")
        if synced:
            assert report.entries == ()
            assert sorted(os.listdir(d)) == ["new", "renamed"]
        else:
            assert [e.fate for e in report.entries] == ["vanished", "reverted"]
            assert sorted(os.listdir(d)) == ["old"]


async def test_a_path_op_cancelled_as_the_last_user_of_a_new_context(tmp_path: Path, driver: str) -> None:
    # The child makes a context, parks on its first op and is cancelled in the same tick:
    # the context closes before trio's reaper task for it first ran (which once registered
    # the closed fd with epoll: TrioInternalError). Every call either happened or did not.
    import anyio

    async def child() -> None:
        while True:
            await _paths.create(tmp_path / "x", driver, exclusive=False)
            await _paths.fsync_directory(tmp_path, driver)

    before = open_fds()
    for i in range(40):
        async with anyio.create_task_group() as tg:
            tg.start_soon(child)
            for _ in range(i % 5):
                await anyio.sleep(0)
            tg.cancel_scope.cancel()
    assert open_fds() == before
