"""The io_uring driver, used directly (submit, wait on fileno(), reap) and through files.

Faults the kernel rarely produces on demand (EAGAIN in a CQE, a short completion) are
injected with a tiny subclass that rewrites the first completion of each op before the
driver applies it, so the driver's own continuation code runs on real kernel results.
"""

from __future__ import annotations

import array
import contextlib
import errno
import gc
import mmap
import os
import random
import select
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

import aiopg_io
from aiopg_io.drivers import io_uring
from aiopg_io.drivers.base import Op, OpKind, OpState
from aiopg_io.drivers.io_uring import IoUringDriver
from tests.conftest import in_child, open_fds

from .._driving import Factory, wait_all, write_sync_op

_REASON = IoUringDriver.unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"io_uring cannot run here: {_REASON}")

PAGE = 4096


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def uring() -> Iterator[IoUringDriver]:
    d = IoUringDriver()
    yield d
    d.close()


def make_file(path: Path, size: int, seed: int = 1) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def read_op(fd: int, offset: int, sizes: Sequence[int], path: str | None = None) -> Op:
    bufs = tuple(memoryview(bytearray(n)) for n in sizes)
    kind = OpKind.READ if len(bufs) == 1 else OpKind.READV
    return Op(kind, fd, offset, bufs, path=path)


class Rewriting(IoUringDriver):
    """Rewrites the first kernel completion of each op with ``rewrite(op, res)``."""

    def __init__(self, rewrite: Callable[[Op, int], int], **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.rewrite = rewrite
        # The ops themselves, not their ids: an id is reused once its op is freed, and a
        # later op would then pass uncut.
        self.seen: set[Op] = set()

    def _on_cqe(self, op: Op, res: int) -> bool:
        if op not in self.seen:
            self.seen.add(op)
            res = self.rewrite(op, res)
        return super()._on_cqe(op, res)


# -- basic transfers -------------------------------------------------------------------------


@pytest.mark.parametrize("fast_path", [True, False], ids=["nowait", "ring-only"])
def test_buffered_reads_and_writes_round_trip(tmp_path: Path, fast_path: bool) -> None:
    p = tmp_path / "f.bin"
    data = make_file(p, 64 * PAGE)
    fd = os.open(p, os.O_RDWR)
    d = IoUringDriver(nowait_fast_path=fast_path)
    try:
        reads = [read_op(fd, i * PAGE, [1000, PAGE - 1000]) for i in range(64)]
        d.submit(reads)
        wait_all(d, reads)
        for i, op in enumerate(reads):
            assert op.error is None and op.result == PAGE
            assert b"".join(bytes(b) for b in op.buffers) == data[i * PAGE : (i + 1) * PAGE]
        new = b"written through the ring" * 100
        w = Op(OpKind.WRITEV, fd, 10, (memoryview(new[:7]), memoryview(new[7:])))
        d.submit([w])
        wait_all(d, [w])
        assert w.result == len(new)
        assert p.read_bytes()[10 : 10 + len(new)] == new
        hits = dict(d.statistics().extra)["fast_path_hits"]
        assert (hits > 0) is fast_path
    finally:
        d.close()
        os.close(fd)


class Buf(bytearray):
    """A bytearray that takes weak references, so a test sees when it is freed."""


def test_ring_transfers_let_go_of_their_buffers(tmp_path: Path) -> None:
    """Once an op's CQE is in, nothing holds its buffers: the binding's Iovec exports every
    memoryview it is given and never releases it, so the driver must not hand it one. Read
    into and written from, by one buffer and vectored, of every kind a caller passes."""
    p = tmp_path / "let-go.bin"
    data = make_file(p, 8 * PAGE)
    fd = os.open(p, os.O_RDWR)
    d = IoUringDriver(nowait_fast_path=False)  # every read goes through the ring
    try:
        ba, arr, m = bytearray(PAGE), array.array("B", bytes(2 * PAGE)), mmap.mmap(-1, PAGE)
        reads = [
            Op(OpKind.READ, fd, 0, (memoryview(ba),)),
            Op(OpKind.READV, fd, PAGE, (memoryview(arr)[:10], memoryview(arr)[10:], memoryview(m))),
        ]
        d.submit(reads)
        wait_all(d, reads)
        assert [op.result for op in reads] == [PAGE, 3 * PAGE]
        assert bytes(ba) == data[:PAGE]
        assert bytes(arr) + bytes(m) == data[PAGE : 4 * PAGE]
        wb, ro = Buf(b"w" * 100), b"r" * 200  # writable and read-only sources
        writes = [
            Op(OpKind.WRITE, fd, 0, (memoryview(wb),)),
            Op(OpKind.WRITEV, fd, 100, (memoryview(ro)[:50], memoryview(ro)[50:], memoryview(m)[:5])),
        ]
        d.submit(writes)
        wait_all(d, writes)
        assert [op.result for op in writes] == [100, 205]
        assert p.read_bytes()[:305] == b"w" * 100 + b"r" * 200 + data[PAGE * 3 : PAGE * 3 + 5]
        del reads, writes
        # No export is left: each of these raises BufferError while one is.
        ba.extend(b"x")
        arr.append(1)
        wb.extend(b"x")
        m.close()
        alive = weakref.ref(wb)
        del wb
        assert alive() is None
    finally:
        d.close()
        os.close(fd)


def test_ring_refuses_a_buffer_that_is_not_contiguous(tmp_path: Path) -> None:
    p = tmp_path / "strided.bin"
    make_file(p, PAGE)
    fd = os.open(p, os.O_RDWR)
    d = IoUringDriver(nowait_fast_path=False)
    try:
        read = Op(OpKind.READ, fd, 0, (memoryview(bytearray(8))[::2],), path=str(p))
        write = Op(OpKind.WRITE, fd, 0, (memoryview(b"abcdefgh")[::2],), path=str(p))
        # All of a bytes object's length but backwards: not the object itself (which the
        # driver hands the binding where a view is all of one, in order).
        backwards = Op(OpKind.WRITE, fd, 0, (memoryview(b"abcdefgh")[::-1],), path=str(p))
        before = p.read_bytes()
        d.submit([read, write, backwards])
        wait_all(d, [read, write, backwards])
        assert p.read_bytes() == before  # nothing written, in either order
        for op in (read, write, backwards):
            assert isinstance(op.error, OSError) and op.error.errno == errno.EINVAL
            assert "buffers not accepted by io_uring" in str(op.error) and "contiguous" in str(op.error)
    finally:
        d.close()
        os.close(fd)


def test_direct_io_through_readv_writev(data_dir: Path) -> None:
    p = data_dir / "direct.bin"
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_DIRECT)
    m = mmap.mmap(-1, 16 * PAGE)
    src = memoryview(m)[: 8 * PAGE]
    dst = memoryview(m)[8 * PAGE :]
    payload = random.Random(7).randbytes(8 * PAGE)
    src[:] = payload
    d = IoUringDriver()
    try:
        w = Op(OpKind.WRITEV, fd, 0, (src[: 3 * PAGE], src[3 * PAGE :]), path=str(p))
        d.submit([w])
        wait_all(d, [w])
        assert w.error is None and w.result == 8 * PAGE
        r = Op(OpKind.READV, fd, 0, (dst[:PAGE], dst[PAGE:]), path=str(p))
        d.submit([r])
        wait_all(d, [r])
        assert r.result == 8 * PAGE
        assert bytes(dst) == payload
        # An O_DIRECT fd never takes the inline page-cache path (it would block on the device).
        assert dict(d.statistics().extra)["fast_path_hits"] == 0
        # A misaligned direct read is the kernel's EINVAL, carrying the path.
        bad = Op(OpKind.READ, fd, 1, (dst[:PAGE],), path=str(p))
        d.submit([bad])
        wait_all(d, [bad])
        assert isinstance(bad.error, OSError) and bad.error.errno == errno.EINVAL
        assert bad.error.filename == str(p)
    finally:
        d.close()
        os.close(fd)


def test_fileno_is_readable_after_an_inline_completion(tmp_path: Path, uring: IoUringDriver) -> None:
    p = tmp_path / "warm.bin"
    data = make_file(p, PAGE)
    p.read_bytes()  # warm the page cache
    fd = os.open(p, os.O_RDONLY)
    try:
        op = read_op(fd, 0, [PAGE])
        uring.submit([op])
        assert op.state is OpState.COMPLETED  # served from the page cache inside submit
        readable, _, _ = select.select([uring.fileno()], [], [], 5)
        assert readable == [uring.fileno()]
        assert uring.reap() == [op]
        assert bytes(op.buffers[0]) == data
        readable, _, _ = select.select([uring.fileno()], [], [], 0)
        assert readable == []  # reap cleared it
    finally:
        os.close(fd)


def test_fast_path_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOPG_IO_URING_NOWAIT", "0")
    d = IoUringDriver()
    try:
        assert d.nowait_fast_path is False
    finally:
        d.close()
    monkeypatch.delenv("AIOPG_IO_URING_NOWAIT")
    d = IoUringDriver(nowait_fast_path="0")
    try:
        assert d.nowait_fast_path is False
    finally:
        d.close()
    with pytest.raises(ValueError, match="nowait_fast_path='maybe' is not a boolean"):
        IoUringDriver(nowait_fast_path="maybe")
    with pytest.raises(ValueError, match="entries=0 is out of range"):
        IoUringDriver(entries=0)


def test_sync_fallocate_truncate_and_nop(tmp_path: Path, uring: IoUringDriver) -> None:
    p = tmp_path / "meta.bin"
    fd = os.open(p, os.O_RDWR | os.O_CREAT)
    try:
        ops = [
            Op(OpKind.FALLOCATE, fd, 0, length=3 * PAGE),
            Op(OpKind.FSYNC, fd),
            Op(OpKind.FDATASYNC, fd),
            Op(OpKind.NOP, fd),
        ]
        uring.submit(ops)
        wait_all(uring, ops)
        assert [(op.result, op.error) for op in ops] == [(0, None)] * 4
        assert os.fstat(fd).st_size == 3 * PAGE
        t = Op(OpKind.FTRUNCATE, fd, length=100)
        uring.submit([t])
        wait_all(uring, [t])
        assert t.result == 0 and os.fstat(fd).st_size == 100
        # Kernels without IORING_OP_FTRUNCATE (< 6.9) truncate inline instead.
        uring._ftruncate = False
        t2 = Op(OpKind.FTRUNCATE, fd, length=7)
        uring.submit([t2])
        wait_all(uring, [t2])
        assert t2.result == 0 and os.fstat(fd).st_size == 7
    finally:
        os.close(fd)


def test_errors_carry_the_path(tmp_path: Path, uring: IoUringDriver) -> None:
    p = tmp_path / "wo.bin"
    p.write_bytes(b"x" * PAGE)
    fd = os.open(p, os.O_WRONLY)
    try:
        r = read_op(fd, 0, [PAGE], path=str(p))
        neg = read_op(fd, -1, [PAGE], path=str(p))
        ro = Op(OpKind.READ, fd, 0, (memoryview(b"immutable"),), path=str(p))
        empty = Op(OpKind.READ, fd, 0, (memoryview(bytearray(0)),), path=str(p))
        uring.submit([r, neg, ro, empty])
        wait_all(uring, [r, neg, ro, empty])
        assert isinstance(r.error, OSError) and r.error.errno == errno.EBADF
        assert r.error.filename == str(p)
        assert isinstance(neg.error, OSError) and neg.error.errno == errno.EINVAL
        assert neg.error.filename == str(p)
        assert isinstance(ro.error, OSError) and ro.error.errno == errno.EFAULT
        assert empty.error is None and empty.result == 0
    finally:
        os.close(fd)


# -- short transfers and EAGAIN --------------------------------------------------------------


@pytest.mark.parametrize("fast_path", [True, False], ids=["nowait", "ring-only"])
def test_read_past_eof_is_continued_to_eof(tmp_path: Path, fast_path: bool) -> None:
    p = tmp_path / "short.bin"
    data = make_file(p, 10_000)
    fd = os.open(p, os.O_RDONLY)
    d = IoUringDriver(nowait_fast_path=fast_path)
    try:
        across = read_op(fd, 0, [PAGE, PAGE, PAGE, PAGE])  # 16 KiB asked, 10 000 there
        tail = read_op(fd, 9_000, [PAGE])
        beyond = read_op(fd, 50_000, [PAGE])
        d.submit([across, tail, beyond])
        wait_all(d, [across, tail, beyond])
        assert across.result == 10_000
        assert b"".join(bytes(b) for b in across.buffers)[:10_000] == data
        assert tail.result == 1_000 and bytes(tail.buffers[0][:1_000]) == data[9_000:]
        assert beyond.result == 0
    finally:
        d.close()
        os.close(fd)


def test_file_shrinking_under_a_read(tmp_path: Path) -> None:
    """The first completion is short (5 000 of 32 KiB); before the rest is read the file
    shrinks to 12 000 bytes: the op ends at the new EOF with what is really there."""
    p = tmp_path / "shrink.bin"
    data = make_file(p, 8 * PAGE)
    fd = os.open(p, os.O_RDWR)

    def short_then_shrink(op: Op, res: int) -> int:
        os.truncate(p, 12_000)
        return min(res, 5_000)

    d = Rewriting(short_then_shrink, nowait_fast_path=False)
    try:
        op = read_op(fd, 0, [8 * PAGE], path=str(p))
        d.submit([op])
        wait_all(d, [op])
        assert op.error is None and op.result == 12_000
        assert bytes(op.buffers[0][:12_000]) == data[:12_000]
        stats = d.statistics()
        assert stats.short_transfers >= 1 and stats.retries >= 1
    finally:
        d.close()
        os.close(fd)


def test_short_write_is_continued(tmp_path: Path) -> None:
    p = tmp_path / "sw.bin"
    fd = os.open(p, os.O_RDWR | os.O_CREAT)
    payload = random.Random(3).randbytes(5 * PAGE)
    d = Rewriting(lambda op, res: min(res, 777), nowait_fast_path=False)
    try:
        w = Op(OpKind.WRITEV, fd, 0, (memoryview(payload[:PAGE]), memoryview(payload[PAGE:])))
        d.submit([w])
        wait_all(d, [w])
        assert w.error is None and w.result == len(payload)
        assert p.read_bytes() == payload
    finally:
        d.close()
        os.close(fd)


def test_write_of_zero_bytes_is_enospc(tmp_path: Path) -> None:
    p = tmp_path / "full.bin"
    fd = os.open(p, os.O_RDWR | os.O_CREAT)
    d = Rewriting(lambda op, res: 0, nowait_fast_path=False)
    try:
        w = Op(OpKind.WRITE, fd, 0, (memoryview(b"abc"),), path=str(p))
        d.submit([w])
        wait_all(d, [w])
        assert isinstance(w.error, OSError) and w.error.errno == errno.ENOSPC
        assert w.error.filename == str(p)
    finally:
        d.close()
        os.close(fd)


@pytest.mark.parametrize("fast_path", [True, False], ids=["nowait", "ring-only"])
def test_eagain_completions_are_resubmitted(tmp_path: Path, fast_path: bool) -> None:
    p = tmp_path / "again.bin"
    data = make_file(p, 32 * PAGE)
    fd = os.open(p, os.O_RDWR)
    # With the fast path on, drop the file from the page cache so reads reach the ring.
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    d = Rewriting(lambda op, res: -errno.EAGAIN, nowait_fast_path=fast_path)
    try:
        ops = [read_op(fd, i * PAGE, [PAGE]) for i in range(32)]
        ops.append(Op(OpKind.FDATASYNC, fd))
        d.submit(ops)
        wait_all(d, ops)
        for i, op in enumerate(ops[:32]):
            assert op.error is None and bytes(op.buffers[0]) == data[i * PAGE : (i + 1) * PAGE]
        assert ops[32].error is None
        ring_ops = len(d.seen)
        assert ring_ops >= 1  # the fdatasync at least went through the ring
        assert dict(d.statistics().extra)["eagain_retries"] == ring_ops
    finally:
        d.close()
        os.close(fd)


def test_persistent_eagain_gives_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io_uring, "MAX_EAGAIN_RETRIES", 3)
    p = tmp_path / "stuck.bin"
    p.write_bytes(b"x" * PAGE)
    fd = os.open(p, os.O_RDONLY)

    class AlwaysAgain(IoUringDriver):
        def _on_cqe(self, op: Op, res: int) -> bool:
            return super()._on_cqe(op, -errno.EAGAIN)

    d = AlwaysAgain(nowait_fast_path=False)
    try:
        op = read_op(fd, 0, [PAGE], path=str(p))
        d.submit([op])
        wait_all(d, [op])
        assert isinstance(op.error, BlockingIOError) and op.error.filename == str(p)
        assert op.retries == 3
    finally:
        d.close()
        os.close(fd)


# -- overflow, batching ----------------------------------------------------------------------


def test_tiny_ring_with_thousands_of_ops(tmp_path: Path) -> None:
    """4 SQ entries, 8 CQ entries, 3 000 ops in one submit: the SQ is flushed whenever it is
    full, the CQ overflows into the kernel's list and is flushed in reap; no op is lost."""
    p = tmp_path / "many.bin"
    data = make_file(p, 64 * PAGE)
    before = open_fds()
    fd = os.open(p, os.O_RDONLY)
    d = IoUringDriver(entries=4, nowait_fast_path=False)
    try:
        rng = random.Random(5)
        ops: list[Op] = []
        for _ in range(3_000):
            if rng.random() < 0.3:
                ops.append(Op(OpKind.NOP, fd))
            else:
                ops.append(read_op(fd, rng.randrange(64) * PAGE, [512, PAGE - 512]))
        d.submit(ops)
        got = wait_all(d, ops)
        assert len(got) == len(ops)
        for op in ops:
            assert op.error is None
            if op.kind is OpKind.READV:
                assert op.result == PAGE
                assert b"".join(bytes(b) for b in op.buffers) == data[op.offset : op.offset + PAGE]
        stats = d.statistics()
        assert stats.overflows > 0
        assert stats.submit_calls == 1
        assert dict(stats.extra)["ring_submits"] > 1  # a full SQ was flushed mid-batch
        assert stats.completed == len(ops) and stats.in_flight == 0
    finally:
        d.close()
        os.close(fd)
    assert open_fds() == before


# -- cancellation ----------------------------------------------------------------------------


def test_cancel_a_read_that_would_never_complete(uring: IoUringDriver) -> None:
    rfd, wfd = os.pipe()
    try:
        op = read_op(rfd, 0, [64])
        uring.submit([op])
        assert op.state is OpState.SUBMITTED
        uring.cancel(op)
        wait_all(uring, [op])
        assert isinstance(op.error, OSError) and op.error.errno == errno.ECANCELED
        assert uring.statistics().cancelled == 1
    finally:
        os.close(rfd)
        os.close(wfd)


def test_cancel_that_finds_no_sq_slot_is_retried(uring: IoUringDriver) -> None:
    """The SQ stays full even after a flush (the kernel refused the submit): the cancel is
    kept and sent by the next reap, so an op only a cancel can end still ends."""
    rfd, wfd = os.pipe()
    try:
        op = read_op(rfd, 0, [64])
        uring.submit([op])
        real = uring._get_sqe
        uring._get_sqe = lambda: None  # type: ignore[method-assign]
        uring.cancel(op)
        uring._get_sqe = real  # type: ignore[method-assign]
        assert uring._cancel_later == [op]
        wait_all(uring, [op], timeout=5)
        assert isinstance(op.error, OSError) and op.error.errno == errno.ECANCELED
        assert "Operation canceled" in str(op.error)
        assert uring._cancel_later == []
    finally:
        os.close(rfd)
        os.close(wfd)


def test_close_whose_cancel_finds_no_sq_slot_still_drains() -> None:
    rfd, wfd = os.pipe()
    d = IoUringDriver()
    try:
        op = read_op(rfd, 0, [64])
        d.submit([op])
        real = d._get_sqe
        calls: list[int] = []

        def full_twice() -> object:
            calls.append(1)
            return None if len(calls) <= 2 else real()

        d._get_sqe = full_twice  # type: ignore[method-assign]
        assert d.close() == [op]
        assert len(calls) == 3  # the cancel of everything was retried until it found a slot
        assert isinstance(op.error, OSError) and op.error.errno == errno.ECANCELED
    finally:
        os.close(rfd)
        os.close(wfd)


def _storm(n_ops: int, seed: int, data_dir: Path) -> None:
    """Reads (O_DIRECT, buffered, and 5% from an empty pipe, which only a cancel ends) into
    slots framed by canaries, with random cancels.

    After an op is reaped its slot is overwritten with a poison pattern, as a pool would
    reuse it; a slot must still hold the poison when it is next taken, and at the end every
    canary and every poisoned slot must be intact: the kernel never wrote into a buffer
    after its op came back.
    """
    rng = random.Random(seed)
    size = 256 * PAGE
    p = data_dir / "storm.bin"
    data = make_file(p, size, seed)
    fds = [os.open(p, os.O_RDONLY | os.O_DIRECT), os.open(p, os.O_RDONLY)]
    rfd, wfd = os.pipe()
    canary = b"\xa5" * PAGE
    poison = b"\x5a" * PAGE
    slots = 512
    arena = mmap.mmap(-1, (2 * slots + 1) * PAGE)
    view = memoryview(arena)
    for i in range(slots + 1):
        view[2 * i * PAGE : (2 * i + 1) * PAGE] = canary
    free = deque(range(slots))  # FIFO: a returned slot rests as long as possible before reuse
    slot_of: dict[int, int] = {}
    in_flight: list[Op] = []
    d = IoUringDriver(entries=64)
    issued = finished = cancelled = 0
    try:
        while finished < n_ops:
            batch: list[Op] = []
            while free and issued < n_ops and len(batch) < rng.randint(1, 64):
                s = free.popleft()
                buf = view[(2 * s + 1) * PAGE : (2 * s + 2) * PAGE]
                assert buf in (poison, bytes(PAGE)), f"slot {s} written after its op was reaped"
                if rng.random() < 0.05:
                    op = Op(OpKind.READ, rfd, 0, (buf,))
                else:
                    off = rng.randrange(size // PAGE) * PAGE
                    op = Op(OpKind.READ, fds[rng.random() < 0.3], off, (buf,))
                slot_of[id(op)] = s
                batch.append(op)
                issued += 1
            if batch:
                d.submit(batch)
                in_flight.extend(batch)
            for op in rng.sample(in_flight, k=len(in_flight) // 3):
                d.cancel(op)
            select.select([d.fileno()], [], [], 0.01 if not batch else 0)
            for op in d.reap():
                s = slot_of.pop(id(op))
                if op.error is None:
                    assert op.result == PAGE
                    assert bytes(op.buffers[0]) == data[op.offset : op.offset + PAGE]
                else:
                    assert op.error.errno == errno.ECANCELED, op.error
                    cancelled += 1
                in_flight.remove(op)
                view[(2 * s + 1) * PAGE : (2 * s + 2) * PAGE] = poison
                free.append(s)
                finished += 1
        assert not in_flight and d.statistics().in_flight == 0
    finally:
        leftovers = d.close()
        for fd in [*fds, rfd, wfd]:
            os.close(fd)
    assert leftovers == []
    for i in range(slots + 1):
        assert view[2 * i * PAGE : (2 * i + 1) * PAGE] == canary, f"canary {i} overwritten"
    for s in range(slots):
        got = bytes(view[(2 * s + 1) * PAGE : (2 * s + 2) * PAGE])
        assert got in (poison, bytes(PAGE)), f"slot {s} written after its op was reaped"
    assert cancelled > 0


def test_cancellation_storm(data_dir: Path) -> None:
    before = open_fds()
    _storm(5_000, 11, data_dir)
    assert open_fds() == before


@pytest.mark.slow
def test_cancellation_storm_large(data_dir: Path) -> None:
    before = open_fds()
    _storm(100_000, 12, data_dir)
    assert open_fds() == before


# -- close, fork, probe ----------------------------------------------------------------------


def test_an_iovec_laid_out_otherwise_makes_the_driver_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver writes into the binding's Iovec array (its memoryviews would never be
    released otherwise): that layout is checked, and a binding where it differs is refused
    with the reason rather than written into blindly."""
    assert io_uring._check_iovec_layout() is True  # the installed binding: as expected
    monkeypatch.setattr(io_uring, "_IOVEC_CHECKED", [False])
    reason = io_uring._probe()
    assert reason is not None and "Iovec is not laid out as this driver expects" in reason
    with pytest.raises(aiopg_io.DriverUnavailableError, match=r"driver 'io_uring' cannot run here: .*Iovec"):
        IoUringDriver()


def test_close_cancels_and_drains_ops_in_flight(data_dir: Path) -> None:
    before = open_fds()
    p = data_dir / "c.bin"
    make_file(p, 64 * PAGE)
    fd = os.open(p, os.O_RDONLY | os.O_DIRECT)
    rfd, wfd = os.pipe()
    m = mmap.mmap(-1, 64 * PAGE)
    view = memoryview(m)
    d = IoUringDriver()
    try:
        stuck = read_op(rfd, 0, [16])  # a pipe nobody writes to: only a cancel ends it
        reads = [Op(OpKind.READ, fd, i * PAGE, (view[i * PAGE : (i + 1) * PAGE],)) for i in range(64)]
        d.submit([stuck, *reads])
        drained = d.close()
        assert {id(op) for op in drained} == {id(op) for op in [stuck, *reads]}
        assert all(op.state is OpState.REAPED for op in drained)
        assert isinstance(stuck.error, OSError) and stuck.error.errno == errno.ECANCELED
        for op in reads:
            assert op.result == PAGE or (op.error is not None and op.error.errno == errno.ECANCELED)
        assert d.close() == []  # idempotent
        with pytest.raises(RuntimeError, match="io_uring driver is closed"):
            d.submit([Op(OpKind.NOP, fd)])
    finally:
        os.close(fd)
        os.close(rfd)
        os.close(wfd)
    assert open_fds() == before


def test_fork_child_gets_a_clear_error_and_can_open_its_own(uring: IoUringDriver) -> None:
    def child() -> str:
        try:
            uring.submit([Op(OpKind.NOP, -1)])
        except RuntimeError as exc:
            msg = str(exc)
        else:
            msg = "no error"
        own = IoUringDriver(entries=8)
        op = Op(OpKind.NOP, -1)
        own.submit([op])
        round_trip = wait_all(own, [op], timeout=5) == [op] and op.result == 0
        own.close()
        return f"{round_trip}|{msg}"

    child_round_trip, msg = in_child(child).split("|", 1)
    assert child_round_trip == "True"
    assert "belongs to the parent process" in msg and "anew in the child" in msg
    # The parent's ring is untouched by all this.
    op = Op(OpKind.NOP, -1)
    uring.submit([op])
    assert wait_all(uring, [op]) == [op] and op.result == 0


@pytest.fixture
def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io_uring, "_REASONS", {})


@pytest.mark.usefixtures("fresh_probe")
class TestUnavailableReason:
    def test_available_here(self) -> None:
        assert IoUringDriver.unavailable_reason() is None
        assert IoUringDriver.unavailable_reason(direct=True) is None

    def test_old_kernel(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(io_uring, "_kernel_version", lambda: (6, 8))
        reason = IoUringDriver.unavailable_reason()
        assert reason is not None and "older than the liburing package needs (>= 6.14)" in reason

    def test_not_importable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(io_uring, "_L", None)
        monkeypatch.setattr(io_uring, "_IMPORT_ERROR", "ModuleNotFoundError: No module named 'liburing'")
        reason = IoUringDriver.unavailable_reason()
        assert reason is not None and reason.startswith("the liburing package cannot be imported")

    def test_disabled_by_sysctl(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(io_uring, "io_uring_disabled", lambda: 2)
        reason = IoUringDriver.unavailable_reason()
        assert reason is not None and "io_uring_disabled = 2" in reason

    @pytest.mark.parametrize(
        ("err", "disabled", "expect"),
        [
            (errno.EPERM, 0, "seccomp"),
            (errno.EPERM, 1, "io_uring_disabled = 1 to members of group"),
            (errno.ENOMEM, 0, "RLIMIT_MEMLOCK"),
            (errno.ENOSYS, 0, "not implemented (ENOSYS)"),
        ],
    )
    def test_setup_refused(
        self, monkeypatch: pytest.MonkeyPatch, err: int, disabled: int, expect: str
    ) -> None:
        def refuse(entries: int) -> object:
            raise OSError(err, os.strerror(err))

        monkeypatch.setattr(io_uring, "_setup_ring", refuse)
        monkeypatch.setattr(io_uring, "io_uring_disabled", lambda: disabled)
        reason = IoUringDriver.unavailable_reason()
        assert reason is not None and expect in reason
        with pytest.raises(aiopg_io.DriverUnavailableError, match="cannot set up a ring of 256 entries"):
            IoUringDriver()

    def test_probe_that_crashes_is_a_reason(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def crash(entries: int) -> object:
            raise RuntimeError("boom")

        monkeypatch.setattr(io_uring, "_setup_ring", crash)
        assert IoUringDriver.unavailable_reason() == "io_uring probe failed: RuntimeError('boom')"

    def test_auto_falls_back_and_info_says_why(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """io_uring refused (a seccomp profile, as in a container): ``auto`` picks the worker
        driver and ``python -m aiopg_io info`` prints the reason on the io_uring lines, the
        C ring's too where its extension loaded."""
        from aiopg_io import _info, drivers
        from aiopg_io.drivers import io_uring_c

        def refuse(entries: int, **kwargs: object) -> object:
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(io_uring, "_setup_ring", refuse)
        monkeypatch.setattr(io_uring, "io_uring_disabled", lambda: 0)
        monkeypatch.setattr(drivers, "_reasons", {})
        # The C ring is refused the same way: its probe sets up a ring of its own.
        monkeypatch.setattr(io_uring_c, "_REASON", [])
        c_loaded = io_uring_c._U is not None
        if c_loaded:
            monkeypatch.setattr(io_uring_c._U, "Ring", refuse)
        assert drivers.resolve("auto") == drivers.DriverSpec("worker")
        with pytest.raises(
            aiopg_io.DriverUnavailableError, match=r"driver 'io_uring' cannot run here: .*seccomp"
        ):
            drivers.resolve("io_uring")
        out = _info.render(_info.machine_matrix(str(tmp_path)))
        line = next(ln for ln in out.splitlines() if ln.strip().startswith("io_uring "))
        assert "no: io_uring_setup was refused (EPERM): a seccomp filter blocks it" in line
        assert "\n  auto -> worker\n" in out + "\n"
        if c_loaded:
            line = next(ln for ln in out.splitlines() if ln.strip().startswith("io_uring_c "))
            assert "no: io_uring_setup was refused (EPERM): a seccomp filter blocks it" in line
            compiled = next(ln for ln in out.splitlines() if ln.strip().startswith("compiled "))
            assert "); but it cannot run here: io_uring_setup was refused (EPERM)" in compiled, compiled

    def test_cached(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[int] = []
        monkeypatch.setattr(io_uring, "_probe", lambda: calls.append(1))
        IoUringDriver.unavailable_reason()
        IoUringDriver.unavailable_reason()
        assert calls == [1]


# -- through the file API, on asyncio, uvloop and trio ---------------------------------------


@pytest.mark.anyio
async def test_file_api_short_reads_and_direct_io(data_dir: Path) -> None:
    before = open_fds()
    p = data_dir / "api.bin"
    data = make_file(p, 10 * PAGE + 123)
    async with aiopg_io.open(p, "rb", driver="io_uring") as f:
        buf = bytearray(4 * PAGE)
        assert await f.preadinto(buf, 8 * PAGE) == 2 * PAGE + 123
        assert bytes(buf[: 2 * PAGE + 123]) == data[8 * PAGE :]
        assert await f.pread(PAGE, 11 * PAGE) == b""
        got = await f.read()
        assert got == data
    async with aiopg_io.open(p, "r+b", driver="io_uring", direct=True) as f:
        abuf = aiopg_io.aligned_buffer(2 * PAGE)
        abuf[:] = b"\x01" * (2 * PAGE)
        assert await f.pwrite(abuf, 2 * PAGE) == 2 * PAGE
        await f.fdatasync()
        rbuf = aiopg_io.aligned_buffer(4 * PAGE)
        assert await f.preadinto(rbuf, 0) == 4 * PAGE
        assert bytes(rbuf) == data[: 2 * PAGE] + b"\x01" * (2 * PAGE)
    assert open_fds() == before


@pytest.mark.anyio
async def test_file_api_through_the_fault_injector(tmp_path: Path) -> None:
    """The package's fault injector over io_uring: a transient EAGAIN is retried unseen,
    an injected EIO surfaces with the path, and the ring serves everything else."""
    from aiopg_io.testing import Fault, FaultInjector

    p = tmp_path / "inj.bin"
    data = make_file(p, 8 * PAGE)
    injector = FaultInjector(
        Fault(kind="read", nth=1, errno=errno.EAGAIN, transient=True),
        Fault(kind="read", nth=3, errno=errno.EIO),
        driver="io_uring",
    )
    async with aiopg_io.open(p, "rb", driver=injector) as f:
        assert await f.pread(PAGE, 0) == data[:PAGE]  # 1st read: EAGAIN, retried
        assert await f.pread(PAGE, PAGE) == data[PAGE : 2 * PAGE]
        with pytest.raises(OSError, match="Input/output error") as info:
            await f.pread(PAGE, 2 * PAGE)
        assert info.value.filename == str(p)
        assert await f.pread(PAGE, 3 * PAGE) == data[3 * PAGE : 4 * PAGE]
    assert [e.kind.value for e in injector.log] == ["read", "read"]


def test_reap_batch_leaves_the_rest_readable() -> None:
    d = IoUringDriver(reap_batch=3)
    try:
        ops = [Op(OpKind.NOP, -1) for _ in range(20)]
        d.submit(ops)
        got: list[Op] = []
        while len(got) < len(ops):
            readable, _, _ = select.select([d.fileno()], [], [], 5)
            assert readable, "completions left in the CQ must keep fileno() readable"
            batch = d.reap()
            assert len(batch) <= 3
            got.extend(batch)
        assert {id(op) for op in got} == {id(op) for op in ops}
        assert all(op.result == 0 for op in got)
    finally:
        d.close()
    with pytest.raises(ValueError, match="reap_batch=-1 must be 0"):
        IoUringDriver(reap_batch=-1)


@pytest.mark.anyio
@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "direct"])
async def test_loop_buffers_are_free_once_the_ring_is_done(data_dir: Path, direct: bool) -> None:
    """Through the file API, a buffer read into or written from through the ring (a page
    cache miss, direct I/O) is the caller's again once the call returns: it can be resized,
    closed, freed. The PyPI binding kept every one exported and alive forever."""
    p = data_dir / "free.bin"
    data = make_file(p, 16 * PAGE)
    async with aiopg_io.open(p, "r+b", direct=direct, driver="io_uring:nowait_fast_path=0") as f:
        driver = f._ctx.driver
        assert type(driver) is IoUringDriver
        m = mmap.mmap(-1, 2 * PAGE)  # page-aligned, as direct I/O needs
        assert await f.preadinto(m, PAGE) == 2 * PAGE
        assert m[:] == data[PAGE : 3 * PAGE]
        assert await f.pwritev([memoryview(m)[:PAGE], memoryview(m)[PAGE:]], 8 * PAGE) == 2 * PAGE
        m.close()  # BufferError while an export is left
        # Fresh buffers (page-aligned mmaps for direct I/O), each freed when dropped.
        alive: list[weakref.ref[object]] = []
        for i in range(32):
            at = (i % 8) * PAGE
            buf = mmap.mmap(-1, PAGE) if direct else Buf(PAGE)
            alive.append(weakref.ref(buf))
            assert await f.preadinto(buf, at) == PAGE
            assert buf[:] == data[at : at + PAGE]
            out = mmap.mmap(-1, PAGE) if direct else Buf(PAGE)
            out[:] = bytes([i]) * PAGE
            alive.append(weakref.ref(out))
            assert await f.pwrite(out, 12 * PAGE) == PAGE
            for b in (buf, out):  # the caller's again at once (BufferError while exported)
                if isinstance(b, Buf):
                    b.extend(b"x")
                else:
                    b.close()
        del buf, out, b
        gc.collect()
        assert [r for r in alive if r() is not None] == []
        assert dict(driver.statistics().extra)["fast_path_hits"] == 0  # all went to the ring
    expect = bytearray(data)
    expect[8 * PAGE : 10 * PAGE] = data[PAGE : 3 * PAGE]
    expect[12 * PAGE : 13 * PAGE] = bytes([31]) * PAGE
    assert p.read_bytes() == bytes(expect)


# -- the scenarios on the event loops: asyncio, uvloop and trio ----------------------
#
# The driver-level tests above drive the ring by hand; these run the same scenarios through
# aiopg_io.open / the IOContext on every loop (anyio_backend), with the driver axis fixed to
# io_uring. A DriverFactory hands the context a driver built for the scenario.


class Uncapped(IoUringDriver):
    """Tells the IOContext it may have any number of ops out, so a tiny ring's CQ overflows."""

    @property
    def capabilities(self) -> aiopg_io.drivers.Capabilities:
        return replace(super().capabilities, max_in_flight=100_000)


@pytest.mark.anyio
async def test_loop_one_ring_submit_per_tick_and_batched_reaps(tmp_path: Path) -> None:
    p = tmp_path / "tick.bin"
    data = make_file(p, 32 * PAGE)
    async with aiopg_io.open(p, "rb", driver="io_uring:nowait_fast_path=0") as f:
        driver = f._ctx.driver
        assert isinstance(driver, IoUringDriver)
        ready = anyio.Event()
        out: dict[int, bytes] = {}

        async def reader(i: int) -> None:
            await ready.wait()
            out[i] = await f.pread(PAGE, i * PAGE)

        async with anyio.create_task_group() as tg:
            for i in range(32):
                tg.start_soon(reader, i)
            await anyio.sleep(0.01)
            before = driver.statistics()
            ready.set()
        after = driver.statistics()
    assert [out[i] for i in range(32)] == [data[i * PAGE : (i + 1) * PAGE] for i in range(32)]
    assert after.submit_calls - before.submit_calls == 1
    assert dict(after.extra)["ring_submits"] - dict(before.extra)["ring_submits"] == 1
    assert after.reap_calls - before.reap_calls <= 32 // 8 + 2  # reap_batch=8: a few reaps, not 32


@pytest.mark.anyio
async def test_loop_kernel_errors_become_oserrors_with_the_path(data_dir: Path) -> None:
    """A negative CQE result reaches the awaiting task as the matching OSError subclass,
    with errno, message and the file's path."""
    from aiopg_io._context import get_context

    wo = data_dir / "wo.bin"
    wo.write_bytes(b"x" * PAGE)
    fd_wo = os.open(wo, os.O_WRONLY)
    fd_direct = os.open(wo, os.O_RDONLY | os.O_DIRECT)
    ctx = get_context("io_uring")
    ctx.acquire()
    try:
        with pytest.raises(OSError, match="Bad file descriptor") as bad:
            await ctx.run(Op(OpKind.READ, fd_wo, 0, (memoryview(bytearray(PAGE)),), path=str(wo)))
        assert bad.value.errno == errno.EBADF and bad.value.filename == str(wo)
        buf = memoryview(aiopg_io.aligned_buffer(2 * PAGE))
        with pytest.raises(OSError, match="Invalid argument") as misaligned:  # O_DIRECT at offset 1
            await ctx.run(Op(OpKind.READ, fd_direct, 1, (buf[:PAGE],), path=str(wo)))
        assert misaligned.value.errno == errno.EINVAL and misaligned.value.filename == str(wo)
    finally:
        await ctx.release()
        os.close(fd_wo)
        os.close(fd_direct)


@pytest.mark.anyio
async def test_loop_short_reads_are_continued_past_eof_and_on_a_shrinking_file(tmp_path: Path) -> None:
    """Every first completion is cut to 1 000 bytes (as a partly cached read would be): the
    driver reads the rest, stops at EOF, and a file that shrinks meanwhile ends the read at
    its new end. Short writes are continued the same way."""
    p = tmp_path / "short.bin"
    data = make_file(p, 10_000)
    shrink = tmp_path / "shrink.bin"
    shrink_data = make_file(shrink, 8 * PAGE, seed=2)

    def cut(op: Op, res: int) -> int:
        if op.path == str(shrink):
            os.truncate(shrink, 12_000)
        return min(res, 1_000)

    factory = Factory(lambda: Rewriting(cut, nowait_fast_path=False), "io_uring")
    async with aiopg_io.open(p, "r+b", driver=factory) as f:
        assert await f.pread(4 * PAGE, 0) == data  # across EOF: 16 KiB asked, 10 000 there
        assert await f.pread(PAGE, 9_000) == data[9_000:]
        assert await f.pread(PAGE, 50_000) == b""  # past EOF
        bufs = [bytearray(3000), bytearray(3000)]
        assert await f.preadv(bufs, 5_000) == 5_000
        assert bytes(bufs[0]) + bytes(bufs[1][:2_000]) == data[5_000:]
        payload = random.Random(3).randbytes(5 * PAGE)
        assert await f.pwrite(payload, 0) == len(payload)
        stats = f._ctx.driver.statistics()
        # Continued: the read across EOF twice (then 0 is EOF), the one at 9 000 once, the
        # preadv twice, the write once; not the read past EOF.
        assert stats.short_transfers == 6 and stats.retries == 6
    assert p.read_bytes() == payload
    async with aiopg_io.open(shrink, "rb", driver=factory) as f:
        assert await f.pread(8 * PAGE, 0) == shrink_data[:12_000]


@pytest.mark.anyio
async def test_loop_eagain_completions_are_resubmitted(tmp_path: Path) -> None:
    p = tmp_path / "again.bin"
    data = make_file(p, 16 * PAGE)
    factory = Factory(lambda: Rewriting(lambda op, res: -errno.EAGAIN, nowait_fast_path=False), "io_uring")
    async with aiopg_io.open(p, "rb", driver=factory) as f:
        got: dict[int, bytes] = {}

        async def reader(i: int) -> None:
            got[i] = await f.pread(PAGE, i * PAGE)

        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(reader, i)
        assert dict(f._ctx.driver.statistics().extra)["eagain_retries"] == 16
    assert b"".join(got[i] for i in range(16)) == data


@pytest.mark.anyio
async def test_loop_eagain_and_short_results_through_the_fault_injector(tmp_path: Path) -> None:
    """aiopg_io.testing's injector over io_uring: a transient EAGAIN is retried unseen, a
    short read returns what was read, a short write fails with ENOSPC naming the path and
    leaves just the short part in the file."""
    from aiopg_io.testing import Fault, FaultInjector

    p = tmp_path / "inj.bin"
    data = make_file(p, 8 * PAGE)
    injector = FaultInjector(
        Fault(kind="reads", nth=1, times=4, errno=errno.EAGAIN, transient=True),
        Fault(kind="reads", nth=2, short=100),
        Fault(kind="writes", nth=1, short=512),
        driver="io_uring",
    )
    async with aiopg_io.open(p, "r+b", driver=injector) as f:
        parts = [await f.pread(PAGE, i * PAGE) for i in range(4)]  # ops 1-4: EAGAIN, retried
        assert parts == [data[i * PAGE : (i + 1) * PAGE] for i in range(4)]
        assert await f.pread(PAGE, 4 * PAGE) == data[4 * PAGE : 4 * PAGE + 100]  # read no. 5: short
        with pytest.raises(OSError, match="No space left on device") as info:
            await f.pwrite(b"\xee" * PAGE, 0)
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(p)
        assert await f.pread(PAGE, 0) == b"\xee" * 512 + data[512:PAGE]
    assert [(e.kind.value, e.action) for e in injector.log] == [("read", "retry")] * 4 + [
        ("read", "short"),
        ("write", "short"),
    ]


@pytest.mark.anyio
async def test_loop_cq_overflow_with_a_tiny_ring(tmp_path: Path) -> None:
    """4 SQ / 8 CQ entries and 3 000 reads out at once (the context is told it may): the SQ
    is flushed whenever it fills, the CQ overflows into the kernel's list, and every read
    still returns its own data."""
    p = tmp_path / "many.bin"
    data = make_file(p, 64 * PAGE)
    before = open_fds()
    factory = Factory(lambda: Uncapped(entries=4, nowait_fast_path=False), "io_uring")
    rng = random.Random(5)
    offsets = [rng.randrange(64) * PAGE for _ in range(3_000)]
    got: list[bytes] = [b""] * len(offsets)
    async with aiopg_io.open(p, "rb", driver=factory) as f:

        async def reader(i: int) -> None:
            got[i] = await f.pread(PAGE, offsets[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(offsets)):
                tg.start_soon(reader, i)
        stats = f._ctx.driver.statistics()
    assert all(got[i] == data[off : off + PAGE] for i, off in enumerate(offsets))
    assert stats.overflows > 0
    assert dict(stats.extra)["ring_submits"] > stats.submit_calls  # full SQs flushed mid-batch
    assert stats.completed == stats.submitted and stats.in_flight == 0
    assert open_fds() == before


async def _loop_storm(n_ops: int, seed: int, data_dir: Path) -> None:
    """64 tasks read 4 KiB pages (30% O_DIRECT, 5% from an empty pipe, which only a cancel
    ends) into slots of one mmap arena, each slot framed by canary pages; a canceller task
    cancels random reads at random moments (still staged, in the ring, or completed but not
    yet resumed). A returned slot is poisoned and must still hold the poison when it is next
    taken; at the end every canary and slot is intact and the fd table is as before."""
    before = open_fds()
    rng = random.Random(seed)
    size = 256 * PAGE
    p = data_dir / "lstorm.bin"
    data = make_file(p, size, seed)
    canary, poison, zero = b"\xa5" * PAGE, b"\x5a" * PAGE, bytes(PAGE)
    workers, slots = 64, 192
    arena = mmap.mmap(-1, (2 * slots + 1) * PAGE)
    view = memoryview(arena)
    for i in range(slots + 1):
        view[2 * i * PAGE : (2 * i + 1) * PAGE] = canary
    free = deque(range(slots))
    live: dict[int, anyio.CancelScope] = {}
    issued = completed = cancelled = 0
    done = False

    async with (
        aiopg_io.open(p, "rb", driver="io_uring") as buffered,
        aiopg_io.open(p, "rb", driver="io_uring", direct=True) as direct,
    ):
        ctx = buffered._ctx
        assert direct._ctx is ctx  # one ring serves both
        rfd, wfd = os.pipe()

        async def worker() -> None:
            nonlocal issued, completed, cancelled
            while issued < n_ops:
                issued += 1
                s = free.popleft()
                frame = view[(2 * s + 1) * PAGE : (2 * s + 2) * PAGE]
                assert frame in (poison, zero), f"slot {s} written after its read returned"
                off = rng.randrange(size // PAGE) * PAGE
                pick = rng.random()
                with anyio.CancelScope() as scope:
                    live[s] = scope
                    try:
                        if pick < 0.05:
                            await ctx.run(Op(OpKind.READ, rfd, 0, (frame,), path="<pipe>"))
                            raise AssertionError("a read from an empty pipe returned")
                        n = await (direct if pick < 0.35 else buffered).preadinto(frame, off)
                    finally:
                        del live[s]
                    assert n == PAGE and frame == data[off : off + PAGE]
                    completed += 1
                if scope.cancelled_caught:
                    cancelled += 1
                frame[:] = poison
                free.append(s)

        async def canceller() -> None:
            while not done:
                await anyio.sleep(0)
                for _ in range(rng.randint(0, 4)):
                    if live:
                        rng.choice(list(live.values())).cancel()

        async with anyio.create_task_group() as outer:
            outer.start_soon(canceller)
            async with anyio.create_task_group() as tg:
                for _ in range(workers):
                    tg.start_soon(worker)
            done = True
        stats = ctx.driver.statistics()
        os.close(rfd)
        os.close(wfd)
    assert completed + cancelled == issued == n_ops
    assert completed > 0 and cancelled > 0 and stats.cancelled > 0  # some cancels reached the ring
    for i in range(slots + 1):
        assert view[2 * i * PAGE : (2 * i + 1) * PAGE] == canary, f"canary {i} overwritten"
    for s in range(slots):
        assert view[(2 * s + 1) * PAGE : (2 * s + 2) * PAGE] in (poison, zero), f"slot {s} written late"
    assert open_fds() == before


@pytest.mark.anyio
async def test_loop_cancellation_storm(data_dir: Path) -> None:
    await _loop_storm(3_000, 21, data_dir)


@pytest.mark.slow
@pytest.mark.anyio
async def test_loop_cancellation_storm_100k(data_dir: Path) -> None:
    await _loop_storm(100_000, 22, data_dir)


@pytest.mark.anyio
async def test_loop_context_close_cancels_and_drains_ops_in_flight(data_dir: Path) -> None:
    """Closing the IOContext (what the end of a trio run does to a context left open) while
    the ring holds a read only a cancel can end and 64 direct reads: every task gets its
    outcome, no fd is left, and the closed context refuses new ops."""
    from aiopg_io._context import get_context

    before = open_fds()
    p = data_dir / "close.bin"
    data = make_file(p, 64 * PAGE)
    fd = os.open(p, os.O_RDONLY | os.O_DIRECT)
    rfd, wfd = os.pipe()
    arena = mmap.mmap(-1, 64 * PAGE)
    view = memoryview(arena)
    ctx = get_context("io_uring")
    ctx.acquire()
    outcomes: dict[int, int | OSError] = {}

    async def run(i: int, op: Op) -> None:
        try:
            outcomes[i] = await ctx.run(op)
        except OSError as exc:
            outcomes[i] = exc

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, -1, Op(OpKind.READ, rfd, 0, (memoryview(bytearray(16)),), path="<pipe>"))
            for i in range(64):
                tg.start_soon(run, i, Op(OpKind.READ, fd, i * PAGE, (view[i * PAGE : (i + 1) * PAGE],)))
            while ctx.driver.statistics().submitted < 65:
                await anyio.sleep(0)
            assert ctx.driver.statistics().in_flight > 0
            ctx.close_now()
        stuck = outcomes[-1]
        assert isinstance(stuck, OSError) and stuck.errno == errno.ECANCELED
        assert "Operation canceled" in str(stuck) and stuck.filename == "<pipe>"
        for i in range(64):
            out = outcomes[i]
            if isinstance(out, OSError):
                assert out.errno == errno.ECANCELED, out
            else:
                assert out == PAGE and view[i * PAGE : (i + 1) * PAGE] == data[i * PAGE : (i + 1) * PAGE]
        with pytest.raises(RuntimeError, match="the IOContext is closed"):
            await ctx.run(Op(OpKind.NOP, fd))
    finally:
        await ctx.release()
        os.close(fd)
        os.close(rfd)
        os.close(wfd)
    assert open_fds() == before


def _fork_child(f: aiopg_io.AsyncFile, p: Path, data: bytes, backend: tuple[str, dict[str, object]]) -> str:
    """In a forked child: the parent's file and ring refuse with a clear error; a new loop
    (in a new thread: the parent's loop still looks current in this one) opens its own."""
    coro = f.pread(PAGE, 0)
    try:
        coro.send(None)
    except RuntimeError as exc:
        context_msg = str(exc)
    else:
        context_msg = "no error"
    finally:
        coro.close()
    try:
        f._ctx.driver.submit([Op(OpKind.NOP, -1)])
    except RuntimeError as exc:
        ring_msg = str(exc)
    else:
        ring_msg = "no error"
    result: list[str] = []

    async def own() -> None:
        async with aiopg_io.open(p, "rb", driver="io_uring") as g:
            assert isinstance(g._ctx.driver, IoUringDriver) and g._ctx.driver is not f._ctx.driver
            result.append(str(await g.pread(PAGE, PAGE) == data[PAGE : 2 * PAGE]))

    name, options = backend
    t = threading.Thread(target=lambda: anyio.run(own, backend=name, backend_options=options))
    t.start()
    t.join(30)
    return "|".join([result[0] if result else "no result", context_msg, ring_msg])


@pytest.mark.anyio
async def test_loop_fork_child_gets_a_clear_error_and_can_make_its_own(
    tmp_path: Path, anyio_backend: tuple[str, dict[str, object]]
) -> None:
    p = tmp_path / "fork.bin"
    data = make_file(p, 4 * PAGE)
    async with aiopg_io.open(p, "rb", driver="io_uring") as f:
        assert await f.pread(PAGE, 0) == data[:PAGE]
        report = in_child(lambda: _fork_child(f, p, data, anyio_backend))
        own_ok, context_msg, ring_msg = report.split("|")
        assert own_ok == "True"
        assert "was opened in the parent process" in context_msg
        assert "open the file anew in the child" in context_msg
        assert "ring belongs to the parent process" in ring_msg and "anew in the child" in ring_msg
        # The parent's ring is untouched by all this.
        assert await f.pread(PAGE, 3 * PAGE) == data[3 * PAGE :]


# -- linked write + sync ---------------------------------------------------------------------


def test_linked_write_sync_completes_on_one_cqe(tmp_path: Path, uring: IoUringDriver) -> None:
    p = tmp_path / "ws.bin"
    fd = os.open(p, os.O_RDWR | os.O_CREAT)
    payload = random.Random(4).randbytes(3 * PAGE)
    try:
        op = write_sync_op(fd, 10, payload[:100], payload[100:])
        uring.submit([op])
        wait_all(uring, [op])
        assert op.error is None and op.result == len(payload)
        assert p.read_bytes()[10:] == payload
        # The write's CQE was skipped on success: one reap, nothing of the op left behind.
        assert uring._ops == {} and uring.statistics().reap_calls == 1
    finally:
        os.close(fd)


def test_a_linked_op_in_flight_counts_once(uring: IoUringDriver) -> None:
    """Its write and its sync each have a user_data, but statistics count ops, not SQEs."""
    r, w = os.pipe()
    try:
        os.set_blocking(w, False)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(w, b"x" * 65536)  # a full pipe: the ring's write waits for room
        op = write_sync_op(w, 0, b"y" * 4096)  # a pipe's offset is no position: 0 is fine
        uring.submit([op])
        assert op.state is not OpState.REAPED and uring.statistics().in_flight == 1
        os.set_blocking(r, False)
        with contextlib.suppress(BlockingIOError):
            while os.read(r, 1 << 20):  # room: the write goes out, then the fsync ends it
                pass
        wait_all(uring, [op])
        assert uring.statistics().in_flight == 0
    finally:
        os.close(r)
        os.close(w)


def test_linked_write_error_is_the_ops_error(tmp_path: Path, uring: IoUringDriver) -> None:
    p = tmp_path / "ro.bin"
    p.write_bytes(b"old")
    fd = os.open(p, os.O_RDONLY)  # the write fails (EBADF) where a sync alone would succeed
    try:
        op = write_sync_op(fd, 0, b"new", path=str(p))
        uring.submit([op])
        wait_all(uring, [op])
        assert isinstance(op.error, OSError) and op.error.errno == errno.EBADF
        assert op.error.filename == str(p) and op.transferred == 0
        assert uring._ops == {}
        assert p.read_bytes() == b"old"
    finally:
        os.close(fd)


def test_linked_short_write_goes_on_with_a_new_chain(tmp_path: Path) -> None:
    """The first chain's completion is rewritten into a short write's CQE (the kernel then
    cancels the sync): the rest goes out as a new write + sync chain, and the op completes
    whole once the second sync is in."""
    p = tmp_path / "short.bin"
    fd = os.open(p, os.O_RDWR | os.O_CREAT)
    payload = random.Random(5).randbytes(2 * PAGE)
    seen: list[tuple[str, int]] = []

    class ShortFirst(IoUringDriver):
        def _on_link_cqe(self, op: Op, token: int, res: int) -> bool | None:
            data = op.driver_data
            assert isinstance(data, io_uring.InFlight)
            half = "write" if token == data.token else "sync"
            seen.append((half, res))
            if len(seen) == 1:
                return super()._on_link_cqe(op, data.token, 1000)  # as a write cut at 1000
            return super()._on_link_cqe(op, token, res)

    d = ShortFirst(nowait_fast_path=False)
    try:
        op = write_sync_op(fd, 0, payload)
        d.submit([op])
        wait_all(d, [op])
        assert op.error is None and op.result == len(payload)
        assert p.read_bytes() == payload
        assert seen == [("sync", 0), ("sync", 0)]  # two chains, one CQE each
        assert d.statistics().short_transfers == 1 and d._ops == {}
    finally:
        d.close()
        os.close(fd)
