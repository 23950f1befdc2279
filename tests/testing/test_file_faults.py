"""Faults injected under the file API (``aiopg_io.open``), on every loop x driver: the
caller sees the documented exception or short count, cancellation keeps its promise, and
nothing leaks."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import anyio
import pytest

import aiopg_io
from aiopg_io.drivers import Driver, OpKind, resolve
from aiopg_io.testing import Fault, FaultInjector, Injection, default_driver, inject

from ._util import fds

pytestmark = pytest.mark.anyio


async def test_pwrite_and_fdatasync_errors(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "rel"
    before = fds()
    inj = FaultInjector(
        Fault(kind="write", errno=errno.ENOSPC), Fault(kind="fdatasync", errno=errno.EIO), driver=driver
    )
    async with aiopg_io.open(path, "w+b", driver=inj) as f:
        enospc = r"\[Errno 28\] No space left on device \(injected .* op #1\)"
        with pytest.raises(OSError, match=enospc) as ei:
            await f.pwrite(b"page", 0)
        assert ei.value.errno == errno.ENOSPC and ei.value.filename == str(path)
        assert await f.pwrite(b"page", 0) == 4
        with pytest.raises(OSError, match=r"\[Errno 5\] Input/output error \(injected .* op #3\)"):
            await f.fdatasync()
        await f.fdatasync()
        assert await f.pread(4, 0) == b"page"
    assert [(e.op, e.kind.value, e.errno) for e in inj.log] == [
        (1, "write", errno.ENOSPC),
        (3, "fdatasync", errno.EIO),
    ]
    assert fds() == before and inj.open_drivers == 0


async def test_short_read_is_seen_as_end_of_file(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "rel"
    path.write_bytes(b"abcdefgh")
    inj = FaultInjector(Fault(kind="reads", short=5), driver=driver)
    async with aiopg_io.open(path, "rb", driver=inj) as f:
        assert await f.pread(8, 0) == b"abcde"
        assert await f.pread(8, 0) == b"abcdefgh"


async def test_short_read_of_a_direct_file(direct_driver: str, data_dir: Path) -> None:
    path = data_dir / "rel"
    path.write_bytes(bytes(range(256)) * 16)
    inj = FaultInjector(Fault(kind="reads", short=1000), driver=direct_driver)
    buf = aiopg_io.aligned_buffer(4096)
    async with aiopg_io.open(path, "rb", direct=True, driver=inj) as f:
        assert await f.preadinto(buf, 0) == 1000
        assert bytes(buf[:1000]) == (bytes(range(256)) * 4)[:1000]


async def test_short_write_reports_enospc(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "rel"
    inj = FaultInjector(Fault(kind="writes", short=3), driver=driver)
    async with aiopg_io.open(path, "wb", driver=inj) as f:
        with pytest.raises(OSError, match=r"No space left on device \(injected") as ei:
            await f.pwrite(b"abcdef", 0)
        assert ei.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"abc"


async def test_transient_eagain_is_invisible(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "rel"
    inj = FaultInjector(Fault(errno=errno.EAGAIN, transient=True, times=None), driver=driver)
    async with aiopg_io.open(path, "w+b", driver=inj) as f:
        await f.write(b"hello")
        await f.fdatasync()
        assert await f.pread(5, 0) == b"hello"
    assert len(inj.log) >= 3 and {e.action for e in inj.log} == {"retry"}


async def test_eagain_not_transient_is_blocking_io_error(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "rel"
    path.write_bytes(b"x")
    inj = FaultInjector(Fault(kind="read", errno=errno.EAGAIN), driver=driver)
    async with aiopg_io.open(path, "rb", driver=inj) as f:
        with pytest.raises(BlockingIOError, match=r"Resource temporarily unavailable \(injected"):
            await f.pread(1, 0)


async def test_a_buffered_write_failing_at_close_still_closes(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "rel"
    before = fds()
    inj = FaultInjector(Fault(kind="writes", errno=errno.EIO), driver=driver)
    f = await aiopg_io.open(path, "wb", driver=inj)
    await f.write(b"buffered")
    with pytest.raises(OSError, match=r"Input/output error \(injected"):
        await f.aclose()
    assert f.closed
    assert fds() == before and inj.open_drivers == 0


async def test_cancelling_a_held_completion_waits_for_it(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "rel"
    inj = FaultInjector(Fault(kind="write", delay=0.3, errno=None, when="after"), driver=driver)
    caught: list[bool] = []
    async with aiopg_io.open(path, "wb", driver=inj) as f:
        scope = anyio.CancelScope()

        async def writer() -> None:
            with scope:
                await f.pwrite(b"ran", 0)
            caught.append(scope.cancelled_caught)

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            while path.read_bytes() != b"ran":  # the write ran; its completion is held
                await anyio.sleep(0.005)
            scope.cancel()
        assert caught == [True]
    # The cancelled task waited until the op was reaped: nothing is left in flight.
    assert path.read_bytes() == b"ran" and inj.open_drivers == 0


async def test_cancelling_an_op_held_before_it_ran(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "rel"
    inj = FaultInjector(Fault(kind="write", delay=60, errno=None), driver=driver)
    async with aiopg_io.open(path, "wb", driver=inj) as f:
        with anyio.fail_after(20):  # a guard: the op is held for 60 s unless cancel frees it
            async with anyio.create_task_group() as tg:
                tg.start_soon(f.pwrite, b"never", 0)
                while not inj.log:  # submitted, and held
                    await anyio.sleep(0.005)
                tg.cancel_scope.cancel()
    assert path.read_bytes() == b""


def test_resolve_consults_the_default_driver_override() -> None:
    from aiopg_io.drivers import default_driver as production_hook

    class Probe:
        key = name = "probe"

        def create(self) -> Driver:  # pragma: no cover - never called
            raise AssertionError("the probe makes no driver")

    probe = Probe()
    assert default_driver is production_hook  # the testing package uses the public hook
    with default_driver(probe):
        assert resolve(None) is probe
        assert resolve("sync").name == "sync"  # an explicit driver still wins
    assert resolve(None) is not probe


async def test_inject_routes_files_opened_without_a_driver(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "rel"
    with inject(Fault(kind="fdatasync", errno=errno.EIO)) as inj:
        assert inj.inner.name == driver  # the driver files would have used
        async with aiopg_io.open(path, "wb") as f:
            await f.write(b"x")
            with pytest.raises(OSError, match=r"Input/output error \(injected"):
                await f.fdatasync()
        # An explicit driver= still wins.
        async with aiopg_io.open(path, "wb", driver=driver) as f:
            await f.fdatasync()
    assert [e.kind.value for e in inj.log] == ["fdatasync"]
    async with aiopg_io.open(path, "wb") as f:  # outside the block: no injector
        await f.fdatasync()


async def test_default_driver_nests(driver: str, tmp_path: Path) -> None:
    a = FaultInjector(Fault(kind="read", times=None), driver=driver)
    b = FaultInjector(driver=driver)
    (tmp_path / "rel").write_bytes(b"x")
    with default_driver(a):
        with default_driver(b):
            async with aiopg_io.open(tmp_path / "rel", "rb") as f:
                assert await f.pread(1, 0) == b"x"
        async with aiopg_io.open(tmp_path / "rel", "rb") as f:
            with pytest.raises(OSError):
                await f.pread(1, 0)


# Each kind of fault, as a caller of the file API sees it, and the log entry it leaves. The
# call is the file's first op (op #1): 100 bytes at offset 4096, or a sync.
_CONTENT = bytes(range(256)) * 32
_X = b"X" * 100
_KIND_CASES: dict[str, tuple[Fault, str, object]] = {
    "eio-read": (Fault(kind="read", errno=errno.EIO), "pread", (OSError, "Input/output error")),
    "enospc-write": (Fault(kind="write", errno=errno.ENOSPC), "pwrite", (OSError, "No space left on device")),
    "eagain-read": (
        Fault(kind="read", errno=errno.EAGAIN),
        "pread",
        (BlockingIOError, "Resource temporarily unavailable"),
    ),
    "eintr-write": (
        Fault(kind="write", errno=errno.EINTR),
        "pwrite",
        (InterruptedError, "Interrupted system call"),
    ),
    "fsync-eio": (Fault(kind="fsync", errno=errno.EIO), "fsync", (OSError, "Input/output error")),
    "fdatasync-eio": (Fault(kind="fdatasync", errno=errno.EIO), "fdatasync", (OSError, "Input/output error")),
    "short-write": (Fault(kind="write", short=3), "pwrite", (OSError, "No space left on device")),
    "short-read": (Fault(kind="read", short=10), "pread", _CONTENT[4096:4106]),
    "delay-read": (Fault(kind="read", delay=0.2), "pread", _CONTENT[4096:4196]),
    "eintr-transient": (Fault(kind="write", errno=errno.EINTR, transient=True), "pwrite", 100),
}


@pytest.mark.parametrize("case", list(_KIND_CASES), ids=list(_KIND_CASES))
async def test_each_fault_kind_as_the_caller_sees_it(driver: str, tmp_path: Path, case: str) -> None:
    fault, call, expected = _KIND_CASES[case]
    path = tmp_path / "rel"
    path.write_bytes(_CONTENT)
    before = fds()
    inj = FaultInjector(fault, driver=driver)
    calls = {
        "pread": lambda f: f.pread(100, 4096),
        "pwrite": lambda f: f.pwrite(_X, 4096),
        "fsync": lambda f: f.fsync(),
        "fdatasync": lambda f: f.fdatasync(),
    }
    async with aiopg_io.open(path, "r+b", driver=inj) as f:
        started = anyio.current_time()
        if isinstance(expected, tuple):
            exc_type, text = expected
            with pytest.raises(OSError) as ei:
                await calls[call](f)
            err = ei.value
            assert type(err) is exc_type
            assert err.errno == inj.log[0].errno and err.filename == str(path)
            assert str(err) == (
                f"[Errno {err.errno}] {text} (injected by aiopg_io.testing into op #1): '{path}'"
            )
        else:
            assert await calls[call](f) == expected
        elapsed = anyio.current_time() - started
        # times=1: the same call again is untouched.
        again = await calls[call](f)
        assert again == {"pread": _CONTENT[4096:4196], "pwrite": 100}.get(call)
    transfer = call in ("pread", "pwrite")
    expected_errno = errno.ENOSPC if fault.short is not None and call == "pwrite" else fault.errno
    assert inj.log == [
        Injection(
            op=1,
            kind=OpKind(call.removeprefix("p")),
            path=str(path),
            offset=4096 if transfer else 0,
            nbytes=100 if transfer else 0,
            fault=0,
            action=fault.action,
            errno=expected_errno,
            short=fault.short,
            delay=fault.delay,
            when="before",
        )
    ]
    if fault.delay:
        assert elapsed >= fault.delay * 0.95
    written = _CONTENT[:4096] + _X + _CONTENT[4196:]
    assert path.read_bytes() == (written if call == "pwrite" else _CONTENT)
    assert fds() == before and inj.open_drivers == 0


async def test_a_full_disk_at_flush_keeps_the_buffered_bytes(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "rel"
    inj = FaultInjector(Fault(kind="writes", errno=errno.ENOSPC), driver=driver)
    data = os.urandom(3000)
    async with aiopg_io.open(path, "w+b", driver=inj) as f:
        assert await f.write(data) == 3000
        with pytest.raises(OSError, match=r"No space left on device \(injected .* op #1\)"):
            await f.flush()
        assert path.read_bytes() == b"" and await f.tell() == 3000
        await f.flush()  # the disk has room again: the same bytes go out
        await f.seek(0)
        assert await f.read() == data
    assert path.read_bytes() == data
    assert [(e.op, e.errno) for e in inj.log] == [(1, errno.ENOSPC)]
