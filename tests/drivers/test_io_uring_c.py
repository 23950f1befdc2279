"""The io_uring_c driver (the C ring, aiopg_io/drivers/_uring.c) against its pure twin.

The whole matrix runs on it (tests/conftest.py: it is what ``auto`` picks); these are its own
checks: the ring's own contract (SQ full, refused arguments, close), data
read back through the driver and through ``aiopg_io.open`` on every loop, the same results
as the pure driver for the same ops, and the pure path forced by AIOPG_IO_PURE=1.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiopg_io
from aiopg_io.drivers import Driver
from aiopg_io.drivers.base import (
    AT_FDCWD,
    AT_SYMLINK_NOFOLLOW,
    STATX_BASIC_STATS,
    STATX_SIZE,
    Op,
    OpKind,
    OpState,
)
from aiopg_io.drivers.io_uring import IoUringDriver
from aiopg_io.drivers.io_uring_c import IoUringCDriver, compiled_status

from .._driving import wait_all, write_sync_op
from ..conftest import evict, open_fds

_REASON = IoUringCDriver.unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"io_uring_c cannot run here: {_REASON}")

PAGE = 4096


@pytest.fixture
def ring() -> Iterator[object]:
    from aiopg_io.drivers import _uring

    r = _uring.Ring(4)
    yield r
    r.close()


def test_ring_sq_full_refused_arguments_and_close(ring: object, tmp_path: Path) -> None:
    from aiopg_io.drivers import _uring

    r: object = ring
    assert r.sq_entries == 4 and r.cq_entries == 8  # type: ignore[attr-defined]
    assert all(r.prep_nop(i + 1) for i in range(4))  # type: ignore[attr-defined]
    assert r.prep_nop(9) is False  # type: ignore[attr-defined]  # full: nothing taken
    assert r.submit() == 0  # type: ignore[attr-defined]
    with pytest.raises(OverflowError, match="offset -1 is negative"):
        r.prep_readv(0, _uring.iovec([memoryview(bytearray(8))], True), -1, 1)  # type: ignore[attr-defined]
    with pytest.raises(BufferError):
        _uring.iovec([memoryview(b"read-only")], True)
    with pytest.raises(ValueError, match="0 buffers"):
        _uring.iovec([], False)
    ops = r.probe()  # type: ignore[attr-defined]
    assert ops is None or {0, 1, 2, 3} <= ops  # nop, readv, writev, fsync (5.1)
    fd = r.fd  # type: ignore[attr-defined]
    r.close()  # type: ignore[attr-defined]
    r.close()  # type: ignore[attr-defined]  # idempotent
    assert r.fd == -1  # type: ignore[attr-defined]
    with pytest.raises(OSError) as closed:
        os.fstat(fd)  # the ring fd is closed (nothing opened since could have taken it)
    assert closed.value.errno == errno.EBADF
    with pytest.raises(RuntimeError, match="ring is closed"):
        r.submit()  # type: ignore[attr-defined]


@pytest.mark.parametrize("fast_path", [True, False])
def test_same_results_as_the_pure_driver(tmp_path: Path, fast_path: bool) -> None:
    """The differential check: one batch of reads (whole, short at EOF, past EOF, vectored),
    writes, syncs, a truncate and a bad fd through both drivers; results must agree."""
    data = os.urandom(5 * PAGE + 123)

    def run(cls: type[IoUringDriver]) -> list[tuple[object, ...]]:
        p = tmp_path / f"{cls.name}.bin"
        p.write_bytes(data)
        fd = os.open(p, os.O_RDWR)
        d = cls(nowait_fast_path=fast_path, entries=4)
        try:
            bufs = [bytearray(n) for n in (PAGE, 2 * PAGE, PAGE, 100, 7)]
            reads = [
                Op(OpKind.READ, fd, 0, (memoryview(bufs[0]),)),
                Op(OpKind.READ, fd, 4 * PAGE, (memoryview(bufs[1]),)),  # short: EOF
                Op(OpKind.READ, fd, 10 * PAGE, (memoryview(bufs[2]),)),  # past EOF: 0
                Op(OpKind.READV, fd, 123, (memoryview(bufs[3]), memoryview(bufs[4]))),
                Op(OpKind.READ, 987654, 0, (memoryview(bytearray(8)),), path="nowhere"),
                Op(OpKind.NOP, -1),
            ]
            # Ops of one batch run concurrently: the size changes go in a later batch.
            writes = [
                Op(OpKind.WRITE, fd, 6 * PAGE, (memoryview(b"w" * 300),)),
                Op(OpKind.FTRUNCATE, fd, length=7 * PAGE),
            ]
            ops = [*reads, *writes, Op(OpKind.FDATASYNC, fd)]
            for batch in (reads, writes, ops[-1:]):
                d.submit(batch)
                wait_all(d, batch)
            out = [
                (op.kind, op.result, None if op.error is None else (op.error.errno, op.error.filename))
                for op in ops
            ]
            out.append(tuple(bytes(b) for b in bufs))
            out.append((os.fstat(fd).st_size, os.pread(fd, 300, 6 * PAGE)))
            return out
        finally:
            d.close()
            os.close(fd)

    assert run(IoUringCDriver) == run(IoUringDriver)


def test_cancel_waits_for_the_cqe_and_close_leaves_nothing_open() -> None:
    before = open_fds()
    rfd, wfd = os.pipe()
    d = IoUringCDriver()
    try:
        op = Op(OpKind.READ, rfd, 0, (memoryview(bytearray(64)),))
        d.submit([op])
        d.cancel(op)
        assert op.state is OpState.SUBMITTED  # the buffer stays the kernel's until the CQE
        wait_all(d, [op], timeout=5)
        assert isinstance(op.error, OSError) and op.error.errno == errno.ECANCELED
        stuck = Op(OpKind.READ, rfd, 0, (memoryview(bytearray(64)),))
        d.submit([stuck])
        assert d.close() == [stuck]  # close cancels what is in flight and waits for it
        assert stuck.error is not None and stuck.error.errno == errno.ECANCELED
    finally:
        d.close()
        os.close(rfd)
        os.close(wfd)
    assert open_fds() == before


@pytest.mark.anyio
async def test_open_reads_back_on_every_loop(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    data = os.urandom(8 * PAGE)
    p.write_bytes(data)
    async with aiopg_io.open(p, "r+b", driver="io_uring_c") as f:
        assert f.driver == "io_uring_c"
        buf = bytearray(PAGE)
        assert await f.preadinto(buf, 3 * PAGE) == PAGE and bytes(buf) == data[3 * PAGE : 4 * PAGE]
        assert await f.pwrite(b"x" * 10, 5) == 10
        assert await f.pread(20, 0) == data[:5] + b"x" * 10 + data[15:20]


def test_pure_forced_by_environment() -> None:
    assert compiled_status()[0] is True
    code = (
        "from aiopg_io.drivers import unavailable_reason as r\n"
        "from aiopg_io._info import machine_matrix as m\n"
        "print(r('io_uring_c')); print(m().compiled)"
    )
    env = dict(os.environ, AIOPG_IO_PURE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    reason, compiled = out.stdout.splitlines()
    assert reason == "AIOPG_IO_PURE=1 forces the pure-Python path"
    assert compiled == "pure Python (AIOPG_IO_PURE=1 forces the pure-Python path)"


def test_fast_path_in_c_matches_its_python_twin(tmp_path: Path) -> None:
    """try_inline on the same ops through the C fast path and the pure driver's: whole,
    short at EOF (C hands the rest to the twin), past EOF, vectored, an fd of unknown mode
    (the twin asks fcntl), a read-only buffer and a pipe (both left to the ring), an op not
    IDLE; then the same states, results, bytes and counters, and nothing after close."""
    data = os.urandom(5 * PAGE + 123)
    p = tmp_path / "f.bin"
    p.write_bytes(data)

    def run(cls: type[IoUringDriver]) -> list[object]:
        fd = os.open(p, os.O_RDONLY)
        rfd, wfd = os.pipe()
        d = cls(nowait_fast_path=True)
        try:
            bufs = [bytearray(n) for n in (PAGE, 2 * PAGE, PAGE, 100, 7, 50)]
            ops = [
                Op(OpKind.READ, fd, PAGE, (memoryview(bufs[0]),), direct=False),
                Op(OpKind.READ, fd, 4 * PAGE, (memoryview(bufs[1]),), direct=False),
                Op(OpKind.READ, fd, 9 * PAGE, (memoryview(bufs[2]),), direct=False),
                Op(OpKind.READV, fd, 5, (memoryview(bufs[3]), memoryview(bufs[4])), direct=False),
                Op(OpKind.READ, fd, 77, (memoryview(bufs[5]),)),
                Op(OpKind.READ, fd, 0, (memoryview(b"read-only"),), direct=False),
                Op(OpKind.READ, rfd, 0, (memoryview(bytearray(8)),), direct=False),
                Op(OpKind.WRITE, fd, 0, (memoryview(b"x"),), direct=False),
                Op(OpKind.READ, fd, 3, (memoryview(bytearray(9)),), direct=False),
            ]
            ops[7].state = OpState.SUBMITTED  # not IDLE: C leaves it to the twin
            done = [d.try_inline(op) for op in ops]
            out: list[object] = [done, [(op.state, op.result, op.transferred, op.retries) for op in ops]]
            out.append([op.driver_data is not None for op in ops])
            out.append([bytes(b) for b in bufs])
            st = d.statistics()
            out.append((st.submitted, st.completed, st.short_transfers, dict(st.extra)["fast_path_hits"]))
            d.close()
            out.append(d.try_inline(Op(OpKind.READ, fd, 0, (memoryview(bytearray(8)),), direct=False)))
            return out
        finally:
            d.close()
            for f in (fd, rfd, wfd):
                os.close(f)

    c, pure = run(IoUringCDriver), run(IoUringDriver)
    assert c == pure
    assert c[0] == [True, True, True, True, True, False, False, False, True]
    assert c[-1] is False


def test_a_subclass_that_overrides_on_cqe_sees_every_completion(tmp_path: Path) -> None:
    """Whole completions are handled in C (Ring.harvest), but a driver that overrides
    _on_cqe (a fault-injecting test driver) is handed every CQE, as on the pure driver."""
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(4 * PAGE))
    seen: list[int] = []

    class Counting(IoUringCDriver):
        def _on_cqe(self, op: Op, res: int) -> bool:
            seen.append(res)
            return super()._on_cqe(op, res)

    fd = os.open(p, os.O_RDONLY)
    try:
        for cls, expect in ((IoUringCDriver, []), (Counting, [PAGE] * 3)):
            d = cls(nowait_fast_path=False)
            try:
                ops = [Op(OpKind.READ, fd, i * PAGE, (memoryview(bytearray(PAGE)),)) for i in range(3)]
                d.submit(ops)
                wait_all(d, ops)
                assert [op.result for op in ops] == [PAGE] * 3
                assert all(op.state is OpState.REAPED and op.driver_data is None for op in ops)
                assert seen == expect
            finally:
                d.close()
    finally:
        os.close(fd)


# -- the file calls' fast path (FastPath / FastRead / Done in _uring.c) ------------------------


async def _file_calls(p: Path, driver: str) -> tuple[list[object], int]:
    """The same preadinto/pread calls, with good and bad arguments, through ``driver``: each
    call's result (and the bytes read) or its error's type and message; and the fast path's
    hits (the driver's fast_path_hits)."""
    size = p.stat().st_size
    out: list[object] = []

    async def call(fn: object, *args: object) -> None:
        try:
            res = await fn(*args)  # type: ignore[operator]
        except Exception as exc:
            out.append((type(exc).__name__, str(exc)))
        else:
            out.append(res)

    async with aiopg_io.open(p, "rb", driver=driver) as f:
        before = dict(f.driver_statistics().extra)["fast_path_hits"]
        bufs = [bytearray(PAGE), bytearray(PAGE), bytearray(0), array_of_ints(), bytearray(300)]
        await call(f.preadinto, bufs[0], PAGE)  # whole
        await call(f.preadinto, bufs[1], size - 100)  # short at EOF
        await call(f.preadinto, bufs[2], 0)  # empty buffer
        await call(f.preadinto, bufs[3], 8)  # a buffer of another format: its bytes
        await call(f.preadinto, memoryview(bufs[4])[::2], 0)  # not contiguous
        await call(f.preadinto, b"read-only", 0)
        await call(f.preadinto, bufs[4], size + PAGE)  # past EOF
        await call(f.preadinto, bufs[4], True)  # bool is not an offset
        await call(f.preadinto, bufs[4], -1)
        await call(f.preadinto, bufs[4], 2**63 - 10)  # the end past off_t
        await call(f.preadinto, bufs[4], 2**70)
        await call(f.preadinto, bufs[4], 7.0)
        await call(f.pread, PAGE, 3)
        await call(f.pread, 500, size - 200)
        await call(f.pread, 0, 0)
        await call(f.pread, -1, 0)
        await call(f.pread, 10, size)
        await call(f.pread, "10", 0)
        await call(f.pread, 10, 2**63 - 5)
        await call(f.pread, 2**40, 0)  # bounded by the file's size
        out.append([bytes(b) for b in bufs])
        hits = dict(f.driver_statistics().extra)["fast_path_hits"] - before
    await call(f.preadinto, bufs[0], 0)  # closed
    await call(f.pread, 1, 0)
    return out, hits


def array_of_ints() -> object:
    import array

    return array.array("i", [0] * 16)


@pytest.mark.anyio
async def test_file_fast_path_matches_the_pure_path(tmp_path: Path) -> None:
    """preadinto/pread through the C fast path (no op, no coroutine) and through the pure
    driver: the same results, bytes and errors (type and message) for every argument, and
    the fast path did take the whole reads."""
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(5 * PAGE + 123))
    c, c_hits = await _file_calls(p, "io_uring_c")
    pure, _ = await _file_calls(p, "io_uring")
    assert c == pure
    assert c[:4] == [PAGE, 100, 0, 64] and c[6] == 0
    assert len(c[13]) == 200 and c[14] == c[16] == b"" and len(c[19]) == p.stat().st_size  # type: ignore[arg-type]
    assert all(isinstance(e, tuple) for e in (c[4], c[5], *c[7:12], c[15], c[17], c[18], c[21], c[22]))
    assert c[21] == ("ClosedError", f"I/O operation on closed file {str(p)!r}")
    assert c_hits >= 8  # whole and EOF-short reads, both calls, the bounded 2**40 read


@pytest.mark.anyio
async def test_file_fast_path_leaves_a_miss_to_the_ring(data_dir: Path) -> None:
    """Pages not in the cache: the fast path declines (EAGAIN) and the read goes through an
    op (to the ring), with the right bytes."""
    p = data_dir / "cold.bin"
    data = os.urandom(2048 * PAGE)
    p.write_bytes(data)
    evict(p)
    fd = os.open(p, os.O_RDONLY)
    try:  # far from the pages read below: a miss may start readahead around it
        os.preadv(fd, [bytearray(PAGE)], 0, os.RWF_NOWAIT)
    except BlockingIOError:
        pass
    else:
        pytest.skip("the page cache kept the file after POSIX_FADV_DONTNEED")
    finally:
        os.close(fd)
    async with aiopg_io.open(p, "rb", driver="io_uring_c") as f:
        before = f.driver_statistics()
        fast_before = f._ctx.driver.fast_reads.done
        buf = bytearray(PAGE)
        assert await f.preadinto(buf, 1500 * PAGE) == PAGE and bytes(buf) == data[1500 * PAGE : 1501 * PAGE]
        # The file's fast path declined; the op's own try (the pure twin's) may find the page
        # that the miss started reading ahead, else the ring reads it.
        assert f._ctx.driver.fast_reads.done == fast_before
        after = f.driver_statistics()
        assert after.submitted - before.submitted == 1
        # The read may have started readahead: this one may hit or miss.
        assert await f.pread(PAGE, 1900 * PAGE) == data[1900 * PAGE : 1901 * PAGE]


def test_fast_read_objects_refuse_bad_arguments_and_stop_when_disabled(tmp_path: Path) -> None:
    """The C objects alone: argument errors raise (no crash), a reader called outside its
    owner or after disable() declines, a cycle through a reader is collected, and a Done
    answers await (by send and by next) with its result."""
    import asyncio
    import gc
    import weakref

    from aiopg_io.drivers import _uring

    p = tmp_path / "f.bin"
    p.write_bytes(b"0123456789")
    fd = os.open(p, os.O_RDONLY)
    try:
        fast = _uring.FastPath()
        with pytest.raises(TypeError):
            _uring.FastPath(1)
        with pytest.raises(TypeError, match="must be callable"):
            fast.reader(fd, 3, None, None, 10)
        with pytest.raises(ValueError, match="max_read 0"):
            fast.reader(fd, object, None, None, 0)
        owner = object()
        r = fast.reader(fd, lambda: owner, owner, None, 10)
        with pytest.raises(TypeError, match="takes 2 arguments"):
            r.preadinto(bytearray(1))
        with pytest.raises(TypeError, match="takes 2 arguments"):
            r.pread(1, 2, 3)
        done = r.pread(4, 2)
        assert done is not None
        it = done.__await__()
        got = []
        try:
            while True:
                got.append(next(it))  # a yield (None) when the policy asks for one
        except StopIteration as stop:
            assert stop.value == b"2345"
        assert set(got) <= {None}
        assert asyncio.run(_await(r.pread(9, 5))) == b"56789"  # short: end of file
        assert r.pread(11, 0) is None  # more than max_read
        assert fast.reader(fd, lambda: None, owner, None, 10).pread(1, 0) is None  # not the owner

        def boom() -> object:
            raise RuntimeError("no loop")

        assert fast.reader(fd, boom, owner, None, 10).pread(1, 0) is None
        after = fast.reader(fd, lambda: owner, owner, lambda res: ("after", res), 10)
        assert after.pread(2, 0) == ("after", b"01")
        assert fast.done == 3
        # The result itself, whatever ``after``: what trio's cursor calls use after their
        # checkpoint (``checkpoints`` says the reader's awaitables checkpoint).
        assert (r.checkpoints, after.checkpoints) == (False, True)
        into = bytearray(4)
        assert after.pread_cached(3, 7) == b"789" and after.preadinto_cached(into, 1) == 4 and into == b"1234"
        assert r.pread_cached(11, 0) is None and r.preadinto_cached(bytearray(0), 0) is None
        assert fast.done == 5
        fast.disable()
        assert r.pread(1, 0) is None and r.preadinto(bytearray(1), 0) is None and fast.enabled is False
        assert r.pread_cached(1, 0) is None and r.preadinto_cached(bytearray(1), 0) is None

        class Holder:
            def __init__(self) -> None:
                self.r = fast.reader(fd, self.me, self, None, 10)  # a cycle through the reader

            def me(self) -> object:
                return self

        h = Holder()
        ref = weakref.ref(h)
        del h
        gc.collect()
        assert ref() is None
    finally:
        os.close(fd)


def test_file_fast_path_keeps_to_its_loop_across_runs_and_threads(tmp_path: Path) -> None:
    """The reader's owner check (on Python < 3.12 mostly answered without calling
    ``_get_running_loop``, see _uring.c): the owner loop takes the fast path in each of its
    runs; another thread's loop while the owner runs, and later runs of asyncio, uvloop and
    trio in the owner's thread, get WrongLoopError with no read taken by the fast path."""
    import asyncio
    import threading

    import trio
    import uvloop

    from aiopg_io.errors import WrongLoopError

    p = tmp_path / "f.bin"
    data = os.urandom(4 * PAGE)
    p.write_bytes(data)
    box: dict[str, object] = {}
    seen: list[str] = []

    def fast_done() -> int:
        return box["f"]._ctx.driver.fast_reads.done  # type: ignore[attr-defined,no-any-return]

    async def reads() -> None:
        f = box["f"]
        before = fast_done()
        for i in range(4):
            assert await f.pread(PAGE, i * PAGE) == data[i * PAGE : (i + 1) * PAGE]  # type: ignore[attr-defined]
        assert fast_done() - before == 4

    async def refused() -> None:
        before = fast_done()
        try:
            await box["f"].pread(PAGE, 0)  # type: ignore[attr-defined]
        except WrongLoopError as exc:
            seen.append(str(exc))
        assert fast_done() == before

    async def first() -> None:
        box["f"] = await aiopg_io.open(p, "rb", driver="io_uring_c")
        await reads()
        t = threading.Thread(target=lambda: asyncio.run(refused()))
        t.start()
        await asyncio.to_thread(t.join, 20)
        await reads()  # the owner again, in the same run

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(first())
        loop.run_until_complete(reads())  # the owner's next run: its own again
        asyncio.run(refused())
        uvloop.run(refused())
        trio.run(refused)
        loop.run_until_complete(reads())
        loop.run_until_complete(box["f"].aclose())  # type: ignore[attr-defined]
    finally:
        loop.close()
    assert len(seen) == 4 and all("was opened in another event loop" in m for m in seen)


async def _await(aw: object) -> object:
    return await aw  # type: ignore[misc]


async def _cursor_calls(p: Path, driver: str, buffering: int) -> tuple[list[object], int]:
    """Cursor reads that are one read each (and some that are not) through ``driver``: each
    result or error, and the cursor after it; and the fast path's hits."""
    out: list[object] = []
    async with aiopg_io.open(p, "r+b", buffering=buffering, driver=driver) as f:
        before = f._ctx.driver.fast_reads.done if driver == "io_uring_c" else 0
        big = max(buffering, 1)
        steps: list[tuple[str, object]] = [
            ("read", big), ("read", 3 * big), ("readinto", bytearray(big)), ("peek", 5), ("read", big),
            ("readinto", array_of_ints()), ("write", b"xyz"), ("read", big), ("seek", 7), ("read", big),
            ("read", -1), ("read", big), ("readinto", bytearray(big)), ("seek", 1), ("read", "x"),
            ("readinto", b"read-only"), ("read", 0), ("read", -5), ("read", None), ("read", True),
        ]  # fmt: skip
        for name, arg in steps:
            try:
                if name == "readinto":
                    buf = arg
                    res: object = await f.readinto(buf)
                    res = (res, bytes(buf))  # type: ignore[arg-type]
                else:
                    res = await getattr(f, name)(arg)
            except Exception as exc:
                res = (type(exc).__name__, str(exc))
            out.append((name, res, await f.tell()))
        hits = (f._ctx.driver.fast_reads.done - before) if driver == "io_uring_c" else 0
    return out, hits


@pytest.mark.anyio
@pytest.mark.parametrize("buffering", [0, 4096])
async def test_cursor_fast_path_matches_the_pure_path(tmp_path: Path, buffering: int) -> None:
    """read/readinto on the cursor, where each is one read (unbuffered, or at least the
    buffer's size with nothing buffered): the same results, errors and cursor through the C
    fast path as through the pure driver, and the fast path took some of them."""
    data = os.urandom(9 * PAGE + 77)
    p1, p2 = tmp_path / "c1.bin", tmp_path / "c2.bin"
    p1.write_bytes(data)
    p2.write_bytes(data)
    c, hits = await _cursor_calls(p1, "io_uring_c", buffering)
    pure, _ = await _cursor_calls(p2, "io_uring", buffering)
    assert c == pure
    # On every loop: on asyncio and uvloop a Done that does not yield, on trio the read
    # made after the call's checkpoint.
    assert hits >= 3


@pytest.mark.anyio
@pytest.mark.parametrize("into", [False, True], ids=["read", "readinto"])
async def test_cursor_reads_take_the_fast_path_on_every_loop(tmp_path: Path, into: bool) -> None:
    """Cursor reads of a cached file, each one read: the file calls' fast path's (its
    ``done``, which fast_path_hits includes beside the ordinary path's inline reads), with
    the file's bytes and the cursor after them; on trio every one (its checkpoint first, then
    the read), on asyncio and uvloop all but the 16th-or-so that yields on the ordinary path.
    That each is a schedule point (trio) or yields within the bound (asyncio) is checked on
    every loop and driver in tests/test_context.py."""
    import sniffio

    data = os.urandom(8 * PAGE)
    p = tmp_path / "c.bin"
    p.write_bytes(data)
    async with aiopg_io.open(p, "rb", buffering=0, driver="io_uring_c") as f:
        fast = f._ctx.driver.fast_reads
        hits = fast.done
        got = bytearray()
        for i in range(64):
            if into:
                buf = bytearray(PAGE // 8)
                n = await f.readinto(buf)
                got += buf[:n]
            else:
                got += await f.read(PAGE // 8)
            assert await f.tell() == (i + 1) * PAGE // 8
        assert bytes(got) == data
        taken = fast.done - hits
    assert taken == 64 if sniffio.current_async_library() == "trio" else taken >= 60


@pytest.mark.anyio
@pytest.mark.parametrize("into", [False, True], ids=["read", "readinto"])
async def test_cancelled_cursor_fast_path_leaves_the_cursor(tmp_path: Path, into: bool) -> None:
    """Cursor reads in a cancelled scope: on trio the first call's checkpoint raises before
    anything is read (no fast-path read, the cursor unmoved, the buffer untouched); on asyncio
    and uvloop within 16 reads, at a yield made before the cursor moves. Either way the
    cursor stands right after the bytes the calls returned, and reading on continues there."""
    import sniffio

    data = os.urandom(64 * PAGE)
    p = tmp_path / "c.bin"
    p.write_bytes(data)
    async with aiopg_io.open(p, "rb", buffering=0, driver="io_uring_c") as f:
        fast = f._ctx.driver.fast_reads
        assert await f.read(PAGE) == data[:PAGE]  # a fast read first: the reader is set up
        hits = fast.done
        got = bytearray()
        buf = bytearray(b"u" * PAGE)
        with anyio.CancelScope() as scope:
            scope.cancel()
            for _ in range(40):
                if into:
                    n = await f.readinto(buf)
                    got += buf[:n]
                else:
                    got += await f.read(PAGE)
        assert scope.cancelled_caught
        assert await f.tell() == PAGE + len(got)
        assert bytes(got) == data[PAGE : PAGE + len(got)]
        if sniffio.current_async_library() == "trio":
            assert got == b"" and fast.done == hits
            assert not into or buf == b"u" * PAGE
        else:
            assert len(got) < 16 * PAGE
        pos = PAGE + len(got)
        assert await f.read(PAGE) == data[pos : pos + PAGE]


# -- linked write + sync in the C ring (Ring.prep_write_sync) ---------------------------------


def test_linked_write_sync_runs_in_the_c_ring(tmp_path: Path) -> None:
    """Whole: one CQE (the write's skipped where the kernel can) ends it; a write the kernel
    refuses fails the op with its errno and nothing is synced; both counted as one op."""
    p = tmp_path / "ws.bin"
    fd = os.open(p, os.O_RDWR | os.O_CREAT)
    ro = os.open(p, os.O_RDONLY)
    payload = os.urandom(3 * PAGE)
    d = IoUringCDriver(nowait_fast_path=False)
    try:
        assert OpKind.WRITE_SYNC in d.capabilities.kinds
        op = write_sync_op(fd, 10, payload[:100], payload[100:])
        d.submit([op])
        assert d.statistics().in_flight == 1  # two user_datas, one op
        wait_all(d, [op])
        assert op.error is None and op.result == len(payload)
        assert p.read_bytes()[10:] == payload and d._ops == {}
        bad = write_sync_op(ro, 0, b"new", path=str(p))  # EBADF where a sync alone succeeds
        d.submit([bad])
        wait_all(d, [bad])
        assert isinstance(bad.error, OSError) and bad.error.errno == errno.EBADF
        assert bad.error.filename == str(p) and bad.transferred == 0 and d._ops == {}
        s = d.statistics()
        assert (s.submitted, s.completed, s.in_flight) == (2, 2, 0)
        assert dict(s.extra)["ring_submits"] >= 2
    finally:
        d.close()
        os.close(fd)
        os.close(ro)
    assert p.read_bytes()[10:] == payload


def test_linked_short_write_goes_on_with_a_new_chain_in_the_c_ring(tmp_path: Path) -> None:
    """A chain whose CQE reads as a write cut at 1000 bytes: the rest goes out as a new
    write + sync chain, and the op completes whole once the second sync is in. The C harvest
    hands both CQEs to _on_link_cqe with the right half named."""
    p = tmp_path / "short.bin"
    fd = os.open(p, os.O_RDWR | os.O_CREAT)
    payload = os.urandom(2 * PAGE)
    seen: list[tuple[str, int]] = []

    class ShortFirst(IoUringCDriver):
        def _on_link_cqe(self, op: Op, token: int, res: int) -> bool | None:
            data = op.driver_data
            half = "write" if token == data.token else "sync"  # type: ignore[attr-defined]
            seen.append((half, res))
            if len(seen) == 1:
                return super()._on_link_cqe(op, data.token, 1000)  # type: ignore[attr-defined]
            return super()._on_link_cqe(op, token, res)

    d = ShortFirst(nowait_fast_path=False)
    try:
        op = write_sync_op(fd, 0, payload)
        d.submit([op])
        wait_all(d, [op])
        assert op.error is None and op.result == len(payload)
        assert p.read_bytes() == payload
        # The first CQE: the chain's sync, or before 5.17 (no CQE skip) its whole write's.
        assert seen[0][0] == ("sync" if d._ring.cqe_skip else "write")
        assert seen[-1] == ("sync", 0)
        assert d.statistics().short_transfers == 1 and d._ops == {}
    finally:
        d.close()
        os.close(fd)


# -- path ops in the C ring (Ring.prep_path, Ring.prep_statx) ---------------------------------


def _path_outcome(op: Op, tmp: Path) -> object:
    if op.error is not None:
        err = op.error
        return (type(err).__name__, err.errno, str(err).replace(str(tmp), "<tmp>"))
    return op.result


def _path_ops(d: Driver, tmp: Path) -> list[object]:
    """STATX (file, directory, symbolic link followed and not, missing, ENOTDIR), LINKAT and
    SYMLINKAT (made, then EEXIST and ENOENT) through ``d`` in ``tmp``, as comparable values:
    each statx record read back and compared with ``os.stat``'s, each link with ``os``'s view."""
    from aiopg_io.drivers import _statx

    (tmp / "f").write_bytes(b"data" * 100)
    (tmp / "d").mkdir(exist_ok=True)
    os.symlink("f", tmp / "l")
    out: list[object] = []
    for name, flags in (("f", 0), ("d", 0), ("l", 0), ("l", AT_SYMLINK_NOFOLLOW), ("missing", 0), ("f/x", 0)):
        buf = _statx.new_buffer()
        op = Op(OpKind.STATX, AT_FDCWD, buffers=(buf,), path=str(tmp / name), flags=flags)
        d.submit([op])
        wait_all(d, [op])
        out.append(_path_outcome(op, tmp))
        assert (op.error is None) is (name not in ("missing", "f/x")), (name, op.error)
        if op.error is None:
            st = _statx.to_stat_result(buf)
            want = os.stat(tmp / name, follow_symlinks=not flags)
            assert st == want and st.st_mtime_ns == want.st_mtime_ns, name
            out.append((stat.S_IFMT(st.st_mode), st.st_size, st.st_nlink))
    ops = [
        Op(OpKind.LINKAT, AT_FDCWD, path=str(tmp / "f"), newpath=str(tmp / "h")),
        Op(OpKind.SYMLINKAT, AT_FDCWD, path="../x//y/", newpath=str(tmp / "s")),
    ]
    d.submit(ops)
    wait_all(d, ops)
    out += [_path_outcome(op, tmp) for op in ops]
    out.append((os.stat(tmp / "h").st_ino == os.stat(tmp / "f").st_ino, os.readlink(tmp / "s")))
    again = [
        Op(OpKind.LINKAT, AT_FDCWD, path=str(tmp / "f"), newpath=str(tmp / "h")),  # EEXIST
        Op(OpKind.LINKAT, AT_FDCWD, path=str(tmp / "missing"), newpath=str(tmp / "h2")),  # ENOENT
        Op(OpKind.SYMLINKAT, AT_FDCWD, path="t", newpath=str(tmp / "s")),  # EEXIST
        Op(OpKind.SYMLINKAT, AT_FDCWD, path="t", newpath=str(tmp / "missing" / "s")),  # ENOENT
    ]
    d.submit(again)
    wait_all(d, again)
    out += [_path_outcome(op, tmp) for op in again]
    out.append(sorted(os.listdir(tmp)))
    return out


def test_statx_linkat_symlinkat_run_in_the_c_ring_as_in_the_pure_one_and_os(tmp_path: Path) -> None:
    """The three kinds the C ring preps like the pure one: in the ring (no thread: the bare
    driver refuses a kind it lacks), with the same values as the pure driver and the worker
    (os's blocking calls), and the same errors; no fd left open."""
    from aiopg_io.drivers.worker import WorkerDriver

    before = open_fds()
    got: dict[str, list[object]] = {}
    for cls in (IoUringCDriver, IoUringDriver, WorkerDriver):
        if cls.unavailable_reason() is not None:
            continue
        tmp = tmp_path / cls.name
        tmp.mkdir()
        d = cls()
        try:
            assert {OpKind.STATX, OpKind.LINKAT, OpKind.SYMLINKAT} <= d.capabilities.kinds
            got[cls.name] = _path_ops(d, tmp)
            assert not isinstance(d, IoUringDriver) or d._ops == {}
        finally:
            d.close()
    assert got["io_uring_c"] == got["worker"]
    if "io_uring" in got:
        assert got["io_uring"] == got["io_uring_c"]
    assert open_fds() == before


_STATX_BTIME = 0x800  # stx_mask's bit for stx_btime (include/uapi/linux/stat.h)
_BTIME_AT = 0x50  # stx_btime's offset: after stx_atime (0x40), a statx_timestamp of 16 bytes


def test_statx_record_is_the_kernels_own(tmp_path: Path) -> None:
    """The C ring's STATX buffer is the struct statx the kernel wrote, byte for byte the
    pure driver's (copied there from the binding's), the fields os.stat_result drops
    (attributes, mount id, alignments) included, but for what the pure ring's binding asks
    for beyond STATX_BASIC_STATS: the birth time and its bit in the mask. Past the 256 bytes
    nothing is written."""
    from aiopg_io.drivers import _statx

    if IoUringDriver.unavailable_reason() is not None:
        pytest.skip("the pure io_uring driver cannot run here")
    (tmp_path / "f").write_bytes(b"x" * 5000)
    records = []
    for cls in (IoUringCDriver, IoUringDriver):
        d = cls()
        try:
            buf = memoryview(bytearray(b"\xaa" * (STATX_SIZE + 8)))
            op = Op(OpKind.STATX, AT_FDCWD, buffers=(buf,), path=str(tmp_path / "f"))
            d.submit([op])
            wait_all(d, [op])
            assert op.error is None and op.result == 0
            assert bytes(buf[STATX_SIZE:]) == b"\xaa" * 8
            record = bytearray(buf[:STATX_SIZE])
            mask = int.from_bytes(record[0:4], sys.byteorder) & ~_STATX_BTIME
            record[0:4] = mask.to_bytes(4, sys.byteorder)
            record[_BTIME_AT : _BTIME_AT + 16] = bytes(16)
            records.append(bytes(record))
            assert _statx.to_stat_result(buf) == os.stat(tmp_path / "f")
        finally:
            d.close()
    assert records[0] == records[1]


def test_ring_path_preps_refuse_bad_arguments_and_take_no_sqe(ring: object) -> None:
    """prep_path and prep_statx check before they take an SQE: a NUL inside a path (a guard:
    the driver sends such a path to the blocking call), a missing second path, a statx
    buffer that is read-only, too small or not bytes-like; the SQ is as it was."""
    from aiopg_io.drivers import _uring

    r: Any = ring
    L, S = _uring.IORING_OP_LINKAT, _uring.IORING_OP_SYMLINKAT
    buf = memoryview(bytearray(STATX_SIZE))
    with pytest.raises(ValueError, match="path holds a NUL byte"):
        r.prep_path(L, AT_FDCWD, b"a\0b", b"c", 0, 0, 1)
    with pytest.raises(ValueError, match="newpath holds a NUL byte"):
        r.prep_path(S, AT_FDCWD, b"t", b"c\0", 0, 0, 1)
    with pytest.raises(TypeError, match="must be bytes"):
        r.prep_path(L, AT_FDCWD, b"a", None, 0, 0, 1)
    with pytest.raises(ValueError, match="path holds a NUL byte"):
        r.prep_statx(AT_FDCWD, b"a\0", buf, 0, STATX_BASIC_STATS, 1)
    with pytest.raises(ValueError, match="a statx buffer of 255 bytes: it needs 256"):
        r.prep_statx(AT_FDCWD, b"a", buf[:255], 0, STATX_BASIC_STATS, 1)
    with pytest.raises(TypeError):
        r.prep_statx(AT_FDCWD, b"a", b"\0" * STATX_SIZE, 0, STATX_BASIC_STATS, 1)  # read-only
    with pytest.raises(TypeError):
        r.prep_statx(AT_FDCWD, "a", buf, 0, STATX_BASIC_STATS, 1)  # a str is no path here
    assert all(r.prep_nop(i + 1) for i in range(4))  # every SQE still free
    assert r.prep_nop(9) is False
    assert r.submit() == 0


def test_a_cancelled_statx_keeps_its_buffer_until_the_cqe(tmp_path: Path) -> None:
    """The kernel writes a STATX's record into the op's buffer when it runs the op (in its
    worker): the driver holds the buffer from the SQE to the CQE, as a read's; a cancel or a
    close in between waits for the CQE, and the op ends whole or cancelled."""
    from aiopg_io.drivers import _statx

    (tmp_path / "f").write_bytes(b"x")
    before = open_fds()
    d = IoUringCDriver()
    try:
        path = str(tmp_path / "f")
        ops = [Op(OpKind.STATX, AT_FDCWD, buffers=(_statx.new_buffer(),), path=path) for _ in range(64)]
        d.submit(ops)
        for op in ops:
            data = op.driver_data
            assert data.buffers == [op.buffers[0]] and data.buffers[0] is op.buffers[0]  # type: ignore[attr-defined]
        for op in ops[::2]:
            d.cancel(op)
        wait_all(d, ops[:32])
        left = d.close()  # cancels the rest, and waits for their CQEs
        for op in ops:
            assert op.done
            if op.error is None:
                assert _statx.to_stat_result(op.buffers[0]).st_size == 1
            else:
                assert op.error.errno == errno.ECANCELED
        assert set(left) <= set(ops[32:])
    finally:
        d.close()
    assert open_fds() == before


_UNBIND_MID_STAGE = """
import sys
import anyio
import aiopg_io

path, backend = sys.argv[1], sys.argv[2]


async def main() -> None:
    async with aiopg_io.open(path, "r+b", driver="io_uring_c") as f:
        ctx = f._ctx
        runs = ctx.driver.ring_runs
        unbound = []

        class Unbinding(type(ctx)):
            # Read by the ring path's staging just before it schedules the flush: unbind
            # the RunPath there, as a finalizer run by the GC at that point could.
            @property
            def _flush_pending(self):
                if not unbound:
                    unbound.append(runs)
                    runs.disable()
                return self.__dict__["_flush_pending"]

            @_flush_pending.setter
            def _flush_pending(self, value):
                self.__dict__["_flush_pending"] = value

        ctx.__class__ = Unbinding
        try:
            n = await f.pwrite(b"RING", 0)
        finally:
            ctx.__class__ = Unbinding.__mro__[1]
        print(n, len(unbound), runs.runs)


anyio.run(main, backend=backend)
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_run_path_unbound_mid_stage_frees_nothing_in_use(tmp_path: Path, backend: str) -> None:
    """The ring path's staging (RingWait's first send) calls into Python several times; a
    finalizer there may unbind the RunPath, which drops its context, its loop's call_soon
    and the context's flush. Staging holds what it uses, so the op is staged and flushed
    with the objects it started with and the write lands: on asyncio (a future) and on trio
    (the glue's park). It used to read them from the RunPath again: a crash (the call_soon
    read as NULL) in a fresh interpreter."""
    p = tmp_path / "f.bin"
    p.write_bytes(b"0" * 8)
    out = subprocess.run(
        [sys.executable, "-c", _UNBIND_MID_STAGE, str(p), backend], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.split() == ["4", "1", "1"]
    assert p.read_bytes() == b"RING0000"
