"""The io_uring driver, used directly (submit, wait on fileno(), reap) and through files.

Faults the kernel rarely produces on demand (EAGAIN in a CQE, a short completion) are
injected with a tiny subclass that rewrites the first completion of each op before the
driver applies it, so the driver's own continuation code runs on real kernel results.
"""

from __future__ import annotations

import errno
import mmap
import os
import random
import select
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import anyio
import pytest

import aiopg_io
from aiopg_io.drivers import io_uring
from aiopg_io.drivers.base import Op, OpKind, OpState
from aiopg_io.drivers.io_uring import IoUringDriver
from tests.conftest import open_fds

_REASON = IoUringDriver.unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"io_uring cannot run here: {_REASON}")

PAGE = 4096


# -- helpers ---------------------------------------------------------------------------------


def wait_all(driver: IoUringDriver, ops: Sequence[Op], timeout: float = 20.0) -> list[Op]:
    """Reap until every op in ``ops`` came back, waiting on the completion fd like a loop."""
    want = {id(op) for op in ops}
    got: list[Op] = []
    while want:
        readable, _, _ = select.select([driver.fileno()], [], [], timeout)
        assert readable, f"completion fd not readable after {timeout} s; {len(want)} ops outstanding"
        for op in driver.reap():
            assert op.state is OpState.REAPED
            want.discard(id(op))
            got.append(op)
    return got


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
        self.seen: set[int] = set()

    def _on_cqe(self, op: Op, res: int) -> bool:
        if id(op) not in self.seen:
            self.seen.add(id(op))
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


def _storm(n_ops: int, seed: int, data_dir: Path) -> None:
    """Reads (O_DIRECT and buffered) into slots framed by canaries, with random cancels.

    After an op is reaped its slot is overwritten with a poison pattern, as a pool would
    reuse it; at the end every canary and every poisoned slot must be intact: the kernel
    never wrote into a buffer after its op came back.
    """
    rng = random.Random(seed)
    size = 256 * PAGE
    p = data_dir / "storm.bin"
    data = make_file(p, size, seed)
    fds = [os.open(p, os.O_RDONLY | os.O_DIRECT), os.open(p, os.O_RDONLY)]
    canary = b"\xa5" * PAGE
    poison = b"\x5a" * PAGE
    slots = 512
    arena = mmap.mmap(-1, (2 * slots + 1) * PAGE)
    view = memoryview(arena)
    for i in range(slots + 1):
        view[2 * i * PAGE : (2 * i + 1) * PAGE] = canary
    free = list(range(slots))
    slot_of: dict[int, int] = {}
    in_flight: list[Op] = []
    d = IoUringDriver(entries=64)
    issued = finished = cancelled = 0
    try:
        while finished < n_ops:
            batch: list[Op] = []
            while free and issued < n_ops and len(batch) < rng.randint(1, 64):
                s = free.pop()
                buf = view[(2 * s + 1) * PAGE : (2 * s + 2) * PAGE]
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
        for fd in fds:
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
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
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
            os.write(wfd, f"{round_trip}|{msg}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        _, status = os.waitpid(pid, 0)
        report = os.read(rfd, 4096).decode()
    finally:
        os.close(rfd)
    assert os.waitstatus_to_exitcode(status) == 0, report
    child_round_trip, msg = report.split("|", 1)
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
        monkeypatch.setattr(io_uring, "_io_uring_disabled", lambda: 2)
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
        monkeypatch.setattr(io_uring, "_io_uring_disabled", lambda: disabled)
        reason = IoUringDriver.unavailable_reason()
        assert reason is not None and expect in reason
        with pytest.raises(aiopg_io.DriverUnavailableError, match="cannot set up a ring of 256 entries"):
            IoUringDriver()

    def test_probe_that_crashes_is_a_reason(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def crash(entries: int) -> object:
            raise RuntimeError("boom")

        monkeypatch.setattr(io_uring, "_setup_ring", crash)
        assert IoUringDriver.unavailable_reason() == "io_uring probe failed: RuntimeError('boom')"

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
async def test_file_api_cancellation_storm_with_canaries(data_dir: Path) -> None:
    before = open_fds()
    p = data_dir / "astorm.bin"
    data = make_file(p, 128 * PAGE, seed=4)
    canary = b"\xa5" * 64
    rng = random.Random(9)
    n_ops = 1_500
    frames = [bytearray(canary + bytes(PAGE) + canary) for _ in range(n_ops)]
    returned: list[tuple[int, bytes]] = []  # (frame index, its content when its op returned)
    completed = 0

    async with (
        aiopg_io.open(p, "rb", driver="io_uring") as f,
        aiopg_io.open(p, "rb", driver="io_uring", direct=True) as fd_direct,
    ):

        async def one(i: int) -> None:
            nonlocal completed
            off = rng.randrange(128) * PAGE
            frame = memoryview(frames[i])[64 : 64 + PAGE]
            try:
                if i % 4 == 0:
                    dbuf = aiopg_io.aligned_buffer(PAGE)
                    n = await fd_direct.preadinto(dbuf, off)
                    assert bytes(dbuf) == data[off : off + PAGE]
                else:
                    n = await f.preadinto(frame, off)
                    assert bytes(frame) == data[off : off + PAGE]
                assert n == PAGE
                completed += 1
            finally:
                frames[i][64 : 64 + PAGE] = b"\x5a" * PAGE  # reuse the buffer at once
                returned.append((i, bytes(frames[i])))

        for start in range(0, n_ops, 100):
            async with anyio.create_task_group() as tg:
                for i in range(start, start + 100):
                    tg.start_soon(one, i)
                for _ in range(rng.randint(0, 30)):
                    await anyio.sleep(0)
                tg.cancel_scope.cancel()
    assert len(returned) == n_ops
    assert 0 < completed < n_ops  # some ran to the end, some were cancelled
    for i, snapshot in returned:
        assert bytes(frames[i]) == snapshot, f"frame {i} changed after its op returned"
        assert frames[i][:64] == canary and frames[i][-64:] == canary
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
