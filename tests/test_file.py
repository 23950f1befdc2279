"""Round trips of every call of the binary file API, with random data, on every driver x loop."""

from __future__ import annotations

import errno
import io
import os
import random
import sys
from collections.abc import Awaitable
from pathlib import Path

import anyio
import pytest

import aiopg_io
from aiopg_io.drivers import Driver, Op, OpKind
from tests.conftest import open_fds, rand

pytestmark = pytest.mark.anyio


async def test_write_then_read_back(driver: str, tmp_path: Path) -> None:
    data = rand(1_000_003)
    p = tmp_path / "f.bin"
    async with aiopg_io.open(p, "wb", driver=driver) as f:
        assert f.driver == driver
        assert await f.write(data[:10]) == 10
        assert await f.write(memoryview(data)[10:]) == len(data) - 10
    assert p.read_bytes() == data
    async with aiopg_io.open(p, "rb", driver=driver) as f:
        assert await f.read(5) == data[:5]
        assert await f.read1(7) == data[5:12]
        buf = bytearray(100)
        assert await f.readinto(buf) == 100 and bytes(buf) == data[12:112]
        assert await f.readinto1(buf) == 100 and bytes(buf) == data[112:212]
        assert await f.tell() == 212
        assert await f.read() == data[212:]
        assert await f.read() == b""
        assert await f.readall() == b""
        assert await f.seek(-10, os.SEEK_END) == len(data) - 10
        assert await f.read(100) == data[-10:]
        assert await f.seek(3) == 3
        assert await f.seek(4, os.SEEK_CUR) == 7
        assert await f.read(3) == data[7:10]


async def test_awaited_open_and_properties(driver: str, tmp_path: Path) -> None:
    p = tmp_path / "p.bin"
    f = await aiopg_io.open(p, "w+b", driver=driver)
    try:
        assert f.name == str(p)
        assert f.mode == "rb+"
        assert not f.closed
        assert f.readable() and f.writable() and f.seekable() and not f.isatty()
        assert isinstance(f.fileno(), int)
        assert f.alignment is None and not f.direct
    finally:
        await f.close()
    assert f.closed
    await f.aclose()  # idempotent


async def test_pread_and_preadinto_start_as_tasks(driver: str, tmp_path: Path) -> None:
    """What pread/preadinto return is a coroutine to whatever takes only coroutines (a task
    group's start_soon, asyncio.create_task), on the fast path (io_uring_c, cached pages)
    as on the others."""
    import sniffio

    data = rand(8192, 7)
    p = tmp_path / "t.bin"
    p.write_bytes(data)
    got: list[object] = []
    async with aiopg_io.open(p, "rb", driver=driver) as f:
        await f.pread(8192, 0)  # cached
        bufs = [bytearray(100) for _ in range(20)]

        async def keep(aw: Awaitable[bytes]) -> None:
            got.append(await aw)

        async with anyio.create_task_group() as tg:
            for i in range(20):  # more than one yield's worth of fast-path completions
                tg.start_soon(f.pread, 100, i * 100)
                tg.start_soon(f.preadinto, bufs[i], i * 100)
                tg.start_soon(keep, f.pread(100, i * 100))
        assert sorted(got) == sorted(data[i * 100 : i * 100 + 100] for i in range(20))  # type: ignore[type-var]
        assert [bytes(b) for b in bufs] == [data[i * 100 : i * 100 + 100] for i in range(20)]
        if sniffio.current_async_library() == "asyncio":
            import asyncio

            tasks = [asyncio.create_task(f.pread(10, i)) for i in range(40)]
            assert [await t for t in tasks] == [data[i : i + 10] for i in range(40)]


async def test_the_fast_path_calls_say_they_are_coroutine_functions(driver: str, tmp_path: Path) -> None:
    """pread, preadinto, read and readinto are plain functions returning an awaitable (for
    the io_uring_c fast path); to introspection they are coroutine functions, as aiofiles'
    are: ``inspect.iscoroutinefunction`` says so on 3.12+ (markcoroutinefunction; 3.10 and
    3.11 have no public marker), ``asyncio.iscoroutinefunction`` on every version."""
    import asyncio
    import inspect

    p = tmp_path / "c.bin"
    p.write_bytes(b"x")
    async with aiopg_io.open(p, "rb", driver=driver) as f:
        for name in ("pread", "preadinto", "read", "readinto", "readline"):
            async_def = name == "readline"  # an async def: True everywhere
            for fn in (getattr(aiopg_io.AsyncFile, name), getattr(f, name)):
                assert inspect.iscoroutinefunction(fn) is (async_def or sys.version_info >= (3, 12)), name
                if sys.version_info < (3, 14):  # deprecated there, in favour of inspect's
                    assert asyncio.iscoroutinefunction(fn), name
        assert await f.read() == b"x"  # and awaited, they are what they say


async def test_positional_calls_leave_the_cursor(driver: str, tmp_path: Path) -> None:
    data = rand(200_000, 1)
    p = tmp_path / "pos.bin"
    async with aiopg_io.open(p, "w+b", driver=driver) as f:
        assert await f.pwrite(data, 0) == len(data)
        assert await f.tell() == 0
        assert await f.pread(1000, 5000) == data[5000:6000]
        assert await f.pread(1000, len(data) - 10) == data[-10:]  # short only at EOF
        assert await f.pread(10, len(data) + 100) == b""
        buf = bytearray(4096)
        assert await f.preadinto(buf, 100) == 4096 and bytes(buf) == data[100:4196]
        bufs = [bytearray(10), bytearray(0), bytearray(3000), memoryview(bytearray(7))]
        assert await f.preadv(bufs, 50) == 3017
        assert b"".join(bytes(b) for b in bufs) == data[50:3067]
        parts = [b"abc", bytearray(b"defg"), memoryview(b"hij")]
        assert await f.pwritev(parts, 10) == 10
        await f.fsync()
        await f.fdatasync()
        assert await f.pread(12, 9) == data[9:10] + b"abcdefghij" + data[20:21]
        assert await f.tell() == 0
        assert await f.read(9) == data[:9]


async def test_concurrent_preads_from_many_tasks(driver: str, tmp_path: Path) -> None:
    data = rand(1 << 20, 2)
    p = tmp_path / "c.bin"
    p.write_bytes(data)
    results: dict[int, bytes] = {}
    async with aiopg_io.open(p, "rb", driver=driver) as f:

        async def one(off: int) -> None:
            results[off] = await f.pread(4096, off)

        async with anyio.create_task_group() as tg:
            for off in range(0, len(data), 4096):
                tg.start_soon(one, off)
    assert all(v == data[k : k + 4096] for k, v in results.items())
    assert len(results) == 256


@pytest.mark.skipif(not hasattr(sys, "getrefcount"), reason="no reference counts to compare")
async def test_a_finished_op_leaves_its_buffers(driver: str, tmp_path: Path) -> None:
    """Once a read or write has returned, nothing in the driver still refers to its buffer
    (aiopg_io.asgi reuses a body chunk only then). Found: posix_aio's and worker's threads
    kept the last op they handed over while waiting for the next; io_uring leaked every view
    given to liburing's Iovec."""
    data = rand(200_000)
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    async with aiopg_io.open(p, "r+b", buffering=0, driver=driver) as f:
        for _ in range(3):
            buf = bytearray(len(data))
            alone = sys.getrefcount(buf)
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # through the ring, not inline
            assert await f.preadinto(buf, 0) == len(data) and buf == data
            await anyio.sleep(0.05)  # a thread that hands completions over has gone back to wait
            assert sys.getrefcount(buf) == alone
            assert await f.pwrite(buf, 0) == len(data)
            await anyio.sleep(0.05)
            assert sys.getrefcount(buf) == alone


async def test_fallocate_truncate_and_stat(driver: str, tmp_path: Path) -> None:
    p = tmp_path / "t.bin"
    async with aiopg_io.open(p, "w+b", driver=driver) as f:
        await f.fallocate(0, 1 << 20)
        assert (await f.stat()).st_size == 1 << 20
        assert await f.pread(16, 1000) == bytes(16)
        await f.write(b"hello world")
        assert await f.truncate(5) == 5
        assert await f.tell() == 11  # truncate does not move the cursor
        assert (await f.stat()).st_size == 5
        await f.seek(0)
        assert await f.read() == b"hello"
        await f.seek(2)
        assert await f.truncate() == 2
    assert p.read_bytes() == b"he"


async def test_lines(driver: str, tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = [rng.randbytes(rng.randrange(0, 300)).replace(b"\n", b"") + b"\n" for _ in range(5000)]
    lines.append(b"no newline at the end")
    p = tmp_path / "lines.bin"
    p.write_bytes(b"".join(lines))
    async with aiopg_io.open(p, "rb", driver=driver, buffering=256) as f:
        got = [line async for line in f]
    assert got == lines
    async with aiopg_io.open(p, "rb", driver=driver) as f:
        assert await f.readline() == lines[0]
        assert await f.readline(5) == lines[1][:5]
        assert await f.readlines(1) == [lines[1][5:]]
        rest = await f.readlines()
    assert rest == lines[2:]


async def test_writes_are_buffered_and_flushed(driver: str, tmp_path: Path) -> None:
    p = tmp_path / "w.bin"
    async with aiopg_io.open(p, "wb", driver=driver, buffering=1024) as f:
        await f.write(b"a" * 100)
        assert p.read_bytes() == b""  # still in the buffer
        await f.flush()
        assert p.read_bytes() == b"a" * 100
        await f.writelines([b"b" * 2000, bytearray(b"c")])
    assert p.read_bytes() == b"a" * 100 + b"b" * 2000 + b"c"


async def test_append_mode(driver: str, tmp_path: Path) -> None:
    p = tmp_path / "a.bin"
    p.write_bytes(b"start-")
    async with aiopg_io.open(p, "a+b", driver=driver) as f:
        assert await f.tell() == 6
        await f.write(b"one-")
        await f.seek(0)
        assert await f.read(3) == b"sta"
        await f.write(b"two")  # appends whatever the cursor says
        assert await f.tell() == 13
        await f.seek(0)
        assert await f.read() == b"start-one-two"


async def test_unbuffered_mode(driver: str, tmp_path: Path) -> None:
    p = tmp_path / "u.bin"
    async with aiopg_io.open(p, "w+b", buffering=0, driver=driver) as f:
        await f.write(b"xyz")
        assert p.read_bytes() == b"xyz"
        await f.seek(0)
        assert await f.read(2) == b"xy"


async def test_open_by_fd_and_opener(driver: str, tmp_path: Path) -> None:
    p = tmp_path / "fd.bin"
    p.write_bytes(b"0123456789")
    fd = os.open(p, os.O_RDONLY)
    async with aiopg_io.open(fd, "rb", driver=driver) as f:
        assert await f.read() == b"0123456789"
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with the file, as open(fd) does by default
    seen: list[int] = []

    def opener(path: str, flags: int) -> int:
        seen.append(flags)
        return os.open(path, flags | os.O_NOATIME)

    async with aiopg_io.open(p, "rb", driver=driver, opener=opener) as f:
        assert await f.pread(3, 2) == b"234"
    assert seen and seen[0] & os.O_CLOEXEC


def _drive(d: Driver, ops: list[Op], timeout: float = 10.0) -> list[Op]:
    """Submit ``ops`` and reap until all are back, as an IOContext would (no event loop)."""
    import select

    d.submit(ops)
    got: list[Op] = []
    while len(got) < len(ops):
        fd = d.fileno()
        if fd is not None and d.capabilities.asynchronous:
            assert select.select([fd], [], [], timeout)[0], "no completion signalled"
        got += d.reap()
    return got


def test_every_driver_keeps_the_protocol(driver: str, tmp_path: Path) -> None:
    """The contract of drivers/base.py, on each driver that runs here: a batch of every op
    kind comes back through reap, once each, REAPED; an op that cannot start fails alone
    with its errno; the completion fd goes quiet once reaped; close drains what is in flight
    and is idempotent; submit after close raises RuntimeError."""
    import select

    from aiopg_io.drivers import DriverSpec, OpState

    p = tmp_path / "proto.bin"
    data = rand(3 * 4096, 9)
    p.write_bytes(data)
    fd = os.open(p, os.O_RDWR)
    bad_fd = 1 << 20  # above any fd this process has (a closed number would be reused at once)
    d = DriverSpec(driver).create()
    try:
        r1, r2, r3 = bytearray(4096), bytearray(100), bytearray(50)
        new = rand(4096, 10)
        ops = [
            Op(OpKind.READ, fd, 0, (memoryview(r1),), keepalive=r1, path=str(p)),
            Op(OpKind.READV, fd, 4096, (memoryview(r2), memoryview(r3)), keepalive=(r2, r3)),
            Op(OpKind.WRITE, fd, 8192, (memoryview(new),), path=str(p)),
            Op(OpKind.WRITEV, fd, 3 * 4096, (memoryview(b"ab"), memoryview(b"cd"))),
            Op(OpKind.READ, bad_fd, 0, (memoryview(bytearray(8)),), path="gone"),
            Op(OpKind.FSYNC, fd),
            Op(OpKind.FDATASYNC, fd),
            Op(OpKind.FALLOCATE, fd, 0, length=5 * 4096),
            Op(OpKind.NOP, fd),
        ]
        got = _drive(d, ops)
        assert sorted(map(id, got)) == sorted(map(id, ops))
        assert all(op.state is OpState.REAPED for op in ops)
        assert [op.result for op in ops[:4]] == [4096, 150, 4096, 4]
        assert bytes(r1) == data[:4096] and bytes(r2) + bytes(r3) == data[4096:4246]
        bad = ops[4]
        assert bad.result is None and isinstance(bad.error, OSError) and bad.error.errno == errno.EBADF
        assert bad.error.filename == "gone"
        assert all(op.error is None and op.result == 0 for op in ops[5:])
        (trunc,) = _drive(d, [Op(OpKind.FTRUNCATE, fd, length=8192 + 10)])
        assert trunc.error is None
        assert p.read_bytes() == data[:8192] + new[:10]
        assert d.reap() == []
        if d.fileno() is not None and d.capabilities.asynchronous:
            assert select.select([d.fileno()], [], [], 0)[0] == []
        stats = d.statistics()
        assert (stats.submitted, stats.completed, stats.in_flight) == (10, 10, 0)
        # Close with ops in flight: each comes back, done (with its result or ECANCELED).
        bufs = [bytearray(4096) for _ in range(32)]
        late = [Op(OpKind.READ, fd, 0, (memoryview(b),), keepalive=b) for b in bufs]
        d.submit(late)
        back = d.reap() + d.close()
        assert sorted(map(id, back)) == sorted(map(id, late))
        for op in late:
            assert op.state is OpState.REAPED
            assert op.result == 4096 or (op.error is not None and op.error.errno == errno.ECANCELED)
        assert d.close() == []
        with pytest.raises(RuntimeError, match="closed"):
            d.submit([Op(OpKind.NOP, fd)])
    finally:
        d.close()
        os.close(fd)


async def test_driver_choice_argument_then_environment_then_auto(
    driver: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiopg_io.drivers import auto_order, unavailable_reason

    p = tmp_path / "choice.bin"
    p.write_bytes(b"abc")
    other = "sync" if driver != "sync" else "worker"
    monkeypatch.setenv("AIOPG_IO_DRIVER", driver)
    async with aiopg_io.open(p, "rb") as f, aiopg_io.open(p, "rb", driver=other) as g:
        assert (f.driver, g.driver) == (driver, other)  # the argument wins over the environment
        assert await f.pread(3, 0) == await g.pread(3, 0) == b"abc"
    monkeypatch.setenv("AIOPG_IO_DRIVER", "worker:threads=3")
    async with aiopg_io.open(p, "rb") as f:
        assert f.driver == "worker" and f._ctx.driver.statistics().extra == (("threads", 3),)
    monkeypatch.delenv("AIOPG_IO_DRIVER")
    best = next(n for n in auto_order() if unavailable_reason(n) is None)
    async with aiopg_io.open(p, "rb") as f, aiopg_io.open(p, "rb", driver="auto") as g:
        assert f.driver == g.driver == best
        assert await f.read() == b"abc"


async def test_peek_as_buffered_reader(driver: str, tmp_path: Path) -> None:
    """io.BufferedReader.peek: what the buffer holds (the size is a hint), else one read;
    the cursor does not move; b"" only at end of file."""
    data = rand(200_000, seed=3)
    p = tmp_path / "peek.bin"
    p.write_bytes(data)
    async with aiopg_io.open(p, "rb", driver=driver) as f:
        first = await f.peek(1)
        assert len(first) >= 1 and data.startswith(first)
        assert await f.peek() == first == await f.peek(-5)  # buffered: no second read
        assert await f.tell() == 0
        assert await f.read(10) == data[:10]
        assert await f.peek(10**9) == first[10:]  # what is buffered, not more
        await f.seek(len(first))  # buffer used up: one read, at least one byte
        assert (await f.peek(1)).startswith(data[len(first) : len(first) + 1])
        await f.seek(len(data) - 3)
        assert await f.peek(100) == data[-3:]
        assert await f.read() == data[-3:]
        assert await f.peek(1) == b""
    async with aiopg_io.open(p, "r+b", driver=driver) as f:
        await f.write(b"new")  # peek flushes writes first and sees them, as BufferedRandom
        await f.seek(0)
        assert (await f.peek(3))[:3] == b"new"
    async with aiopg_io.open(p, "rb", buffering=0, driver=driver) as f:
        assert await f.peek(5) == b"new" + data[3:5]  # unbuffered: the size read, nothing kept
        assert await f.read(4) == b"new" + data[3:4]


async def test_read1_returns_what_is_buffered(driver: str, tmp_path: Path) -> None:
    """io.BufferedReader.read1: the buffered bytes when there are any (at most n), else
    one read; any negative n means all that one read or the buffer gives."""
    data = rand(300_000, seed=4)
    p = tmp_path / "r1.bin"
    p.write_bytes(data)
    async with aiopg_io.open(p, "rb", driver=driver) as f:
        assert await f.read(10) == data[:10]
        held = len(await f.peek())
        assert await f.read1(held + 1000) == data[10 : 10 + held]  # fewer than asked
        got = await f.read1(-7)  # empty buffer: one read
        assert got and got == data[10 + held : 10 + held + len(got)]
        assert await f.read1(0) == b""
    async with aiopg_io.open(p, "rb", buffering=0, driver=driver) as f:
        assert await f.read1(5) == data[:5]


async def test_detach_binary_gives_the_raw_file(driver: str, tmp_path: Path) -> None:
    """As io.BufferedRandom.detach and aiofiles' detach: the raw file, a synchronous
    io.FileIO that owns the fd, at this file's cursor (its read-ahead is not lost)."""
    data = rand(100_000, seed=5)
    p = tmp_path / "d.bin"
    p.write_bytes(data)
    before = open_fds()
    f = await aiopg_io.open(p, "r+b", driver=driver)
    assert await f.read(7) == data[:7]
    await f.write(b"written")  # still buffered: detach writes it out
    raw = f.detach()
    assert type(raw) is io.FileIO
    assert raw.name == str(p) and raw.mode == "rb+" and not raw.closed
    assert raw.tell() == 14
    assert p.read_bytes()[7:14] == b"written"
    assert raw.read(3) == data[14:17]
    assert raw.write(b"raw") == 3
    for sync_call in (f.fileno, f.readable, f.detach, lambda: f.closed, lambda: f.name):
        with pytest.raises(ValueError, match=r"^raw stream has been detached$"):
            sync_call()
    for call in (f.read(1), f.peek(), f.read1(1), f.write(b"x"), f.seek(0), f.pread(1, 0), f.aclose()):
        with pytest.raises(ValueError, match=r"^raw stream has been detached$"):
            await call
    assert repr(f) == "<aiopg_io.AsyncFile detached>"
    raw.close()
    assert open_fds() == before
    assert p.read_bytes() == data[:7] + b"written" + data[14:17] + b"raw" + data[20:]

    # An append-mode file: the raw file appends, and starts where this file's cursor was.
    f = await aiopg_io.open(p, "a+b", driver=driver)
    await f.seek(3)
    assert await f.read(2) == data[3:5]
    raw = f.detach()
    assert raw.mode == "ab+" and raw.tell() == 5 and raw.read(2) == data[5:7]
    raw.write(b"end")
    raw.close()
    assert p.read_bytes()[-3:] == b"end"
    assert open_fds() == before


async def test_detach_refused_while_another_task_uses_the_file(driver: str) -> None:
    if driver == "sync":
        pytest.skip("the sync driver blocks the loop in a read of an empty pipe")
    r, w = os.pipe()
    try:
        f = await aiopg_io.open(r, "rb", closefd=False, driver=driver)
        async with anyio.create_task_group() as tg:
            tg.start_soon(f.read, 1)  # waits on the empty pipe
            while f.driver_statistics().in_flight == 0:
                await anyio.sleep(0)
            with pytest.raises(RuntimeError, match="while another task's call on it is still running"):
                f.detach()
            os.close(w)  # end of file: the read (which continues short reads) returns
        raw = f.detach()  # nothing in flight now
        assert not raw.closed and raw.name == r
        raw.close()  # closefd=False, as the file was opened: r stays open
    finally:
        os.close(r)


async def test_limiter_is_accepted_everywhere(driver: str, tmp_path: Path) -> None:
    p = tmp_path / "lim2.txt"
    limiter = anyio.CapacityLimiter(2)
    async with aiopg_io.open(p, "w", encoding="utf-8", driver=driver, limiter=limiter) as t:
        assert t.limiter is limiter
        await t.write("text")
    async with aiopg_io.open(p, "rb", driver=driver) as f:
        assert f.limiter is None and await f.read() == b"text"
    assert limiter.borrowed_tokens == 0


async def test_peek_read1_detach_bad_input_as_python(driver: str, tmp_path: Path) -> None:
    """What io.BufferedRandom raises, by type: a size that is no integer is a TypeError (None
    too, for read1 and peek); negative sizes are allowed (peek ignores its size, read1 reads
    what one read gives); a file not open for reading raises io.UnsupportedOperation."""
    p = tmp_path / "bad.bin"
    p.write_bytes(b"0123456789")
    with open(p, "r+b") as py:  # the reference
        for bad in ("1", 1.5, None):
            for name in ("peek", "read1"):
                with pytest.raises(TypeError):
                    getattr(py, name)(bad)
    async with aiopg_io.open(p, "r+b", driver=driver) as f:
        for bad in ("1", 1.5, None):
            with pytest.raises(TypeError, match=f"^size must be an integer, not {type(bad).__name__}$"):
                await f.peek(bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match=f"^size must be an integer, not {type(bad).__name__}$"):
                await f.read1(bad)  # type: ignore[arg-type]
        assert (await f.peek(-1))[:2] == b"01" and await f.read1(-5) == b"0123456789"
    f = await aiopg_io.open(p, "ab", driver=driver)
    for call in (f.peek(1), f.read1(1)):
        with pytest.raises(io.UnsupportedOperation, match=r"is not open for reading \(mode 'ab'\)"):
            await call
    f.detach().close()  # a write-only file detaches too
    assert p.read_bytes() == b"0123456789"
