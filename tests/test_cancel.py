"""Cancellation: prompt, leak-free, and never lets a buffer be reused while I/O may touch it."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest

import aiopg_io
from aiopg_io._context import live_contexts
from tests.conftest import open_fds

pytestmark = pytest.mark.anyio


async def _storm(driver: str, path: Path, nops: int, seed: int) -> None:
    rng = random.Random(seed)
    size = 1 << 20
    data = rng.randbytes(size)
    path.write_bytes(data)
    before = open_fds()
    completed = cancelled = 0
    async with aiopg_io.open(path, "r+b", driver=driver) as f:

        async def one(i: int) -> None:
            nonlocal completed, cancelled
            off = rng.randrange(0, size - 4096)
            # A canary on both sides of the window the op may write into.
            buf = bytearray(b"\xa5" * 64 + bytes(4096) + b"\x5a" * 64)
            view = memoryview(buf)[64:-64]
            with anyio.move_on_after(rng.choice((0, 0, 1e-5, 1e-4, 1e-3))) as scope:
                if i % 4 == 0:
                    await f.pwrite(data[off : off + 4096], off)  # same bytes: content stays known
                else:
                    n = await f.preadinto(view, off)
                    assert n == 4096 and view == data[off : off + 4096]
            if scope.cancelled_caught:
                cancelled += 1
            else:
                completed += 1
            # Whether or not it was cancelled, the op is over: nothing may touch buf any more.
            snapshot = bytes(buf)
            await anyio.sleep(0)
            assert bytes(buf) == snapshot
            assert buf[:64] == b"\xa5" * 64 and buf[-64:] == b"\x5a" * 64

        async with anyio.create_task_group() as tg:
            for i in range(nops):
                tg.start_soon(one, i)
                if i % 64 == 0:
                    await anyio.sleep(0)
    assert completed + cancelled == nops
    assert cancelled > 0, "the storm cancelled nothing: it tests nothing"
    assert path.read_bytes() == data
    assert open_fds() == before
    assert live_contexts() == []


async def test_cancellation_storm(driver: str, tmp_path: Path) -> None:
    await _storm(driver, tmp_path / "storm.bin", 3000, 1)


@pytest.mark.slow
async def test_cancellation_storm_large(driver: str, tmp_path: Path) -> None:
    await _storm(driver, tmp_path / "storm.bin", 100_000, 2)


async def test_close_waits_for_ops_in_flight(driver: str, tmp_path: Path) -> None:
    p = tmp_path / "w.bin"
    results: list[int] = []
    issued = 0
    f = await aiopg_io.open(p, "w+b", driver=driver)

    async def writer(i: int) -> None:
        nonlocal issued
        issued += 1  # pwrite stages its op before its first suspension
        results.append(await f.pwrite(bytes([i]) * 65536, i * 65536))

    async with anyio.create_task_group() as tg:
        for i in range(16):
            tg.start_soon(writer, i)
        while issued < 16:
            await anyio.sleep(0)
        await f.aclose()
        with pytest.raises(aiopg_io.ClosedError):
            await f.pwrite(b"late", 0)
    assert sorted(results) == [65536] * 16
    assert p.read_bytes() == b"".join(bytes([i]) * 65536 for i in range(16))


async def test_close_is_shielded_from_cancellation(driver: str, tmp_path: Path) -> None:
    before = open_fds()
    p = tmp_path / "s.bin"
    with anyio.CancelScope() as scope:
        f = await aiopg_io.open(p, "wb", driver=driver)
        await f.write(b"buffered, not yet written")
        scope.cancel()
        await f.aclose()  # flushes and closes anyway, then raises the cancellation
    assert scope.cancelled_caught
    assert f.closed
    assert p.read_bytes() == b"buffered, not yet written"
    assert open_fds() == before

