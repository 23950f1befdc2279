"""The io_uring_c driver's batches in C (``Ring.submit_batch``) and completions resumed from
C (``reap_and_wake`` with the glue's C waker), against the pure driver, their reference.

Each test runs the same ops through ``io_uring`` and ``io_uring_c`` and compares what the
caller sees: results, bytes, errors by type, errno and message, cancellation, the fd table.
The C path is shown to have run by the driver's counters (``c_prepped``: ops C prepped;
``c_resumed``: ops C reaped and handed to the waker).
"""

from __future__ import annotations

import asyncio
import errno
import mmap
import os
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiopg_io
from aiopg_io._context import get_context, live_contexts
from aiopg_io.drivers.base import Op, OpKind, OpState
from aiopg_io.drivers.io_uring import IoUringDriver
from aiopg_io.drivers.io_uring_c import IoUringCDriver

from .._driving import wait_all
from ..conftest import open_fds

_REASON = IoUringCDriver.unavailable_reason() or IoUringDriver.unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"io_uring/io_uring_c cannot run here: {_REASON}")

PAGE = 4096
PAGES = 16


def outcome(op: Op) -> tuple[object, ...]:
    err = op.error
    shown = None if err is None else (type(err), err.errno, err.strerror, err.filename, str(err))
    return (op.kind, op.state, op.result, op.transferred, shown)


def extra(stats: Any) -> dict[str, int]:
    return dict(stats.extra)


# -- the driver alone ------------------------------------------------------------------------


def test_a_batch_larger_than_the_sq_mixing_c_and_python_preps(tmp_path: Path) -> None:
    """One batch of 17 ops through a ring of 4 SQEs: what C preps (direct and buffered
    transfers, vectored, syncs, a bad fd, a misaligned direct read) and what goes to the
    Python prep in its place (the page-cache fast path, fallocate, ftruncate, a NOP, a
    read-only buffer, a negative offset, nothing to transfer): the same outcomes, bytes and
    file as the pure driver, and C prepped the ones it knows."""
    data = os.urandom(PAGES * PAGE)

    def run(cls: type[IoUringDriver]) -> tuple[list[object], int]:
        p = tmp_path / f"{cls.name}.bin"
        p.write_bytes(data)
        dfd = os.open(p, os.O_RDWR | os.O_DIRECT)
        bfd = os.open(p, os.O_RDWR)
        arena = mmap.mmap(-1, 8 * PAGE)
        d = cls(nowait_fast_path=True, entries=4)
        try:
            v = [memoryview(arena)[i * PAGE : (i + 1) * PAGE] for i in range(8)]
            v[4][:] = b"w" * PAGE
            ops = [
                Op(OpKind.READ, dfd, 2 * PAGE, (v[0],), direct=True),  # C
                Op(OpKind.READV, dfd, 4 * PAGE, (v[1], v[2]), direct=True),  # C, vectored
                Op(OpKind.READ, bfd, PAGE, (memoryview(bytearray(PAGE)),), direct=False),  # fast path
                Op(OpKind.WRITE, dfd, PAGES * PAGE, (v[4],), direct=True),  # C, extends
                Op(OpKind.READ, 987654, 0, (v[5],), path="nowhere", direct=True),  # C: EBADF
                Op(OpKind.READ, dfd, 100, (v[6],), path="misaligned", direct=True),  # C: EINVAL
                Op(OpKind.FSYNC, dfd),  # C
                Op(OpKind.FDATASYNC, bfd),  # C
                Op(OpKind.FALLOCATE, bfd, 0, length=PAGE),  # Python
                Op(OpKind.NOP, -1),  # Python
                Op(OpKind.READ, bfd, 0, (memoryview(b"read-only"),), direct=False),  # Python: EFAULT
                Op(OpKind.READ, bfd, -1, (memoryview(bytearray(8)),), path="neg"),  # Python: EINVAL
                Op(OpKind.READ, bfd, 0, ()),  # Python: nothing to transfer
                Op(OpKind.WRITEV, bfd, 3, (memoryview(b"ab"), memoryview(b"cde")), direct=False),  # C
                Op(OpKind.READ, bfd, 9 * PAGE, (memoryview(bytearray(100)),), direct=True),  # C
                Op(OpKind.READ, dfd, 7 * PAGE, (v[7],), direct=True),  # C
                Op(OpKind.FTRUNCATE, bfd, length=(PAGES + 1) * PAGE),  # Python
            ]
            d.submit(ops)
            wait_all(d, ops)
            out: list[object] = [outcome(op) for op in ops]
            out.append([bytes(x) for x in v[:4]] + [bytes(v[7])])
            st = d.statistics()
            out.append((st.submitted, st.completed, st.in_flight))
            assert all(op.driver_data is None for op in ops)
            out.append(p.read_bytes())
            prepped = extra(st).get("c_prepped", 0)
            return out, prepped
        finally:
            d.close()
            os.close(dfd)
            os.close(bfd)  # the arena goes with the ops that view it

    before = open_fds()
    c, prepped = run(IoUringCDriver)
    pure, _ = run(IoUringDriver)
    assert c == pure
    # The ops marked C above but the misaligned read: it found the 4 SQEs taken, so the Python
    # prep submitted them and queued it (the SQ is empty after each submit: SUBMIT_ALL).
    assert prepped == 9
    shown = [op_out[4] for op_out in c[:17]]  # type: ignore[index]
    assert shown[4] == (
        OSError,
        errno.EBADF,
        "Bad file descriptor",
        "nowhere",
        "[Errno 9] Bad file descriptor: 'nowhere'",
    )
    assert shown[5][:4] == (OSError, errno.EINVAL, "Invalid argument", "misaligned")  # O_DIRECT refused it
    assert shown[10][1:3] == (errno.EFAULT, "a read needs writable buffers")
    assert open_fds() == before


def test_cancel_in_a_batch_and_close_with_ops_prepped_in_c(tmp_path: Path) -> None:
    """Pipe reads prepped in C (no fast path), cancelled in the batch they went out in: the
    buffers stay the kernel's until their CQEs, which say ECANCELED, as on the pure driver;
    close cancels and drains one still in flight; nothing is left open."""
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(4 * PAGE))

    def run(cls: type[IoUringDriver]) -> list[object]:
        rfd, wfd = os.pipe()
        fd = os.open(p, os.O_RDONLY)
        d = cls(nowait_fast_path=False, entries=4)
        try:
            pipe_ops = [Op(OpKind.READ, rfd, 0, (memoryview(bytearray(64)),)) for _ in range(3)]
            file_ops = [Op(OpKind.READ, fd, i * PAGE, (memoryview(bytearray(PAGE)),)) for i in range(4)]
            batch = [pipe_ops[0], file_ops[0], pipe_ops[1], *file_ops[1:], pipe_ops[2]]
            d.submit(batch)
            for op in pipe_ops[:2]:
                d.cancel(op)
                assert op.state is OpState.SUBMITTED  # its buffer is the kernel's until the CQE
            wait_all(d, [*pipe_ops[:2], *file_ops])
            out: list[object] = [outcome(op) for op in [*pipe_ops[:2], *file_ops]]
            out.append(
                [
                    bytes(op.buffers[0]) == p.read_bytes()[i * PAGE : (i + 1) * PAGE]
                    for i, op in enumerate(file_ops)
                ]
            )
            drained = d.close()
            out.append([outcome(op) for op in drained])
            out.append(d.statistics().in_flight)
            return out
        finally:
            d.close()
            for f in (rfd, wfd, fd):
                os.close(f)

    before = open_fds()
    c, pure = run(IoUringCDriver), run(IoUringDriver)
    assert c == pure
    assert c[0][4][1] == errno.ECANCELED and c[1][4][1] == errno.ECANCELED  # type: ignore[index]
    assert c[-3] == [True] * 4 and len(c[-2]) == 1 and c[-1] == 0  # type: ignore[arg-type]
    assert open_fds() == before


def test_reap_and_wake_hands_whole_ops_to_the_waker_and_returns_the_rest(tmp_path: Path) -> None:
    """Whole reads and a sync go to the waker already REAPED (fd bookkeeping done); a short
    read at EOF goes through the Python _on_cqe and is returned, as reap() would."""
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(3 * PAGE + 10))
    fd = os.open(p, os.O_RDWR)
    d = IoUringCDriver(nowait_fast_path=False)
    woken: list[Op] = []

    def waker(op: Op) -> None:
        assert op.state is OpState.REAPED and op.driver_data is None
        woken.append(op)

    try:
        whole = [Op(OpKind.READ, fd, i * PAGE, (memoryview(bytearray(PAGE)),)) for i in range(3)]
        short = Op(OpKind.READ, fd, 3 * PAGE, (memoryview(bytearray(PAGE)),))
        sync = Op(OpKind.FSYNC, fd)
        d.submit([*whole, short, sync])
        got: list[Op] = []
        total = 0
        while total < 5:
            select.select([d.fileno()], [], [], 10)
            out, n = d.reap_and_wake(waker)
            got += out
            total += len(out) + n
        assert set(map(id, woken)) == set(map(id, [*whole, sync]))
        assert got == [short] and short.result == 10 and short.state is OpState.REAPED
        assert [op.result for op in whole] == [PAGE] * 3 and sync.result == 0
        st = d.statistics()
        assert (st.submitted, st.completed, st.in_flight) == (5, 5, 0)
        assert extra(st)["c_resumed"] == 4
        assert d._fd_refs == {}  # every op's hold on the fd released
    finally:
        d.close()
        os.close(fd)


def test_a_subclass_that_overrides_the_prep_sees_every_op(tmp_path: Path) -> None:
    """A driver that overrides _prep (a fault injector would) gets every op through it, as
    on the pure driver: C preps nothing behind its back."""
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(2 * PAGE))
    seen: list[OpKind] = []

    class Counting(IoUringCDriver):
        def _prep(self, op: Op) -> bool:
            seen.append(op.kind)
            return super()._prep(op)

    fd = os.open(p, os.O_RDWR)
    d = Counting(nowait_fast_path=False)
    try:
        ops = [Op(OpKind.READ, fd, 0, (memoryview(bytearray(PAGE)),)), Op(OpKind.FSYNC, fd)]
        d.submit(ops)
        wait_all(d, ops)
        assert seen == [OpKind.READ, OpKind.FSYNC] and ops[0].result == PAGE
        assert extra(d.statistics())["c_prepped"] == 0
    finally:
        d.close()
        os.close(fd)


def test_an_op_with_flags_c_does_not_know_goes_to_the_python_prep(tmp_path: Path) -> None:
    """Op.flags means nothing to transfers and syncs today; one that carries some (a meaning
    a later Python prep may give it) is left to the Python prep, which knows it."""
    p = tmp_path / "f.bin"
    p.write_bytes(bytes(PAGE))
    fd = os.open(p, os.O_RDWR)
    d = IoUringCDriver(nowait_fast_path=False)
    try:
        plain = Op(OpKind.WRITE, fd, 0, (memoryview(b"a" * 10),))
        flagged = Op(OpKind.WRITE, fd, 10, (memoryview(b"b" * 10),), flags=1)
        d.submit([plain, flagged])
        wait_all(d, [plain, flagged])
        assert (plain.result, flagged.result) == (10, 10)
        assert p.read_bytes()[:20] == b"a" * 10 + b"b" * 10
        assert extra(d.statistics())["c_prepped"] == 1
    finally:
        d.close()
        os.close(fd)


# -- the glue's wakers -----------------------------------------------------------------------


def test_the_asyncio_waker_in_c_does_what_wake_does() -> None:
    from aiopg_io._glue import _asyncio

    assert _asyncio._WAKE is not None, "the glue's C extension (aiopg_io._glue._wake) is not built"
    loop = asyncio.new_event_loop()
    try:
        glue = _asyncio.AsyncioGlue(loop)
        twin: list[Op] = []
        waker: Callable[[Op], object] = _asyncio._WAKE.FutureWaker(asyncio.Future, twin.append)
        pending, done, other = Op(OpKind.NOP, -1), Op(OpKind.NOP, -1), Op(OpKind.NOP, -1)
        pending.waiter = loop.create_future()
        done.waiter = loop.create_future()
        done.waiter.cancel()  # type: ignore[attr-defined]
        other.waiter = object()
        for op in (pending, done, other):
            waker(op)
        assert pending.waiter.done() and pending.waiter.result() is None  # type: ignore[attr-defined]
        assert done.waiter.cancelled()  # type: ignore[attr-defined]
        assert twin == [other]  # not a future of this loop: the Python wake decides
        assert type(glue.waker(glue.wake)).__name__ == "FutureWaker"
    finally:
        loop.close()
    # A future whose loop is closed: set_result's RuntimeError is dropped, as wake drops it.
    late = Op(OpKind.NOP, -1)
    late.waiter = loop.create_future()
    late.waiter.add_done_callback(lambda _: None)  # type: ignore[attr-defined]
    waker(late)
    glue.wake(late)


def test_the_trio_waker_in_c_reschedules_and_leaves_cancelled_tasks_to_wake() -> None:
    trio = pytest.importorskip("trio")
    from aiopg_io._glue import _trio

    async def main() -> None:
        glue = _trio.current()
        assert glue is not None and type(glue.waker(glue.wake)).__name__ == "TaskWaker"
        twin: list[Op] = []
        rescheduled: list[object] = []
        waker = _trio._WAKE.TaskWaker(_trio._Parked, rescheduled.append, twin.append)
        task = trio.lowlevel.current_task()
        plain, cancelled, other = Op(OpKind.NOP, -1), Op(OpKind.NOP, -1), Op(OpKind.NOP, -1)
        plain.waiter = _trio._Parked(task)
        cancelled.waiter = parked = _trio._Parked(task)
        parked.raise_cancel = lambda: None
        other.waiter = None
        for op in (plain, cancelled, other):
            waker(op)
        assert rescheduled == [task] and plain.waiter is None
        assert twin == [cancelled, other] and cancelled.waiter is parked

    trio.run(main)


def test_pure_forced_leaves_the_glue_on_its_python_wake() -> None:
    code = (
        "import asyncio\n"
        "from aiopg_io._glue import _asyncio\n"
        "async def main():\n"
        "    g = _asyncio.current(); print(_asyncio._WAKE, g.waker(g.wake) == g.wake)\n"
        "asyncio.run(main())\n"
    )
    env = dict(os.environ, AIOPG_IO_PURE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "True"]


# -- on every loop, through the IOContext and the file layer ---------------------------------


async def _file_workload(path: Path, driver: str, data: bytes) -> tuple[object, ...]:
    """24 tasks issue their ops in one tick (a batch of 24 through an SQ of 4): direct
    reads, vectored reads, writes, syncs, a read that meets EOF, a read past it."""
    path.write_bytes(data)
    results: dict[int, object] = {}
    async with aiopg_io.open(path, "r+b", driver=driver, direct=True) as f:

        async def one(i: int) -> None:
            buf = aiopg_io.aligned_buffer(2 * PAGE)
            view = memoryview(buf)
            try:
                kind = i % 6
                if kind == 0:
                    n = await f.preadinto(view[:PAGE], (i % PAGES) * PAGE)
                    results[i] = (n, bytes(view[:PAGE]))
                elif kind == 1:
                    n = await f.preadv([view[:PAGE], view[PAGE:]], ((i + 3) % (PAGES - 1)) * PAGE)
                    results[i] = (n, bytes(view))
                elif kind == 2:
                    view[:PAGE] = bytes([i]) * PAGE
                    # Pages no read of this batch touches, within the file: ops of one
                    # batch run concurrently, and an extending write would move EOF.
                    results[i] = await f.pwrite(view[:PAGE], {2: 3, 8: 9, 14: 13, 20: 14}[i] * PAGE)
                elif kind == 3:
                    results[i] = await (f.fsync() if i % 2 else f.fdatasync())
                elif kind == 4:
                    results[i] = await f.preadinto(view[:PAGE], (PAGES + 100) * PAGE)  # past EOF
                else:
                    n = await f.preadinto(view, (PAGES - 1) * PAGE)  # one page, then EOF
                    results[i] = (n, bytes(view[:n]))
            except OSError as exc:
                results[i] = (type(exc), exc.errno, str(exc))

        async with anyio.create_task_group() as tg:
            for i in range(24):
                tg.start_soon(one, i)
        stats = extra(f.driver_statistics())
    return results, path.read_bytes(), stats.get("c_prepped", 0), stats.get("c_resumed", 0)


@pytest.mark.anyio
async def test_file_batches_on_every_loop_match_the_pure_driver(tmp_path: Path) -> None:
    data = os.urandom(PAGES * PAGE)
    before = open_fds()
    c = await _file_workload(tmp_path / "c.bin", "io_uring_c:entries=4", data)
    pure = await _file_workload(tmp_path / "pure.bin", "io_uring:entries=4", data)
    assert c[:2] == pure[:2]
    # Every op is C's but the one that finds the SQ full each time (the Python prep submits).
    assert c[2] >= 18 and c[3] > 0
    assert open_fds() == before and live_contexts() == []


async def _cancel_workload(path: Path, driver: str) -> list[object]:
    """Reads of an empty pipe (cancelled) and of a file, issued in one tick through the
    IOContext: the cancelled tasks raise their loop's cancellation once the CQE is in."""
    rfd, wfd = os.pipe()
    fd = os.open(path, os.O_RDONLY)
    ctx = get_context(driver)
    ctx.acquire()
    out: dict[int, object] = {}
    try:

        async def one(i: int) -> None:
            target = rfd if i % 2 else fd
            op = Op(OpKind.READ, target, 0 if i % 2 else i * PAGE, (memoryview(bytearray(PAGE)),))
            with anyio.move_on_after(0.05) as scope:
                n = await ctx.run(op)
                out[i] = (n, bytes(op.buffers[0]) == path.read_bytes()[i * PAGE : (i + 1) * PAGE])
            if scope.cancelled_caught:
                out[i] = ("cancelled", outcome(op))

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(one, i)
        prepped = extra(ctx.statistics()).get("c_prepped")
    finally:
        await ctx.release()
        os.close(rfd)
        os.close(wfd)
        os.close(fd)
    return [out[i] for i in range(8)] + [prepped]


@pytest.mark.anyio
async def test_cancelled_ops_of_a_batch_on_every_loop_match_the_pure_driver(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(8 * PAGE))
    before = open_fds()
    c = await _cancel_workload(p, "io_uring_c:nowait_fast_path=0")
    pure = await _cancel_workload(p, "io_uring:nowait_fast_path=0")
    assert c[:8] == pure[:8]
    assert c[8] == 8 and all(c[i][0] == "cancelled" for i in (1, 3, 5, 7))  # type: ignore[index]
    assert c[1][1][4][1] == errno.ECANCELED  # type: ignore[index]
    assert all(c[i] == (PAGE, True) for i in (0, 2, 4, 6))
    assert open_fds() == before and live_contexts() == []
