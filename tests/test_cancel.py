"""Cancellation: prompt, leak-free, and never lets a buffer be reused while I/O may touch it."""

from __future__ import annotations

import gc
import os
import random
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

import aiopg_io
from aiopg_io._context import live_contexts
from aiopg_io._glue import current_glue
from tests.conftest import ON_TRIO_ONLY, open_fds

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


#: Drivers whose op on a pipe is a thread blocked in read(2) or write(2): nothing cancels it.
_BLOCKED_IN_A_THREAD = {
    "worker": "a worker thread blocked in read(2)/write(2) on a pipe cannot be cancelled: "
    "aclose waits for it",
    "posix_aio": "glibc's AIO thread blocked in read(2)/write(2) on a pipe cannot be cancelled "
    "(aio_cancel: AIO_NOTCANCELED): aclose waits for it",
    "sync": "the sync driver's read of an empty FIFO blocks the loop itself",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["throw", "close", "collect"])
@pytest.mark.parametrize("kind", ["read", "write"])
async def test_aclose_cancels_an_abandoned_op_on_a_fifo(
    anyio_backend: Any, driver: str, tmp_path: Path, how: str, kind: str
) -> None:
    """A read of an empty FIFO, or a write past a full one, whose call ended while its op
    was out (an exception thrown in that is no cancellation, close(), collected): no other
    end ever comes, so the op would never end. aclose asks the driver to cancel it, waits
    for its end, closes the fd and releases the context. It used to wait for it forever."""
    if driver in _BLOCKED_IN_A_THREAD:
        pytest.skip(_BLOCKED_IN_A_THREAD[driver])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    before = open_fds()
    # r+b: a FIFO opened for reading and writing opens at once (Linux), and is its own
    # writer, which never writes: a read waits forever, a write past the pipe's buffer too.
    f = await aiopg_io.open(fifo, "r+b", buffering=0, driver=driver)
    fd = f.fileno()
    aw: Any = f.read(10) if kind == "read" else f.write(bytes(4 << 20))
    step = aw.__await__()
    step.send(None)  # staged
    for _ in range(5):
        await anyio.lowlevel.checkpoint()  # submitted: the driver owns it
    if how == "throw":
        with pytest.raises(KeyError, match="thrown"):
            step.throw(KeyError("thrown"))
    elif how == "close":
        step.close()
    else:
        del aw, step
        gc.collect()
    await f.aclose()
    assert str(fd) not in open_fds()
    assert f._in_flight == 0 and not live_contexts()
    assert open_fds() == before


# -- trio's park: the C one (_wake.TaskParker) and its Python twin ---------------------------


@pytest.fixture(params=["c", "python"])
def trio_park(request: pytest.FixtureRequest, anyio_backend: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which park trio's glue uses for an op: the C one (where trio's shapes allow it) or the
    Python twin it falls back to. Set before the run makes its glue (and its contexts)."""
    assert anyio_backend[0] == "trio", "a trio_park test runs under @ON_TRIO_ONLY"
    from aiopg_io._glue import _trio

    if request.param == "c" and _trio._PARK_ARGS is None:
        pytest.skip(_trio.park_status())
    if request.param == "python":
        monkeypatch.setattr(_trio, "_PARK_ARGS", None)
    return str(request.param)


def _parks_in_c() -> bool:
    from aiopg_io._glue import _wake

    return type(current_glue().wait) is _wake.TaskParker


@ON_TRIO_ONLY
async def test_cancellation_storm_on_either_park(trio_park: str, driver: str, tmp_path: Path) -> None:
    """The storm's rules (a buffer untouched once its call ended, canaries intact, nothing
    left open) on the park in use and on its fallback."""
    assert _parks_in_c() == (trio_park == "c")
    await _storm(driver, tmp_path / "storm.bin", 400, 3)


@ON_TRIO_ONLY
@pytest.mark.parametrize("dropped", [False, True])
async def test_a_parked_task_keeps_trios_cancellation_rules(trio_park: str, dropped: bool) -> None:
    """Cancelled while parked: the park asks on_cancel(op) once; an op dropped before the
    driver had it raises at once, one the driver owns keeps its task parked (through any
    number of schedule points) until the op is woken, and then raises the cancellation. Not
    cancelled: the wake-up returns. The wake-up goes through the C waker, as the driver's."""
    glue = current_glue()
    assert _parks_in_c() == (trio_park == "c")
    waker = glue.waker(glue.wake)
    asked: list[object] = []

    def on_cancel(op: object) -> bool:
        asked.append(op)
        return dropped

    for cancel in (True, False):
        op: Any = SimpleNamespace(waiter=None)
        asked.clear()
        ended: list[str] = []

        async def parked(scope: anyio.CancelScope, op: Any, ended: list[str]) -> None:
            with scope:
                await glue.wait(op, on_cancel)
                ended.append("returned")
            ended.append("cancelled" if scope.cancelled_caught else "left")

        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()
            tg.start_soon(parked, scope, op, ended)
            try:
                for _ in range(10):  # trio may run this task first in the batch
                    if op.waiter is not None:
                        break
                    await anyio.lowlevel.checkpoint()
                assert op.waiter is not None and not ended  # parked, the op its waiter
                if cancel:
                    scope.cancel()
                    for _ in range(3):
                        await anyio.lowlevel.checkpoint()
                    assert asked == [op]
                    if dropped:
                        assert ended == ["cancelled"]  # at once: nothing else will wake it
                        continue
                    assert ended == []  # still waiting for its op
                waker(op)
                assert op.waiter is None
            finally:
                if not ended and op.waiter is not None:  # a failed check: end the task, not hang
                    waker(op)
        assert ended == (["cancelled"] if cancel else ["returned", "left"])
        assert len(asked) == (1 if cancel else 0)


@ON_TRIO_ONLY
async def test_a_c_park_left_by_throw_is_never_woken(anyio_backend: Any) -> None:
    """A C park is an awaitable as a coroutine is: thrown into, it raises and is over; the
    waker then clears the op's waiter and reschedules nothing (rescheduling the running task
    would break trio's run); sent to again, it refuses."""
    if not _parks_in_c():
        from aiopg_io._glue import _trio

        pytest.skip(_trio.park_status())
    import trio

    glue = current_glue()
    op: Any = SimpleNamespace(waiter=None)
    park: Any = glue.wait(op, lambda _: False)
    trap = park.send(None)  # as trio's run loop would: the trap, the op's waiter set
    assert trap.abort_func is park and op.waiter is park
    assert park.task is trio.lowlevel.current_task() and park.raise_cancel is None
    with pytest.raises(KeyError, match="thrown"):
        park.throw(KeyError("thrown"))
    assert park.task is None
    glue.waker(glue.wake)(op)
    assert op.waiter is None
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        park.send(None)
    closed: Any = glue.wait(op, lambda _: False)
    closed.close()
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        closed.send(None)
    await anyio.lowlevel.checkpoint()  # this task was not rescheduled twice


def _thrown(throw: Any, args: tuple[Any, ...]) -> tuple[type, tuple[object, ...], object, list[object]]:
    """What ``throw(*args)`` raised: its type, args, the exception itself, its tracebacks."""
    with pytest.raises(BaseException) as info:
        throw(*args)
    tbs, tb = [], info.value.__traceback__
    while tb is not None:
        tbs.append(tb)
        tb = tb.tb_next
    return type(info.value), info.value.args, info.value, tbs


@ON_TRIO_ONLY
async def test_a_c_park_takes_throws_arguments_as_a_coroutine_does(anyio_backend: Any) -> None:
    """throw(typ, val, tb) into a parked C park: the exception built as CPython builds it for
    a coroutine (a tuple as the arguments, an instance of the class kept as is, the traceback
    kept); a bad argument (an instance with a separate value, a third argument that is no
    traceback, something no exception) is a TypeError that leaves the park parked. The C park
    used to call the class with the value whatever it was and drop the traceback."""
    if not _parks_in_c():
        from aiopg_io._glue import _trio

        pytest.skip(_trio.park_status())
    try:
        raise ValueError("for its traceback")
    except ValueError as exc:
        tb = exc.__traceback__
    inst = KeyError("given")
    cases: list[tuple[Any, ...]] = [
        (KeyError, "k"),
        (KeyError, ("a", 1)),
        (KeyError, inst),
        (KeyError,),
        (KeyError, None),
        (KeyError, "t", tb),
        (KeyError("i"), None, tb),
        (KeyError("i"), "v"),
        (KeyError, "k", "no traceback"),
        (42,),
    ]

    def suspended() -> Any:
        yield

    glue = current_glue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # throw's 3-argument form, 3.12+
        for args in cases:
            gen = suspended()
            next(gen)
            want_type, want_args, want_exc, want_tbs = _thrown(gen.throw, args)
            op: Any = SimpleNamespace(waiter=None)
            park: Any = glue.wait(op, lambda _: False)
            park.send(None)
            got_type, got_args, got_exc, got_tbs = _thrown(park.throw, args)
            assert (got_type, got_args) == (want_type, want_args), args
            assert (got_exc is inst) == (want_exc is inst), args
            assert (tb in got_tbs) == (tb in want_tbs), args
            assert (park.task is not None) == (want_type is TypeError), args  # still parked
            park.close()
    await anyio.lowlevel.checkpoint()
