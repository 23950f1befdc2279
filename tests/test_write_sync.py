"""The linked write + sync (``AsyncFile.pwritev_sync``, ``OpKind.WRITE_SYNC``) on every loop x
driver: the data reads back, a failed write skips the sync and raises the write's own error,
a failed sync raises the sync's, and a cancelled one never writes its bytes twice."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import anyio
import pytest

import aiopg_io
from aiopg_io.testing import Fault, FaultInjector, PowerLossSimulator

pytestmark = pytest.mark.anyio


def _data(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


async def test_data_reads_back(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    a, b = _data(5000, 1), _data(70000, 2)
    async with aiopg_io.open(path, "w+b", driver=driver) as f:
        assert await f.pwritev_sync([a, memoryview(b)], 100) == len(a) + len(b)
        assert await f.pwritev_sync([b"tail"], 100 + len(a) + len(b), sync="fsync") == 4
        assert await f.pread(len(a) + len(b) + 4, 100) == a + b + b"tail"
        assert await f.pread(100, 0) == bytes(100)
    assert path.read_bytes() == bytes(100) + a + b + b"tail"


async def test_direct_data_reads_back(direct_driver: str, data_dir: Path) -> None:
    path = data_dir / "f"
    buf = aiopg_io.aligned_buffer(3 * 4096)
    buf[:] = _data(3 * 4096)
    async with aiopg_io.open(path, "w+b", direct=True, driver=direct_driver) as f:
        assert await f.pwritev_sync([buf[:4096], buf[4096:]], 4096) == 3 * 4096
    assert path.read_bytes()[4096:] == bytes(buf)


async def test_arguments_are_checked(driver: str, tmp_path: Path) -> None:
    async with aiopg_io.open(tmp_path / "f", "w+b", driver=driver) as f:
        with pytest.raises(TypeError, match="bufs must be an iterable of buffers, not a single buffer"):
            await f.pwritev_sync(b"abc", 0)
        with pytest.raises(ValueError, match="sync='o_dsync': 'fdatasync' or 'fsync'"):
            await f.pwritev_sync([b"abc"], 0, sync="o_dsync")  # type: ignore[arg-type]
    async with aiopg_io.open(tmp_path / "f", "rb", driver=driver) as f:
        with pytest.raises(OSError, match="not open for writing"):
            await f.pwritev_sync([b"abc"], 0)


async def test_a_write_the_kernel_refuses_raises_its_error(driver: str, tmp_path: Path) -> None:
    # A descriptor open for reading only: the write fails with EBADF, where an fdatasync on it
    # would succeed, so the op must report the write's error and not go on to the sync.
    path = tmp_path / "f"
    path.write_bytes(b"old")
    fd = os.open(path, os.O_RDONLY)
    async with aiopg_io.open(fd, "r+b", driver=driver) as f:
        with pytest.raises(OSError, match=r"\[Errno 9\] Bad file descriptor") as ei:
            await f.pwritev_sync([b"new"], 0)
        assert type(ei.value) is OSError and ei.value.errno == errno.EBADF
    assert path.read_bytes() == b"old"


async def test_a_failed_write_skips_the_sync(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    inj = FaultInjector(Fault(kind="writes", errno=errno.ENOSPC), driver=driver)
    async with aiopg_io.open(path, "w+b", driver=inj) as f:
        enospc = r"\[Errno 28\] No space left on device \(injected .* op #1\)"
        with pytest.raises(OSError, match=enospc) as ei:
            await f.pwritev_sync([b"abc", b"def"], 0)
        assert type(ei.value) is OSError and ei.value.filename == str(path)
        assert inj.ops == 1  # the write half only: the sync was never issued
        assert await f.pwritev_sync([b"abc", b"def"], 0) == 6  # ops 2 (writev) and 3 (fdatasync)
        assert inj.ops == 3
    assert [(e.op, e.kind.value) for e in inj.log] == [(1, "writev")]
    assert path.read_bytes() == b"abcdef"


async def test_a_short_write_skips_the_sync(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    inj = FaultInjector(Fault(kind="writes", short=4), driver=driver)
    async with aiopg_io.open(path, "w+b", driver=inj) as f:
        with pytest.raises(OSError, match=r"\[Errno 28\] No space left on device \(injected .* op #1\)"):
            await f.pwritev_sync([b"abcdefgh"], 0)
    assert inj.ops == 1
    assert path.read_bytes() == b"abcd"  # written once, cut where the fault said


async def test_a_failed_sync_raises_the_syncs_error(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    inj = FaultInjector(Fault(kind="fsync", errno=errno.EIO), driver=driver)
    async with aiopg_io.open(path, "w+b", driver=inj) as f:
        with pytest.raises(OSError, match=r"\[Errno 5\] Input/output error \(injected .* op #2\)") as ei:
            await f.pwritev_sync([b"abc"], 0, sync="fsync")
        assert type(ei.value) is OSError and ei.value.errno == errno.EIO
    assert [(e.op, e.kind.value) for e in inj.log] == [(2, "fsync")]
    assert path.read_bytes() == b"abc"  # the write happened; only the sync failed


async def test_power_loss_sees_a_write_then_a_sync(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    sim = PowerLossSimulator(driver)
    async with aiopg_io.open(path, "w+b", driver=sim, opener=sim.opener) as f:
        await f.pwrite(b"A" * 512, 0)  # completed before the linked op: its sync covers it
        await f.pwritev_sync([b"B" * 512], 512)
        assert sim.unsynced() == {}
        await f.pwrite(b"C" * 512, 1024)
        assert sim.unsynced() == {str(path): 512}
    sim.fsync_directory(tmp_path)
    sim.crash(seed=3, policy="drop")
    assert path.read_bytes()[:1024] == b"A" * 512 + b"B" * 512


async def test_a_failed_linked_sync_makes_nothing_durable(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    sim = PowerLossSimulator(FaultInjector(Fault(kind="fdatasync", errno=errno.EIO), driver=driver))
    async with aiopg_io.open(path, "w+b", driver=sim, opener=sim.opener) as f:
        with pytest.raises(OSError, match="Input/output error"):
            await f.pwritev_sync([b"B" * 512], 0)
        assert sim.unsynced() == {str(path): 512}
    sim.fsync_directory(tmp_path)
    sim.crash(seed=3, policy="drop")
    assert path.read_bytes() == b""


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 5])
async def test_cancelled_it_never_writes_twice(driver: str, tmp_path: Path, steps: int) -> None:
    # O_APPEND: on Linux a positional write to such a file appends (pwrite(2), BUGS), so a
    # write issued twice would show as the file growing twice.
    path = tmp_path / "f"
    path.write_bytes(b"")
    data = _data(1 << 20, steps)
    async with aiopg_io.open(path, "ab", driver=driver) as f:
        with anyio.CancelScope() as scope:

            async def cancel_soon() -> None:
                for _ in range(steps):
                    await anyio.lowlevel.checkpoint()
                scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_soon)
                await f.pwritev_sync([data], 0)
        size = path.stat().st_size
        assert size in (0, len(data)) or (0 < size < len(data) and scope.cancelled_caught)
        assert path.read_bytes() == data[:size]
        # The file is still usable: the next op runs as usual.
        assert await f.pwritev_sync([b"end"], 0) == 3
    assert path.read_bytes() == data[:size] + b"end"


@pytest.mark.parametrize("half", ["write", "fdatasync"])
async def test_cancelled_while_a_half_is_held(driver: str, tmp_path: Path, half: str) -> None:
    # A delay holds one half before it runs; the cancel then lands on that half: a held write
    # never runs (nothing written, no sync), a held sync never runs (written once).
    path = tmp_path / "f"
    path.write_bytes(b"")
    inj = FaultInjector(Fault(kind=half, delay=30.0), driver=driver)
    async with aiopg_io.open(path, "ab", driver=inj) as f:
        with anyio.CancelScope() as scope:

            async def cancel_once_held() -> None:
                # Once the held half has been reached (not after a fixed time: on a loaded
                # machine the write before a held sync can take longer than any guess).
                with anyio.fail_after(20):
                    while not inj.injected:
                        await anyio.sleep(0.005)
                scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_once_held)
                await f.pwritev_sync([b"x" * 1000], 0)
        assert scope.cancelled_caught
        assert inj.ops == (1 if half == "write" else 2)
    assert path.read_bytes() == (b"" if half == "write" else b"x" * 1000)


@pytest.mark.parametrize("driver", ["io_uring", "io_uring_c"], indirect=True)
async def test_the_ring_drivers_link_it_in_the_ring(driver: str, tmp_path: Path) -> None:
    # io_uring and io_uring_c link the write and the sync in the ring (IOSQE_IO_LINK): no
    # fallback thread runs it, and the chain is counted as one op.
    async with aiopg_io.open(tmp_path / "f", "w+b", driver=driver) as f:
        before = f.driver_statistics()
        assert await f.pwritev_sync([b"a" * 5000, b"b" * 3000], 0) == 8000
        after = f.driver_statistics()
        assert await f.pread(8000, 0) == b"a" * 5000 + b"b" * 3000
    extra = dict(after.extra)
    assert extra.get("fallback_ops", 0) == dict(before.extra).get("fallback_ops", 0)
    assert after.submitted - before.submitted == 1 and after.completed - before.completed == 1
    assert after.in_flight == 0


@pytest.mark.parametrize("driver", ["io_uring_c"], indirect=True)
async def test_io_uring_c_completes_it_in_c(driver: str, tmp_path: Path) -> None:
    # On io_uring_c a chain whose sync succeeded is reaped and its waiter resumed in C
    # (Ring.harvest: c_resumed counts it), as a whole write or a sync is: no Python frame
    # per completion. Its result is still the bytes written (a failed half goes the Python
    # way: the tests above, and tests/drivers/test_io_uring_c_tick.py).
    async with aiopg_io.open(tmp_path / "f", "w+b", driver=driver) as f:
        before = dict(f.driver_statistics().extra)["c_resumed"]
        for i in range(5):
            assert await f.pwritev_sync([b"a" * 100, memoryview(b"b" * 52)], i * 152) == 152
        after = f.driver_statistics()
        assert dict(after.extra)["c_resumed"] - before >= 5
        assert after.in_flight == 0
        assert await f.pread(5 * 152, 0) == (b"a" * 100 + b"b" * 52) * 5
    assert (tmp_path / "f").read_bytes() == (b"a" * 100 + b"b" * 52) * 5
