"""The edges of both io_uring drivers (``io_uring``, ``io_uring_c``): older kernels played by
masking, wakers that raise, arguments the kernel would misread (offsets, paths), a ring too
small for a linked chain, the file calls' signatures.

Older kernels are played on this one by making it refuse what they refuse: a cancel SQE
with a flag no kernel knows gets ``-EINVAL`` from ``io_async_cancel_prep`` and cancels
nothing, which is what a kernel before 5.19 answers the cancel of everything, and what one
before 5.5 (no ``IORING_OP_ASYNC_CANCEL``) answers any cancel. A pipe nobody writes to
holds a read only a cancel ends; a timer writes to it after a while, so a close that never
cancels it ends anyway (with the data, which the tests then refuse) rather than hanging.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import sniffio

import aiopg_io
from aiopg_io._context import IOContext
from aiopg_io._glue import current_glue
from aiopg_io.drivers import _orphans, io_uring
from aiopg_io.drivers.base import AT_FDCWD, Op, OpKind, OpState
from aiopg_io.drivers.io_uring import IoUringDriver
from aiopg_io.drivers.io_uring_c import IoUringCDriver
from aiopg_io.drivers.worker import WorkerDriver

from .._driving import Factory, wait_all, write_sync_op
from ..conftest import BACKENDS, in_child, open_fds

PAGE = 4096
#: A cancel flag no kernel knows (IORING_ASYNC_CANCEL_* ends at bit 5 in 6.18).
_UNKNOWN_CANCEL_FLAG = 1 << 30
#: How long a test lets a read on an empty pipe wait before its timer writes the pipe.
_UNBLOCK_AFTER_SECONDS = 10.0

DRIVERS = [IoUringDriver, IoUringCDriver]


def _skip_unless_runs(cls: type[IoUringDriver]) -> None:
    reason = cls.unavailable_reason()
    if reason is not None:
        pytest.skip(f"driver {cls.name} cannot run here: {reason}")


@pytest.fixture(params=DRIVERS, ids=[c.name for c in DRIVERS])
def driver_cls(request: pytest.FixtureRequest) -> type[IoUringDriver]:
    cls: type[IoUringDriver] = request.param
    _skip_unless_runs(cls)
    return cls


def refusing(cls: type[IoUringDriver], *, per_op: bool) -> type[IoUringDriver]:
    """``cls`` on a kernel that refuses the cancel of everything (before 5.19), and with
    ``per_op`` every cancel (before 5.5: no IORING_OP_ASYNC_CANCEL)."""

    class Refusing(cls):  # type: ignore[valid-type,misc]
        refused = 0

        def _queue_cancel(self, token: int, flags: int) -> bool:
            if flags or per_op:
                flags |= _UNKNOWN_CANCEL_FLAG
                self.refused += 1
            queued: bool = super()._queue_cancel(token, flags)
            return queued

    return Refusing


class EmptyPipe:
    """A pipe nobody writes to, and a timer that writes it after a while (see the module
    docstring): the bytes a read that was never cancelled gets."""

    DATA = b"late" * 4

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe()
        self.timer = threading.Timer(_UNBLOCK_AFTER_SECONDS, self.write)
        self.timer.start()

    def write(self) -> None:
        try:
            os.write(self.wfd, self.DATA)
        except OSError:
            pass  # closed already

    def close(self) -> None:
        self.timer.cancel()
        self.timer.join()
        os.close(self.rfd)
        os.close(self.wfd)


@pytest.fixture
def pipe() -> Iterator[EmptyPipe]:
    p = EmptyPipe()
    yield p
    p.close()


def pipe_read(pipe: EmptyPipe) -> Op:
    return Op(OpKind.READ, pipe.rfd, 0, (memoryview(bytearray(len(EmptyPipe.DATA))),), path="<pipe>")


def file_reads(fd: int, n: int) -> list[Op]:
    return [Op(OpKind.READ, fd, i * PAGE, (memoryview(bytearray(PAGE)),)) for i in range(n)]


def assert_cancelled(op: Op) -> None:
    assert op.state is OpState.REAPED
    assert op.result is None, f"the read was never cancelled: it got {op.result} bytes"
    assert isinstance(op.error, OSError) and op.error.errno == errno.ECANCELED


# -- close on kernels that refuse the cancel of everything ---------------------------------


def test_close_cancels_op_by_op_where_the_cancel_of_everything_is_refused(
    driver_cls: type[IoUringDriver], pipe: EmptyPipe, tmp_path: Path
) -> None:
    """Before 5.19 the cancel of everything comes back EINVAL: close then cancels each op
    by its user_data, the read on the empty pipe ends cancelled, and every fd goes."""
    before = open_fds()
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(4 * PAGE))
    fd = os.open(p, os.O_RDONLY)
    d = refusing(driver_cls, per_op=False)(nowait_fast_path=False)
    try:
        stuck = pipe_read(pipe)
        reads = file_reads(fd, 4)
        d.submit([stuck, *reads])
        wait_all(d, reads)
        another = pipe_read(pipe)
        d.submit([another])
        drained = d.close()
        assert {id(op) for op in drained} == {id(stuck), id(another)}
        assert_cancelled(stuck)
        assert_cancelled(another)
        assert d.refused == 1  # type: ignore[attr-defined]  # the cancel of everything, once
        assert d._close_cancels == "each"
        assert d.statistics().in_flight == 0
    finally:
        d.close()
        os.close(fd)
    assert open_fds() == before


# -- a ring used from a thread other than the one that set it up -----------------------------


def test_a_ring_set_up_in_one_thread_is_driven_and_closed_from_another(
    driver_cls: type[IoUringDriver], pipe: EmptyPipe, tmp_path: Path
) -> None:
    """The thread that set a ring up and submitted to it may be gone while its ops are in
    flight: another thread reaps them, submits, and closes with an op in flight (the orphan
    thread and a release from another thread after the loop ended do this). The rings ask
    for no IORING_SETUP_SINGLE_ISSUER, under which the kernel refuses those calls (EEXIST)
    and, with DEFER_TASKRUN, keeps the CQEs for the gone thread (docs/benchmarks.md,
    "DEFER_TASKRUN")."""
    data = os.urandom(4 * PAGE)
    p = tmp_path / "f"
    p.write_bytes(data)
    before = open_fds()
    fd = os.open(p, os.O_RDONLY)
    made: list[IoUringDriver] = []
    first = file_reads(fd, 4)

    def set_up_and_submit() -> None:
        d = driver_cls(nowait_fast_path=False)
        made.append(d)
        d.submit(first)

    t = threading.Thread(target=set_up_and_submit)
    t.start()
    t.join()
    (d,) = made
    try:
        assert "IORING_SETUP_SINGLE_ISSUER" not in d.setup_flags
        wait_all(d, first)
        assert [bytes(op.buffers[0]) for op in first] == [data[i * PAGE : (i + 1) * PAGE] for i in range(4)]
        waiting = pipe_read(pipe)
        d.submit([waiting])
        os.write(pipe.wfd, EmptyPipe.DATA)
        wait_all(d, [waiting])
        assert waiting.result == len(EmptyPipe.DATA) and bytes(waiting.buffers[0]) == EmptyPipe.DATA
        late = pipe_read(pipe)
        d.submit([late])  # in flight at close: cancelled and drained from this thread
        assert d.close() == [late]
        assert_cancelled(late)
    finally:
        d.close()
        os.close(fd)
    assert open_fds() == before


def test_close_op_by_op_where_an_op_completed_before_its_cancel(
    driver_cls: type[IoUringDriver], pipe: EmptyPipe
) -> None:
    """The read completes between the refused cancel of everything and its own cancel: that
    cancel says ENOENT, and close returns the op with its data (its own CQE ends it)."""
    seen: list[int] = []

    class Racing(refusing(driver_cls, per_op=False)):  # type: ignore[misc]
        def _close_cancel_refused(self) -> None:
            os.write(pipe.wfd, EmptyPipe.DATA)  # the read completes now, before its cancel
            select.select([self.fileno()], [], [], 5)
            super()._close_cancel_refused()

        def _take_cqes(self, limit: int) -> tuple[list[tuple[int, int]], bool]:
            entries, left_over = super()._take_cqes(limit)
            seen.extend(res for token, res in entries if token == io_uring._CLOSE_CANCEL)
            return entries, left_over

    d = Racing(nowait_fast_path=False)
    op = pipe_read(pipe)
    d.submit([op])
    assert d.close() == [op]
    assert op.result == len(EmptyPipe.DATA) and bytes(op.buffers[0]) == EmptyPipe.DATA
    assert seen == [-errno.EINVAL, -errno.ENOENT]  # the cancel of everything, then the op's


def test_close_where_no_cancel_is_known_keeps_the_ops_and_says_which(
    driver_cls: type[IoUringDriver], pipe: EmptyPipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before 5.5 every cancel comes back EINVAL: close does not wait for ever on a read
    that never ends. It returns what did end inside OpsStillHeldError, which names the op
    still held; the driver keeps ring and buffer until the read completes, then lets go."""
    monkeypatch.setattr(io_uring, "_UNCANCELLABLE_WAIT_SECONDS", 0.2)
    before = open_fds()
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(2 * PAGE))
    fd = os.open(p, os.O_RDONLY)
    parked = _orphans.parked()
    d = refusing(driver_cls, per_op=True)(nowait_fast_path=False)
    stuck = pipe_read(pipe)
    reads = file_reads(fd, 2)
    d.submit([stuck, *reads])
    start = time.monotonic()
    with pytest.raises(aiopg_io.OpsStillHeldError) as ei:
        d.close()
    assert time.monotonic() - start < _UNBLOCK_AFTER_SECONDS / 2  # not the timer's doing
    err = ei.value
    assert isinstance(err, RuntimeError) and isinstance(err, aiopg_io.AiopgIOError)
    assert err.held == [stuck] and stuck.state is OpState.SUBMITTED
    assert {id(op) for op in err.drained} <= {id(op) for op in reads}
    assert "driver closed with 1 op the kernel refuses to cancel" in str(err)
    assert f"read on fd {pipe.rfd} ('<pipe>')" in str(err) and "Linux before 5.5" in str(err)
    assert d._close_cancels == "none" and d.refused >= 2  # type: ignore[attr-defined]
    assert _orphans.parked() == parked + 1
    assert d.close() == []  # closed: nothing more to say
    # The data comes: the kept read completes into its buffer, and ring and fds are released.
    os.write(pipe.wfd, EmptyPipe.DATA)
    deadline = time.monotonic() + 20
    while _orphans.parked() > parked and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _orphans.parked() == parked
    assert stuck.result == len(EmptyPipe.DATA) and bytes(stuck.buffers[0]) == EmptyPipe.DATA
    os.close(fd)
    assert open_fds() == before


def test_a_collected_driver_cancels_op_by_op_where_the_cancel_of_everything_is_refused(
    driver_cls: type[IoUringDriver], pipe: EmptyPipe
) -> None:
    """The finalizer of a driver collected unclosed goes through the same steps: the reads
    end cancelled within its wait, and nothing is kept."""
    before = open_fds()
    parked = _orphans.parked()
    d = refusing(driver_cls, per_op=False)(nowait_fast_path=False)
    ops = [pipe_read(pipe) for _ in range(3)]
    d.submit(ops)
    with pytest.warns(ResourceWarning, match="3 ops in flight were cancelled and drained"):
        del d
        gc.collect()
    assert _orphans.parked() == parked
    for op in ops:
        assert_cancelled(op)
    assert open_fds() == before


async def _read_while_the_context_closes(ctx: IOContext, pipe: EmptyPipe) -> Op:
    op = pipe_read(pipe)
    outcome: list[BaseException] = []

    async def read() -> None:
        try:
            await ctx.run(op)
        except OSError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        while op.state is not OpState.SUBMITTED:
            await anyio.sleep(0)
        ctx.close_now()
    assert outcome == [op.error]
    return op


@pytest.mark.anyio
@pytest.mark.parametrize("cls", DRIVERS, ids=[c.name for c in DRIVERS])
async def test_loop_a_context_closing_with_the_cancel_of_everything_refused(
    cls: type[IoUringDriver], pipe: EmptyPipe
) -> None:
    """On every loop: a task reading the empty pipe when its context closes gets ECANCELED."""
    _skip_unless_runs(cls)
    before = open_fds()
    ctx = IOContext(Factory(refusing(cls, per_op=False), "io_uring-refusing"), current_glue())
    op = await _read_while_the_context_closes(ctx, pipe)
    assert_cancelled(op)
    assert "Operation canceled" in str(op.error) and op.error.filename == "<pipe>"  # type: ignore[union-attr]
    assert open_fds() == before


@pytest.mark.anyio
@pytest.mark.parametrize("cls", DRIVERS, ids=[c.name for c in DRIVERS])
async def test_loop_a_context_closing_where_no_cancel_is_known(
    cls: type[IoUringDriver], pipe: EmptyPipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On every loop: close_now raises OpsStillHeldError for the read it cannot end (a
    started one: a task waiting for it would never be woken, docs/guide.md), the context is
    closed all the same, and the driver lets go once the read completes."""
    _skip_unless_runs(cls)
    monkeypatch.setattr(io_uring, "_UNCANCELLABLE_WAIT_SECONDS", 0.1)
    before = open_fds()
    parked = _orphans.parked()
    ctx = IOContext(Factory(refusing(cls, per_op=True), "io_uring-refusing"), current_glue())
    op = pipe_read(pipe)
    done: list[Op] = []
    await ctx.start(op, done.append)
    ctx.submit_staged()
    with pytest.raises(aiopg_io.OpsStillHeldError) as ei:
        ctx.close_now()
    assert ctx.closed and ei.value.held == [op] and ei.value.drained == []
    os.write(pipe.wfd, EmptyPipe.DATA)
    with anyio.fail_after(20):
        while _orphans.parked() > parked:
            await anyio.sleep(0.01)
    assert op.result == len(EmptyPipe.DATA) and done == []
    assert open_fds() == before


# -- a waker that raises mid-harvest (io_uring_c: completions handed to the waker in C) ------


class WakerBroke(Exception):
    pass


def test_a_waker_that_raises_mid_harvest_loses_no_op(tmp_path: Path) -> None:
    """The waker raises on its second op: the error propagates from reap_and_wake, and
    nothing is lost. The ops handed over before and with it are counted by the next return
    (their slots), the op finished in Python meanwhile (a short read) comes with it, the
    CQEs after it are reaped then, and fileno() is readable so that reap comes."""
    _skip_unless_runs(IoUringCDriver)
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(5 * PAGE + 10))
    fd = os.open(p, os.O_RDONLY)
    d = IoUringCDriver(nowait_fast_path=False, reap_batch=0)
    handed: list[Op] = []

    def breaking(op: Op) -> None:
        handed.append(op)
        if len(handed) == 2:
            raise WakerBroke("the second op's waiter broke")

    try:
        short = Op(OpKind.READ, fd, 5 * PAGE, (memoryview(bytearray(PAGE)),))  # 10 bytes: Python's
        whole = file_reads(fd, 5)
        ops = [short, *whole]
        d.submit(ops)
        # Cached pages: the reads complete inside the submit; the CQEs are in (or about).
        select.select([d.fileno()], [], [], 5)
        time.sleep(0.05)
        returned: list[Op] = []
        counted = 0
        with pytest.raises(WakerBroke):
            d.reap_and_wake(breaking)
        assert len(handed) == 2
        assert select.select([d.fileno()], [], [], 0)[0], "nothing makes the next reap come"
        deadline = time.monotonic() + 20
        while len(returned) + counted < len(ops):
            assert time.monotonic() < deadline, f"lost: {len(ops) - len(returned) - counted} ops never reaped"
            select.select([d.fileno()], [], [], 5)
            out, n = d.reap_and_wake(handed.append)
            returned += out
            counted += n
        assert returned == [short] and short.result == 10
        assert counted == len(handed) == len(whole)
        assert {id(op) for op in handed} == {id(op) for op in whole}
        assert all(op.state is OpState.REAPED and op.result == PAGE for op in whole)
        st = d.statistics()
        assert (st.submitted, st.completed, st.in_flight) == (6, 6, 0)
        assert d._fd_refs == {}
    finally:
        d.close()
        os.close(fd)


class HandlerBroke(Exception):
    pass


class Reported(logging.Handler):
    """What the loop reports of a callback's exception: asyncio through its exception
    handler (:meth:`install`), trio through the ``aiopg_io`` logger (the glue logs it and
    the run goes on: _glue/_trio.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])

    def install(self) -> None:
        """Called in the run: asyncio's exception handler reports here too."""
        if sniffio.current_async_library() == "asyncio":
            import asyncio

            asyncio.get_running_loop().set_exception_handler(
                lambda loop, context: self.errors.append(context["exception"])
            )

    def __enter__(self) -> Reported:
        logging.getLogger("aiopg_io").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("aiopg_io").removeHandler(self)


def _break_on_cqe(d: IoUringDriver, when: str, calls: int = 1) -> list[Op]:
    """Make ``d``'s per-CQE handler raise HandlerBroke on its first ``calls`` calls, before it
    applies the CQE or after (the op finished or gone on): as a signal handler's exception in
    its frame would. Set on the instance, so io_uring_c's harvest stays in C (its on_cqe
    calls the instance's). Returns the ops it broke on."""
    broke: list[Op] = []
    real = d._on_cqe

    def on_cqe(op: Op, res: int) -> bool:
        if len(broke) < calls:
            broke.append(op)
            if when == "after":
                real(op, res)
            raise HandlerBroke(f"the handler broke {when} applying a CQE")
        return real(op, res)

    d._on_cqe = on_cqe  # type: ignore[method-assign]
    return broke


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_completion_handler_that_raises_loses_no_op(
    driver_cls: type[IoUringDriver], when: str, tmp_path: Path
) -> None:
    """The per-CQE handler raises (before or after it applied the CQE): the error propagates
    from reap, and no op is lost. The op it was applying finishes with its bytes (its CQE
    applied at the next reap if it was not), the ops finished before it and the CQEs after it
    in the same harvest (the pure driver retires a harvest's CQEs at once) are reaped, and
    fileno() is readable so that reap comes."""
    p = tmp_path / "f.bin"
    data = os.urandom(5 * PAGE + 10)
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    d = driver_cls(nowait_fast_path=False, reap_batch=0)
    broke = _break_on_cqe(d, when, calls=2)
    try:
        # Short reads (past the end) go through the handler on both drivers; whole ones
        # only on the pure driver's. The first short read's CQE comes first.
        shorts = [Op(OpKind.READ, fd, 5 * PAGE, (memoryview(bytearray(PAGE)),)) for _ in range(2)]
        ops = [*shorts, *file_reads(fd, 5)]
        d.submit(ops)
        reaped: list[Op] = []
        raised = 0
        deadline = time.monotonic() + 20
        while len(reaped) < len(ops):
            assert time.monotonic() < deadline, f"lost: {len(ops) - len(reaped)} ops never reaped"
            select.select([d.fileno()], [], [], 5)
            try:
                reaped += d.reap()
            except HandlerBroke:
                raised += 1
                assert select.select([d.fileno()], [], [], 0)[0], "nothing makes the next reap come"
        assert raised == 2 and len(broke) == 2
        assert sorted(map(id, reaped)) == sorted(map(id, ops))  # each once
        for op in ops:
            assert op.state is OpState.REAPED and op.error is None
            got = bytes(op.buffers[0][: op.result])
            assert got == data[op.offset : op.offset + PAGE], f"op at {op.offset}: {op.result} bytes"
        st = d.statistics()
        assert (st.submitted, st.completed, st.in_flight) == (7, 7, 0)
        assert d._fd_refs == {} and d._ops == {}
    finally:
        d.close()
        os.close(fd)


def _skip_without_set_nomemory() -> None:
    """Skip where ``_testcapi``'s allocation failure injection (set_nomemory) is missing."""
    try:
        import _testcapi
    except ImportError:
        pytest.skip("this Python has no _testcapi (built without its test modules)")
    if not hasattr(_testcapi, "set_nomemory"):
        pytest.skip("this Python's _testcapi has no set_nomemory")


@pytest.mark.parametrize("wake", [False, True], ids=["reap", "reap_and_wake"])
def test_a_memory_error_anywhere_in_a_reap_loses_no_op(wake: bool, tmp_path: Path) -> None:
    """Each allocation of a reap made to fail in turn (``_testcapi.set_nomemory``), one per
    try, with one read's CQE waiting: the MemoryError propagates, and the read still comes
    back from a later reap (or its waker), once, with its bytes. It used to be lost where the
    allocation failed after its CQE was retired (the token made after the CQ head moved), in
    the C harvest between its REAPED and its waker (C then left it REAPED for the Python
    bookkeeping, which raised at REAPED -> REAPED), or in the bookkeeping after the harvest
    (every op of the batch dropped). A failure as reap returns, in the caller's own frame,
    is the caller's to handle (and is not counted here). The C ring's driver only: the pure
    one's ring is the liburing package's, whose ``cqe[0]`` returns an error with no exception
    set when an allocation fails (SystemError), with its CQE retired. The waker is a set's
    ``add`` (no allocation for one op): a waker that raises is the glue's to handle."""
    # In a fresh interpreter, as CPython's own tests run set_nomemory: the injection is
    # process-wide (every thread's allocations), and an allocation CPython itself fails
    # to recover from would damage whatever the test process runs next (3.13's CI once
    # crashed in a later test's garbage collection, in a fork child, after this ran in the
    # same worker).
    _skip_unless_runs(IoUringCDriver)
    _skip_without_set_nomemory()
    script = (
        "from tests.drivers.test_io_uring_edges import _reap_under_nomemory; "
        f"_reap_under_nomemory({wake!r}, {str(tmp_path)!r})"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-4000:]


def _reap_under_nomemory(wake: bool, directory: str) -> None:
    """The body of the test above, run in its own interpreter."""
    import _testcapi

    set_nomemory, remove_hooks = _testcapi.set_nomemory, _testcapi.remove_mem_hooks
    p = Path(directory) / "f.bin"
    data = os.urandom(2 * PAGE)
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    d = IoUringCDriver(nowait_fast_path=False)
    for _ in range(300):  # tokens past the small ints CPython caches: made by an allocation
        d._next_token()
    raised = 0
    try:
        for k in range(300):
            op = Op(OpKind.READ, fd, PAGE, (memoryview(bytearray(PAGE)),))
            d.submit([op])
            assert select.select([d.fileno()], [], [], 10)[0]
            got: list[Op] = []
            woken: set[Op] = set()
            set_nomemory(k, k + 1)  # the k-th allocation from here fails, no other
            try:
                if wake:
                    r, _ = d.reap_and_wake(woken.add)
                else:
                    r = d.reap()
                remove_hooks()
                got += r
            except MemoryError as exc:
                remove_hooks()
                assert exc.__traceback__ is not None
                if exc.__traceback__.tb_next is None:
                    continue  # raised in this frame, as reap returned: its result is lost here
                raised += 1
            finally:
                remove_hooks()
            deadline = time.monotonic() + 10
            while not any(o is op for o in [*got, *woken]):
                assert time.monotonic() < deadline, f"the read was lost at allocation {k} ({op.state})"
                select.select([d.fileno()], [], [], 1)
                if wake:
                    r, _ = d.reap_and_wake(woken.add)
                else:
                    r = d.reap()
                got += r
            assert [o for o in [*got, *woken] if o is op] == [op]  # once
            assert op.state is OpState.REAPED and op.error is None, (k, op.error)
            assert op.result == PAGE and bytes(op.buffers[0]) == data[PAGE:], k
        assert raised >= 3, "the reap made no allocation that could fail: this tests nothing"
        assert d._fd_refs == {} and d._ops == {}
    finally:
        remove_hooks()
        d.close()
        os.close(fd)


@pytest.mark.parametrize("backend", BACKENDS)
def test_loop_a_completion_handler_that_raises_loses_no_task(
    backend: Any, driver_cls: type[IoUringDriver], tmp_path: Path
) -> None:
    """On every loop: the per-CQE handler raises (as a signal handler's exception in its
    frame would) while three tasks' short reads complete. Each task gets its bytes, the error
    reaches the loop (asyncio: its exception handler; trio: the ``aiopg_io`` logger) and the
    run goes on, and no slot of the context is lost."""
    p = tmp_path / "f.bin"
    data = os.urandom(100)
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)

    def make() -> IoUringDriver:
        d = driver_cls(nowait_fast_path=False, reap_batch=0)
        _break_on_cqe(d, "before")
        return d

    try:
        # Reads of a page from offsets 0, 10 and 20 of 100 bytes: short, through the handler.
        reported, results = _reads_on_a_loop(
            backend, fd, lambda: IOContext(Factory(make, "io_uring-refusing"), current_glue()), (0, 10, 20)
        )
        assert reported == [HandlerBroke]
        assert results == {i: data[i:] for i in (0, 10, 20)}
    finally:
        os.close(fd)


def _reads_on_a_loop(
    backend: Any,
    fd: int,
    make_ctx: Callable[[], IOContext],
    offsets: tuple[int, ...],
    first: Callable[[IOContext], Awaitable[object]] | None = None,
) -> tuple[list[type[BaseException]], dict[int, bytes]]:
    """Run a loop of ``backend`` in which a context made by ``make_ctx`` (in the run) reads a
    page at each of ``offsets`` of ``fd``, a task each, under a deadline (a lost op would leave
    its task waiting for ever); ``first``, where given, is awaited on the context in the task
    group before the tasks start. Checks that no slot of the context was lost and that it
    closed; returns the types of the errors the loop reported (:class:`Reported`) and the
    bytes read at each offset."""
    name, options = backend
    reported = Reported()
    results: dict[int, bytes] = {}
    state: dict[str, object] = {}

    async def main() -> None:
        reported.install()
        ctx = make_ctx()
        state["ctx"] = ctx
        ctx.acquire()
        try:

            async def read(offset: int) -> None:
                buf = bytearray(PAGE)
                n = await ctx.run(Op(OpKind.READ, fd, offset, (memoryview(buf),)))
                results[offset] = bytes(buf[:n])

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    if first is not None:
                        await first(ctx)
                    for offset in offsets:
                        tg.start_soon(read, offset)
            state["in_flight"] = ctx._in_flight
        finally:
            await ctx.release()

    with reported:
        anyio.run(main, backend=name, backend_options=options)
    assert state["in_flight"] == 0
    ctx = state["ctx"]
    assert isinstance(ctx, IOContext) and ctx.closed
    return [type(e) for e in reported.errors], results


@pytest.mark.parametrize("backend", BACKENDS)
def test_loop_a_started_ops_callback_that_raises_loses_no_other_op(backend: Any, tmp_path: Path) -> None:
    """On every loop, io_uring_c: a started op's callback raises (it must not: a bug) while
    two tasks' reads complete in the same harvest. The reads reach their tasks, the error
    reaches the loop (asyncio: its exception handler; trio: the ``aiopg_io`` logger) and the
    run goes on, and no slot of the context is lost."""
    _skip_unless_runs(IoUringCDriver)
    p = tmp_path / "f.bin"
    data = os.urandom(4 * PAGE)
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)

    def broken(op: Op) -> None:
        raise WakerBroke("a started op's callback raised")

    async def start_broken(ctx: IOContext) -> None:
        await ctx.start(file_reads(fd, 1)[0], broken)  # staged first: its CQE comes first

    try:
        reported, results = _reads_on_a_loop(
            backend,
            fd,
            lambda: aiopg_io._context.get_context("io_uring_c:nowait_fast_path=0"),
            (PAGE, 2 * PAGE),
            start_broken,
        )
        assert reported == [WakerBroke]
        assert results == {PAGE: data[PAGE : 2 * PAGE], 2 * PAGE: data[2 * PAGE : 3 * PAGE]}
    finally:
        os.close(fd)


# -- offsets the kernel would misread ----------------------------------------------------------

OFF_T_MAX = 2**63 - 1


@pytest.mark.parametrize("fast_path", [True, False], ids=["nowait", "ring-only"])
def test_offsets_outside_the_file_never_reach_the_kernel(
    driver_cls: type[IoUringDriver], fast_path: bool, tmp_path: Path
) -> None:
    """An op handed to the driver directly with an offset below 0 or an end past 2**63 - 1
    fails with InvalidOffsetError naming the value and the limit, as the file layer words
    it: through submit (C's batch or the Python prep), the page-cache fast path and
    try_inline alike. io_uring and preadv2 read offset -1 (2**64 - 1 as a u64) as "at the
    file position": nothing may be read or written there."""
    p = tmp_path / "f.bin"
    data = os.urandom(2 * PAGE)
    p.write_bytes(data)
    fd = os.open(p, os.O_RDWR)
    d = driver_cls(nowait_fast_path=fast_path)
    cases: list[tuple[Op, str]] = []

    def case(kind: OpKind, offset: int, n: int, want: str, **kw: Any) -> Op:
        bufs = (memoryview(bytearray(b"\xee" * n)),) if kind is not OpKind.FALLOCATE else ()
        op = Op(kind, fd, offset, bufs, path=str(p), **kw)
        cases.append((op, want))
        return op

    try:
        for kind in (OpKind.READ, OpKind.WRITE):
            case(kind, -1, 4, "offset -1 is negative; file offsets start at 0")
            past = f"is past the largest file offset, {OFF_T_MAX} (2**63 - 1)"
            case(kind, 2**64 - 1, 4, f"offset {2**64 - 1} {past}")
            case(kind, 2**63, 4, f"offset {2**63} is past the largest file offset")
            case(
                kind,
                OFF_T_MAX - 2,
                4,
                f"4 bytes at offset {OFF_T_MAX - 2} would end at {OFF_T_MAX + 2}, past the largest "
                f"file offset, {OFF_T_MAX} (2**63 - 1)",
            )
        case(OpKind.FALLOCATE, -PAGE, 0, f"offset {-PAGE} is negative", length=PAGE)
        case(OpKind.FALLOCATE, OFF_T_MAX, 0, f"1 bytes at offset {OFF_T_MAX} would end", length=1)
        inline = case(OpKind.READ, -1, 8, "offset -1 is negative", direct=False)
        assert d.try_inline(inline) is False  # the fast path declines it; the prep refuses it
        ops = [op for op, _ in cases]
        d.submit(ops)
        wait_all(d, ops)
        for op, want in cases:
            err = op.error
            assert isinstance(err, aiopg_io.InvalidOffsetError), (op.offset, op.result, err)
            assert err.errno == errno.EINVAL and want in str(err) and err.filename == str(p)
            assert all(set(bytes(b)) == {0xEE} for b in op.buffers)  # nothing was read into it
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # the file position was never used
        assert p.read_bytes() == data  # nor written at
    finally:
        d.close()
        os.close(fd)


# -- paths the kernel would misread; a ring too small for a chain ------------------------------


def test_a_nul_inside_a_path_never_reaches_the_ring(driver_cls: type[IoUringDriver], tmp_path: Path) -> None:
    """The kernel reads a path up to its first NUL: "f\\0x" would name "f". Every path kind,
    with a NUL in either path, fails as on the worker (the blocking call's EINVAL, word for
    word), and no file is touched."""
    from aiopg_io.drivers import _statx

    f, g = str(tmp_path / "f"), str(tmp_path / "g")

    def cases() -> list[Op]:
        return [
            Op(OpKind.OPENAT, AT_FDCWD, path=f + "\0x", flags=os.O_RDONLY),
            Op(OpKind.UNLINKAT, AT_FDCWD, path=f + "\0x"),
            Op(OpKind.MKDIRAT, AT_FDCWD, path=g + "\0x", mode=0o700),
            Op(OpKind.RENAMEAT, AT_FDCWD, path=f, newpath=g + "\0x"),
            Op(OpKind.RENAMEAT, AT_FDCWD, path=f + "\0x", newpath=g),
            Op(OpKind.STATX, AT_FDCWD, buffers=(_statx.new_buffer(),), path=f + "\0x"),
            Op(OpKind.LINKAT, AT_FDCWD, path=f + "\0x", newpath=g),
            Op(OpKind.LINKAT, AT_FDCWD, path=f, newpath=g + "\0x"),
            Op(OpKind.SYMLINKAT, AT_FDCWD, path="t\0x", newpath=g),
            Op(OpKind.SYMLINKAT, AT_FDCWD, path="t", newpath=g + "\0x"),
        ]

    (tmp_path / "f").write_bytes(b"keep")
    before = open_fds()
    got: list[list[object]] = []
    for d in (WorkerDriver(), driver_cls()):
        try:
            ops = cases()
            d.submit(ops)
            wait_all(d, ops)
            got.append([(type(op.error).__name__, op.error.errno, str(op.error)) for op in ops if op.error])
            assert len(got[-1]) == len(ops)
        finally:
            d.close()
        assert sorted(os.listdir(tmp_path)) == ["f"] and (tmp_path / "f").read_bytes() == b"keep"
    # CPython's words: "embedded null byte" before 3.13, "embedded null character in path" from it.
    assert all(err[:2] == ("OSError", errno.EINVAL) and "embedded null" in err[2] for err in got[0])
    assert got[1] == got[0]
    assert open_fds() == before


def test_linked_ops_on_a_tiny_ring(driver_cls: type[IoUringDriver], tmp_path: Path) -> None:
    """A chain's two SQEs always go in one submission, however full the SQ: 300 chains
    through a ring of 2 SQ entries all complete, and one of 1 entry runs them in a thread
    (WRITE_SYNC is not among its kinds)."""
    p = tmp_path / "tiny.bin"
    fd = os.open(p, os.O_RDWR | os.O_CREAT)
    try:
        for entries in (2, 1):
            d = driver_cls(entries=entries, nowait_fast_path=False)
            assert (OpKind.WRITE_SYNC in d.capabilities.kinds) is (entries == 2)
            d.close()
        d = driver_cls(entries=2, nowait_fast_path=False)
        try:
            ops = [write_sync_op(fd, i * 8, b"%08d" % i) for i in range(300)]
            d.submit(ops)
            wait_all(d, ops)
            assert all(op.error is None and op.result == 8 for op in ops)
            assert p.read_bytes() == b"".join(b"%08d" % i for i in range(300))
            assert d._ops == {}
        finally:
            d.close()
    finally:
        os.close(fd)


# -- io_uring_enter(2) saying "not now" --------------------------------------------------------

LATER = [errno.EINTR, errno.EBUSY, errno.EAGAIN]


def refused(err: int) -> OSError:
    return OSError(err, os.strerror(err))


class _SubmitRefused:
    """The C ring, with ``submit()`` refused ``times`` times with ``err``."""

    def __init__(self, ring: Any, err: int, times: int) -> None:
        self.ring, self.err, self.times = ring, err, times

    def submit(self) -> int:
        if self.times:
            self.times -= 1
            raise refused(self.err)
        left: int = self.ring.submit()
        return left

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ring, name)


@pytest.mark.parametrize("err", LATER, ids=[errno.errorcode[e] for e in LATER])
def test_a_refused_submit_is_sent_again_by_the_next_reap(
    driver_cls: type[IoUringDriver], err: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """io_uring_enter says EINTR, EBUSY or EAGAIN to a submit: the SQEs stay queued, no op
    fails, fileno() is made readable, and the next reap submits them."""
    p = tmp_path / "f.bin"
    data = os.urandom(4 * PAGE)
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    if driver_cls is IoUringDriver:
        real = io_uring._L.io_uring_submit
        calls: list[int] = []

        def submit(ring: Any) -> int:
            calls.append(1)
            if len(calls) == 1:
                raise refused(err)
            n: int = real(ring)
            return n

        monkeypatch.setattr(io_uring._L, "io_uring_submit", submit)
        d: IoUringDriver = driver_cls(nowait_fast_path=False)
    else:

        class PythonPrep(IoUringCDriver):  # the batch through _submit_sq, which the proxy sees
            def _prep(self, op: Op) -> bool:
                return super()._prep(op)

        d = PythonPrep(nowait_fast_path=False)
        d._ring = _SubmitRefused(d._ring, err, 1)
    try:
        ops = file_reads(fd, 4)
        d.submit(ops)
        assert all(op.state is OpState.SUBMITTED for op in ops)  # queued, not failed
        assert select.select([d.fileno()], [], [], 0)[0]
        wait_all(d, ops)
        assert [bytes(op.buffers[0]) for op in ops] == [data[i * PAGE : (i + 1) * PAGE] for i in range(4)]
        assert all(op.result == PAGE for op in ops)
    finally:
        d.close()
        os.close(fd)


@pytest.mark.parametrize("err", LATER, ids=[errno.errorcode[e] for e in LATER])
def test_a_refused_overflow_flush_is_tried_again_by_the_next_reap(
    driver_cls: type[IoUringDriver], err: int, tmp_path: Path
) -> None:
    """A CQ that overflowed (a ring of 2 SQEs, 4 CQEs, 32 reads): io_uring_enter refusing
    the flush of the kernel's overflow list for now loses nothing and raises nothing; the
    next reap flushes it."""
    p = tmp_path / "f.bin"
    data = os.urandom(32 * PAGE)
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)

    class FlushRefusedOnce(driver_cls):  # type: ignore[valid-type,misc]
        refusals = 0

        def _flush_overflow(self) -> None:
            if not self.refusals:
                self.refusals += 1
                raise refused(err)
            super()._flush_overflow()

    d = FlushRefusedOnce(entries=2, nowait_fast_path=False, reap_batch=0)
    try:
        ops = file_reads(fd, 32)
        d.submit(ops)
        wait_all(d, ops)
        assert d.refusals == 1 and d.statistics().overflows > 1
        assert all(bytes(op.buffers[0]) == data[i * PAGE : (i + 1) * PAGE] for i, op in enumerate(ops))
    finally:
        d.close()
        os.close(fd)


# -- fork ---------------------------------------------------------------------------------------


def test_a_fork_child_touching_the_parents_ring_gets_an_error_and_leaves_it_whole(
    driver_cls: type[IoUringDriver], pipe: EmptyPipe
) -> None:
    """In a child, every call on the parent's driver raises RuntimeError before touching the
    ring (its mappings are not the child's: MADV_DONTFORK); the parent's read in flight then
    completes as if no child had been."""
    d = driver_cls(nowait_fast_path=False)
    op = pipe_read(pipe)
    d.submit([op])
    calls: dict[str, Callable[[], object]] = {
        "submit": lambda: d.submit([Op(OpKind.NOP, -1)]),
        "reap": d.reap,
        "reap_and_wake": lambda: d.reap_and_wake(lambda op: None),
        "cancel": lambda: d.cancel(op),
        "fileno": d.fileno,
        "close": d.close,
    }

    def child() -> str:
        said = []
        for name, call in calls.items():
            try:
                call()
            except RuntimeError as exc:
                said.append(f"{name}:{'belongs to the parent process' in str(exc)}")
            else:
                said.append(f"{name}:no error")
        calls.clear()
        return ",".join(said)

    try:
        assert in_child(child) == ",".join(f"{name}:True" for name in calls)
        assert op.state is OpState.SUBMITTED
        os.write(pipe.wfd, EmptyPipe.DATA)
        wait_all(d, [op])
        assert op.result == len(EmptyPipe.DATA) and bytes(op.buffers[0]) == EmptyPipe.DATA
    finally:
        d.close()
