"""The awaitables the file calls return, taken as coroutines, on every loop x driver.

``preadinto``, ``pread`` and ``pwrite`` return a coroutine of the pure path, or on
``io_uring_c`` an awaitable made in C (``_uring.c``: a ``Done`` the page cache answered, a
``RingWait`` staged on the ring). Whoever drives them by hand (``send``, ``throw``,
``close``) or drops them must see what a coroutine does: the exception it throws in built
as a coroutine builds it, and an op collected while out stops being counted, once, without
crashing whatever the file's bookkeeping raises meanwhile.
"""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import pytest
import sniffio

import aiopg_io
from aiopg_io import AsyncFile
from tests.conftest import evict

pytestmark = pytest.mark.anyio


def _traceback() -> TracebackType:
    try:
        raise ValueError("for its traceback")
    except ValueError as exc:
        assert exc.__traceback__ is not None
        return exc.__traceback__


def _tracebacks(exc: BaseException) -> list[TracebackType]:
    out = []
    tb = exc.__traceback__
    while tb is not None:
        out.append(tb)
        tb = tb.tb_next
    return out


def _calls(f: AsyncFile) -> dict[str, Callable[[], Any]]:
    # On io_uring_c pwrite goes to the ring (a RingWait), and a read of a cached file is
    # answered by the page-cache fast path (a Done); coroutines elsewhere.
    return {
        "pwrite": lambda: f.pwrite(b"ab", 0),
        "preadinto": lambda: f.preadinto(bytearray(4), 0),
        "pread": lambda: f.pread(4, 0),
    }


@pytest.mark.parametrize("call", ["pwrite", "preadinto", "pread"])
async def test_throw_builds_the_exception_as_a_coroutine_does(
    anyio_backend: Any, driver: str, tmp_path: Path, call: str
) -> None:
    """throw(type, value, tb) on an awaitable not started: the type instantiated from the
    value (an instance of it kept as is, a tuple as the arguments), the traceback kept, an
    instance with a separate value refused; and nothing written."""
    p = tmp_path / "f.bin"
    p.write_bytes(b"0123456789")
    tb = _traceback()
    inst = KeyError("given")
    cases: list[tuple[tuple[Any, ...], tuple[object, ...]]] = [
        ((KeyError, "k"), ("k",)),
        ((KeyError, ("a", 1)), ("a", 1)),
        ((KeyError, inst), ("given",)),
        ((KeyError,), ()),
        ((KeyError, None), ()),
        ((KeyError, "t", tb), ("t",)),
        ((KeyError("i"), None, tb), ("i",)),
    ]
    async with aiopg_io.open(p, "r+b", driver=driver) as f:
        make = _calls(f)[call]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # throw's 3-argument form, 3.12+
            for args, want in cases:
                aw = make()
                with pytest.raises(KeyError) as info:
                    aw.throw(*args)
                assert info.value.args == want, (type(aw).__name__, args)
                if args[1:2] == (inst,):
                    assert info.value is inst
                if len(args) == 3:
                    assert tb in _tracebacks(info.value), (type(aw).__name__, args)
                aw.close()
            aw = make()
            with pytest.raises(TypeError, match="instance exception may not have a separate value"):
                aw.throw(KeyError("i"), "v")
            aw.close()
        assert f._in_flight == 0
    assert p.read_bytes() == b"0123456789"


async def test_a_call_collected_while_its_op_is_out_is_uncounted_once(
    anyio_backend: Any, driver: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call stepped by hand until its op is out, then dropped (as when its task is
    destroyed), while the file's bookkeeping raises (a signal handler's KeyboardInterrupt in
    ``_op_ended``): reported as unraisable, the op still completes, the file counts it until
    then (its fd held: see the test below), then nothing, and goes on. The C awaitable used
    to report itself from its dealloc, which freed it twice (a segmentation fault)."""
    if sniffio.current_async_library() == "trio":
        pytest.skip("a trio call parks its own task: it cannot be stepped by hand inside a trio run")
    p = tmp_path / "f.bin"
    p.write_bytes(b"0" * 10)
    unraisable: list[type[BaseException]] = []  # the types only: the hook's object must not be kept
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(type(u.exc_value)))
    async with aiopg_io.open(p, "r+b", driver=driver) as f:
        ended = f._op_ended

        def interrupted(op: Any) -> None:
            ended(op)
            raise KeyboardInterrupt("a signal handler's, in _op_ended")

        f._op_ended = interrupted  # type: ignore[method-assign]
        aw: Awaitable[int] | None = f.pwrite(b"ab", 2)
        assert aw is not None
        step = aw.__await__()
        finished = False
        try:
            step.send(None)  # the op goes out; the caller parks on its waiter
        except KeyboardInterrupt:  # a driver that finished it at once: raised here
            finished = True
        del aw, step
        gc.collect()
        del f._op_ended
        assert f._in_flight == (0 if finished else 1)  # staged still: counted to its end
        with anyio.fail_after(10):
            while f._ctx._in_flight:  # the driver holds the op to its end
                await anyio.sleep(0)
        assert f._in_flight == 0
        assert await f.pwrite(b"cd", 4) == 2
        assert f._in_flight == 0
    assert p.read_bytes() == b"00abcd0000"
    assert unraisable == ([] if finished else [KeyboardInterrupt])


def _three_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``a.bin``, ``b.bin`` and ``keep.bin``, 16 bytes of ``a``, ``b`` and ``k``: a file the
    test writes to, one opened after it on the same fd number, one holding the context."""
    a, b, keep = tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "keep.bin"
    for path, byte in ((a, b"a"), (b, b"b"), (keep, b"k")):
        path.write_bytes(byte * 16)
    return a, b, keep


@pytest.mark.parametrize("how", ["throw", "close", "collect"])
async def test_a_call_ended_while_its_op_is_out_holds_the_fd_to_its_end(
    anyio_backend: Any, driver: str, tmp_path: Path, how: str
) -> None:
    """A write stepped by hand until its op is staged, then ended while it is out: an
    exception thrown in that is no cancellation, close(), or dropped (its task destroyed).
    aclose then waits for the op's end before it closes the fd, so a file opened after gets
    the same number and never the write's bytes: they land in the file the call was made on.
    The file used to stop counting the op with the call: aclose closed the fd at once, and
    the op, still staged, went to the kernel on the fd number the next open took."""
    a, b, keep = _three_files(tmp_path)
    async with aiopg_io.open(keep, "r+b", driver=driver):  # holds the context: no new ring
        f = await aiopg_io.open(a, "r+b", driver=driver)
        fd = f.fileno()
        aw: Any = f.pwrite(b"EVIL", 0)
        step = aw.__await__()
        step.send(None)  # staged; submitted at the end of this tick, or once we yield
        if how == "throw":
            with pytest.raises(KeyError, match="thrown"):
                step.throw(KeyError("thrown"))
        elif how == "close":
            step.close()
        else:
            del aw, step
            gc.collect()
        with anyio.fail_after(10):
            await f.aclose()
        other = os.open(b, os.O_RDWR)  # no yield since aclose returned: the lowest free number
        try:
            assert other == fd
            with anyio.fail_after(10):
                while f._ctx._in_flight:
                    await anyio.sleep(0)
        finally:
            os.close(other)
    assert (a.read_bytes(), b.read_bytes()) == (b"EVIL" + b"a" * 12, b"b" * 16)


async def test_a_call_made_before_close_and_awaited_after_never_touches_the_reused_fd(
    anyio_backend: Any, driver: str, tmp_path: Path
) -> None:
    """A write and an uncached read made on a file, the file closed, another opened on the same
    context (it gets the same fd number), then the two awaited: ClosedError, as a coroutine
    first sent to after the close raises, and the other file untouched. The ring path's
    awaitable used to stage its op on the fd as it was: the write landed in the other file."""
    a, b, keep = _three_files(tmp_path)
    async with aiopg_io.open(keep, "r+b", driver=driver):  # holds the context: no new ring
        f = await aiopg_io.open(a, "r+b", driver=driver)
        fd = f.fileno()
        evict(a)
        buf = bytearray(4)
        write, read = f.pwrite(b"EVIL", 0), f.preadinto(buf, 0)
        await f.aclose()
        async with aiopg_io.open(b, "r+b", driver=driver) as other:
            assert other.fileno() == fd  # the number reused
            with pytest.raises(aiopg_io.ClosedError, match="closed file"):
                await write
            try:
                got = await read
            except aiopg_io.ClosedError:
                pass
            else:  # the page cache answered it at the call, before the close (a Done)
                assert (got, buf) == (4, b"aaaa")
            assert await other.pread(16, 0) == b"b" * 16
    assert (a.read_bytes(), b.read_bytes()) == (b"a" * 16, b"b" * 16)


def _live(names: frozenset[str]) -> dict[str, int]:
    gc.collect()
    counts = dict.fromkeys(names, 0)
    for o in gc.get_objects():
        name = type(o).__name__
        if name in counts:
            counts[name] += 1
    return counts


async def test_many_calls_leave_no_object_reference_or_fd_behind(
    anyio_backend: Any, driver: str, tmp_path: Path
) -> None:
    """Hundreds of calls of every path (a write to the ring, reads the page cache answers,
    direct reads to the ring where the filesystem allows): after them, the same fds open,
    the same number of ops, awaitables and futures alive, the buffers referenced as
    before, and no more blocks allocated than before at any line (a leaked awaitable, Done
    included, which the GC does not track, would hold its result there)."""
    from tests.conftest import open_fds

    p = tmp_path / "f.bin"
    data = os.urandom(2 * 4096)
    p.write_bytes(data)
    try:
        direct: AsyncFile | None = await aiopg_io.open(p, "rb", direct=True, driver=driver)
    except (aiopg_io.AiopgIOError, OSError):
        direct = None  # a filesystem or driver without O_DIRECT: the other paths still run
    try:
        async with aiopg_io.open(p, "r+b", driver=driver) as f:
            wbuf, rbuf = data[:4096], bytearray(4096)
            dbuf = aiopg_io.aligned_buffer(4096)

            async def rounds(n: int) -> None:
                for _ in range(n):
                    assert await f.pwrite(wbuf, 0) == 4096
                    assert await f.preadinto(rbuf, 4096) == 4096
                    assert await f.pread(100, 0) == data[:100]
                    if direct is not None:
                        assert await direct.preadinto(dbuf, 4096) == 4096

            names = frozenset(
                {"RingWait", "RingRun", "FastRead", "Op", "InFlight", "Future", "Task", "coroutine"}
            )
            await rounds(50)
            fds, live = open_fds(), _live(names)
            refs = (sys.getrefcount(wbuf), sys.getrefcount(rbuf))
            tracemalloc.start()
            try:
                await rounds(100)  # what the interpreter and the loops cache on first use
                gc.collect()
                before = tracemalloc.take_snapshot()
                await rounds(500)
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
            assert (open_fds(), _live(names)) == (fds, live)
            assert (sys.getrefcount(wbuf), sys.getrefcount(rbuf)) == refs
            # Blocks still allocated, by the line that allocated them: a leak of one per call
            # of a kind adds 500 at some line; caches and free lists settle at a few.
            grown = max((d.count_diff for d in after.compare_to(before, "lineno")), default=0)
            assert grown < 100, [str(d) for d in after.compare_to(before, "lineno")[:3]]
            assert rbuf == data[4096:] and (direct is None or dbuf == data[4096:])
    finally:
        if direct is not None:
            await direct.aclose()
