"""The file calls' ring path on ``io_uring_c`` (``_uring.c``: RunPath, RingRun, RingWait):
``preadinto``, ``pwrite`` and a buffered ``pread`` that go to the ring are staged from C, with
no coroutine of the file's or the context's (parked on a loop future on asyncio and uvloop,
through the glue's wait on trio); every other case takes the pure coroutine, which words
every error. Checked on every loop: the data, the errors (the same as the pure driver's), that the
op went through C (the driver's ``c_runs`` counter) exactly where it should, and cancellation:
an op cancelled after it reached the ring is cancelled there, its task waits for its CQE, and
nothing is completed twice or left counted."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiopg_io
from aiopg_io import AsyncFile
from aiopg_io.drivers import unavailable_reason
from tests.conftest import evict, open_fds

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(unavailable_reason("io_uring_c") is not None, reason="io_uring_c cannot run here"),
]

PAGE = 4096


def _runs(f: AsyncFile) -> int:
    return int(dict(f.driver_statistics().extra)["c_runs"])


def _hits(f: AsyncFile) -> int:
    return int(dict(f.driver_statistics().extra)["fast_path_hits"])


async def test_direct_and_buffered_transfers_go_through_c(anyio_backend: Any, data_dir: Path) -> None:
    if unavailable_reason("io_uring_c", direct=True) is not None:
        pytest.skip("io_uring_c cannot run direct I/O here")
    p = data_dir / "f.bin"
    data = os.urandom(16 * PAGE)
    p.write_bytes(data)
    evict(p)
    calls = 0
    async with aiopg_io.open(p, "r+b", direct=True, driver="io_uring_c") as f:
        before = _runs(f)
        buf = aiopg_io.aligned_buffer(2 * PAGE)
        assert await f.preadinto(buf, 3 * PAGE) == 2 * PAGE and bytes(buf) == data[3 * PAGE : 5 * PAGE]
        bufs = [aiopg_io.aligned_buffer(PAGE) for _ in range(8)]
        got = await _gather(*(f.preadinto(b, i * PAGE) for i, b in enumerate(bufs)))
        assert got == [PAGE] * 8 and b"".join(bytes(b) for b in bufs) == data[: 8 * PAGE]
        out = aiopg_io.aligned_buffer(PAGE)
        out[:] = b"w" * PAGE
        assert await f.pwrite(out, 15 * PAGE) == PAGE
        assert await f.preadinto(buf, 15 * PAGE) == PAGE and bytes(buf[:PAGE]) == b"w" * PAGE  # EOF: short
        calls += 11
        direct_runs = _runs(f) - before
    async with aiopg_io.open(p, "r+b", driver="io_uring_c") as f:
        before, hits_before = _runs(f), _hits(f)
        assert await f.pwrite(b"hello", 7) == 5
        assert await f.pwrite(memoryview(b"--abc--")[2:5], 20) == 3
        evict(p)
        buf2 = bytearray(3 * PAGE)
        assert await f.preadinto(buf2, 14 * PAGE) == 2 * PAGE  # a miss, short at EOF
        evict(p)
        assert await f.pread(3 * PAGE, 2 * PAGE) == data[2 * PAGE : 5 * PAGE]  # a miss
        evict(p)
        tail = await f.pread(2 * PAGE, 15 * PAGE)  # a miss, short at EOF
        assert await f.pread(10, 17 * PAGE) == b""  # past EOF: the fast path says so
        calls += 5
        buffered_runs = _runs(f) - before
        # POSIX_FADV_DONTNEED may leave a page cached (one in another CPU's LRU batch, on a
        # loaded machine): such a read is the fast path's, never the pure twin's. So every call
        # is counted by one of the two; the read past EOF is the fast path's.
        cached_misses = _hits(f) - hits_before - 1
    want = data[:7] + b"hello" + data[12:20] + b"abc" + data[23 : 15 * PAGE] + b"w" * PAGE
    assert p.read_bytes() == want and bytes(buf2[: 2 * PAGE]) == want[14 * PAGE :]
    assert tail == want[15 * PAGE :] and len(tail) == PAGE
    assert direct_runs == 11 and buffered_runs >= 2  # the writes are staged in C
    assert direct_runs + buffered_runs + cached_misses == calls


async def _gather(*aws: Any) -> list[Any]:
    out: list[Any] = [None] * len(aws)

    async def one(i: int, aw: Any) -> None:
        out[i] = await aw

    async with anyio.create_task_group() as tg:
        for i, aw in enumerate(aws):
            tg.start_soon(one, i, aw)
    return out


async def _error(aw: Any) -> BaseException:
    try:
        await aw
    except Exception as exc:
        return exc
    raise AssertionError("no error")


async def test_what_c_does_not_take_goes_to_the_pure_path(anyio_backend: Any, data_dir: Path) -> None:
    """Each call here is declined by C (the count does not move) and the pure coroutine
    raises exactly what it raises on the pure driver."""
    p = data_dir / "f.bin"
    p.write_bytes(bytes(4 * PAGE))
    direct = unavailable_reason("io_uring_c", direct=True) is None

    async def errors(driver: str) -> tuple[list[str], int]:
        seen: list[str] = []
        async with aiopg_io.open(p, "rb", driver=driver) as ro:
            runs = _runs(ro) if driver == "io_uring_c" else 0
            for aw in (
                ro.preadinto(b"read-only", 0),
                ro.preadinto(bytearray(8), -1),
                ro.preadinto(bytearray(8), 1.5),
                ro.preadinto(memoryview(bytearray(8))[::2], 0),
                ro.pwrite(b"x", 0),
                ro.pread(-1, 0),
                ro.pread(8, -5),
                ro.pread(2**70, 0),
            ):
                exc = await _error(aw)
                seen.append(f"{type(exc).__name__}: {exc}")
            assert await ro.preadinto(bytearray(0), 0) == 0
            assert await ro.pread(0, 0) == b""
            if driver == "io_uring_c":
                runs = _runs(ro) - runs
        if direct:
            async with aiopg_io.open(p, "r+b", direct=True, driver=driver) as d:
                before = _runs(d) if driver == "io_uring_c" else 0
                for aw in (
                    d.preadinto(aiopg_io.aligned_buffer(PAGE), 100),
                    d.preadinto(aiopg_io.aligned_buffer(2 * PAGE)[1 : PAGE + 1], 0),
                    d.pwrite(bytes(100), 0),
                ):
                    exc = await _error(aw)
                    seen.append(f"{type(exc).__name__}: {exc}")
                if driver == "io_uring_c":
                    runs += _runs(d) - before
        async with aiopg_io.open(p, "r+b", driver=driver) as w:
            pass
        for aw in (w.preadinto(bytearray(8), 0), w.pwrite(b"x", 0)):
            exc = await _error(aw)
            seen.append(f"{type(exc).__name__}: {exc}")
        return [re.sub(r"0x[0-9a-f]+", "ADDR", s) for s in seen], runs

    c_errors, runs = await errors("io_uring_c")
    pure_errors, _ = await errors("io_uring")
    assert runs == 0
    assert c_errors == pure_errors
    assert c_errors[0].startswith("TypeError") and c_errors[1].startswith("InvalidOffsetError")
    assert c_errors[4].startswith("UnsupportedOperation") and c_errors[-1].startswith("ClosedError")


async def test_a_kernel_error_is_the_same_as_the_pure_drivers(anyio_backend: Any, tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"")

    async def error(driver: str) -> tuple[str, int]:
        async with aiopg_io.open(p, "r+b", driver=driver) as f:
            before = _runs(f) if driver == "io_uring_c" else 0
            exc = await _error(f.pwrite(b"x", 2**63 - 2))  # past any file size the kernel takes
            return f"{type(exc).__name__}: {exc}", (_runs(f) - before if driver == "io_uring_c" else 0)

    c, runs = await error("io_uring_c")
    assert (c, runs) == ((await error("io_uring"))[0], 1)
    assert c.startswith("OSError: [Errno 27]") and str(p) in c  # EFBIG, naming the file


async def test_an_unawaited_call_does_nothing(anyio_backend: Any, tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"0123456789")
    async with aiopg_io.open(p, "r+b", driver="io_uring_c") as f:
        before = _runs(f)
        aw: Any = f.pwrite(b"xx", 0)
        aw.close()  # never awaited: nothing staged, as for a coroutine
        del aw
        assert await f.pwrite(b"ab", 2) == 2
        assert _runs(f) - before == 1
    assert p.read_bytes() == b"01ab456789"


@pytest.mark.parametrize("steps", [0, 1, 2, 3])
async def test_cancelled_reads_are_cancelled_through_the_ring(
    anyio_backend: Any, data_dir: Path, steps: int
) -> None:
    """Cancelled before the flush (dropped), or after (cancelled through the ring, the task
    waiting for the CQE): each read either returned its data or was cancelled, the file and
    the context count nothing left, and the file goes on working."""
    if unavailable_reason("io_uring_c", direct=True) is not None:
        pytest.skip("io_uring_c cannot run direct I/O here")
    p = data_dir / "f.bin"
    data = os.urandom(64 * PAGE)
    p.write_bytes(data)
    results: dict[int, int] = {}
    async with aiopg_io.open(p, "rb", direct=True, driver="io_uring_c") as f:
        bufs = [aiopg_io.aligned_buffer(PAGE) for _ in range(64)]
        before = _runs(f)
        with anyio.CancelScope() as scope:

            async def read(i: int) -> None:
                results[i] = await f.preadinto(bufs[i], i * PAGE)

            async with anyio.create_task_group() as tg:
                for i in range(64):
                    tg.start_soon(read, i)
                for _ in range(steps):
                    await anyio.lowlevel.checkpoint()
                scope.cancel()
        for i, n in results.items():
            assert n == PAGE and bytes(bufs[i]) == data[i * PAGE : (i + 1) * PAGE]
        assert f._in_flight == 0 and f._ctx._in_flight == 0
        assert f.driver_statistics().in_flight == 0
        assert _runs(f) - before == 64  # every read was staged from C
        assert await f.preadinto(bufs[0], 5 * PAGE) == PAGE and bytes(bufs[0]) == data[5 * PAGE : 6 * PAGE]


async def test_direct_cancellation_storm_with_canaries(anyio_backend: Any, data_dir: Path) -> None:
    """Direct reads and writes through C, cancelled at random points: a page of canary on
    each side of every buffer stays intact, a read that returned has its data, a buffer is
    never written after its call ended, and nothing is left counted or open."""
    if unavailable_reason("io_uring_c", direct=True) is not None:
        pytest.skip("io_uring_c cannot run direct I/O here")
    rng = random.Random(7)
    p = data_dir / "storm.bin"
    data = rng.randbytes(256 * PAGE)
    p.write_bytes(data)
    before = open_fds()
    done = cancelled = 0
    async with aiopg_io.open(p, "r+b", direct=True, driver="io_uring_c") as f:
        runs = _runs(f)

        async def one(i: int) -> None:
            nonlocal done, cancelled
            page = rng.randrange(256)
            mem = aiopg_io.aligned_buffer(3 * PAGE)
            mem[:PAGE] = b"\xa5" * PAGE
            mem[2 * PAGE :] = b"\x5a" * PAGE
            view = memoryview(mem)[PAGE : 2 * PAGE]
            with anyio.move_on_after(rng.choice((0, 0, 1e-5, 1e-4, 1e-3))) as scope:
                if i % 4 == 0:
                    view[:] = data[page * PAGE : (page + 1) * PAGE]  # same bytes: content stays known
                    assert await f.pwrite(view, page * PAGE) == PAGE
                else:
                    assert await f.preadinto(view, page * PAGE) == PAGE
                    assert view == data[page * PAGE : (page + 1) * PAGE]
            if scope.cancelled_caught:
                cancelled += 1
            else:
                done += 1
            snapshot = bytes(mem)
            await anyio.sleep(0)
            assert bytes(mem) == snapshot  # the op is over: nothing writes into it any more
            assert mem[:PAGE] == b"\xa5" * PAGE and mem[2 * PAGE :] == b"\x5a" * PAGE

        async with anyio.create_task_group() as tg:
            for i in range(2000):
                tg.start_soon(one, i)
                if i % 64 == 0:
                    await anyio.sleep(0)
        assert f._in_flight == 0 and f._ctx._in_flight == 0 and f.driver_statistics().in_flight == 0
        runs = _runs(f) - runs
    assert done + cancelled == 2000 and cancelled > 0
    assert runs > 0
    assert p.read_bytes() == data
    assert open_fds() == before
