"""I/O started with no task waiting for it (``AsyncFile.start_preadv`` / ``start_pwritev``,
``submit_staged``; ``IOContext.start`` underneath) on every loop x driver: the callback gets
the count or the error where the completion is reaped, and ``aclose`` waits for the op."""

from __future__ import annotations

import errno
import io
import logging
from pathlib import Path
from typing import Any

import anyio
import pytest
import sniffio

import aiopg_io
from aiopg_io.testing import Fault, FaultInjector

pytestmark = pytest.mark.anyio


class Outcomes:
    """Records each callback; ``wait(n)`` returns once ``n`` have arrived."""

    def __init__(self) -> None:
        self.got: list[tuple[int, OSError | None]] = []
        self._changed = anyio.Event()

    def __call__(self, nbytes: int, error: OSError | None) -> None:
        self.got.append((nbytes, error))
        self._changed.set()

    async def wait(self, n: int) -> None:
        while len(self.got) < n:
            await self._changed.wait()
            self._changed = anyio.Event()


async def test_started_writes_and_reads_call_back_with_their_counts(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    outcomes = Outcomes()
    async with await aiopg_io.open(path, "w+b") as f:
        await f.start_pwritev([b"ab" * 100, b"cd" * 50], 0, outcomes)
        await f.start_pwritev([b"ef" * 10], 300, outcomes)
        f.submit_staged()  # sent now; the end of the tick finds nothing left to send
        await outcomes.wait(2)
        # Two ops in flight at once complete in either order (a worker's threads race).
        assert sorted(outcomes.got) == [(20, None), (300, None)]
        a, b = bytearray(150), bytearray(170)
        await f.start_preadv([a, b], 0, outcomes)
        await outcomes.wait(3)
        assert outcomes.got[2] == (320, None)
        assert bytes(a + b) == b"ab" * 100 + b"cd" * 50 + b"ef" * 10
        tail = bytearray(100)
        await f.start_preadv([tail], 310, outcomes)  # short only at the end of the file
        await outcomes.wait(4)
        assert outcomes.got[3] == (10, None) and bytes(tail[:10]) == b"ef" * 5
    assert path.read_bytes() == b"ab" * 100 + b"cd" * 50 + b"ef" * 10


class CallbackBroke(Exception):
    pass


async def test_a_started_ops_callback_that_raises_is_reported_and_the_loop_goes_on(
    driver: str, tmp_path: Path
) -> None:
    """An ``on_done`` that raises (it must not): the loop reports the exception as it reports
    a callback's, and goes on: asyncio through its exception handler, trio on the
    ``aiopg_io`` logger (it used to end the run with TrioInternalError). A write started
    alongside calls back, another task's I/O completes, no count is left on the file; a
    read the page cache answers at once calls back inline, into the caller of start_preadv,
    which then gets the exception itself."""
    path = tmp_path / "f"
    path.write_bytes(b"-" * 64)
    reported: list[BaseException] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info and record.exc_info[1] is not None:
                reported.append(record.exc_info[1])

    def broken(nbytes: int, error: OSError | None) -> None:
        raise CallbackBroke(f"on_done({nbytes}, {error}) raised")

    handler = Handler()
    logger = logging.getLogger("aiopg_io")
    loop: Any = None
    if sniffio.current_async_library() == "asyncio":
        import asyncio

        loop = asyncio.get_running_loop()
        old = loop.get_exception_handler()
        loop.set_exception_handler(lambda loop, context: reported.append(context["exception"]))
    logger.addHandler(handler)
    outcomes = Outcomes()
    try:
        async with await aiopg_io.open(path, "r+b") as f:
            with anyio.fail_after(20):
                await f.start_pwritev([b"AB"], 0, broken)
                await f.start_pwritev([b"CD"], 2, outcomes)
                assert await f.pwrite(b"EF", 4) == 2
                await outcomes.wait(1)
                while not reported:
                    await anyio.sleep(0)
                buf = bytearray(8)
                try:
                    await f.start_preadv([buf], 0, broken)
                except CallbackBroke:  # answered inline (the page cache): raised here
                    pass
                while len(reported) < 2 and f._in_flight:
                    await anyio.sleep(0)
                assert await f.pread(6, 0) == b"ABCDEF"
            assert f._in_flight == 0
    finally:
        logger.removeHandler(handler)
        if loop is not None:
            loop.set_exception_handler(old)
    assert outcomes.got == [(2, None)]
    assert reported and all(type(e) is CallbackBroke for e in reported)
    assert path.read_bytes() == b"ABCDEF" + b"-" * 58


async def test_aclose_waits_for_a_started_read(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 4096)
    outcomes = Outcomes()
    f = await aiopg_io.open(path, "rb")
    buf = bytearray(4096)
    await f.start_preadv([buf], 0, outcomes)
    await f.aclose()
    assert outcomes.got == [(4096, None)] and bytes(buf) == b"x" * 4096


async def test_started_ops_fail_by_type_and_message(driver: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"y" * 8192)
    outcomes = Outcomes()
    async with await aiopg_io.open(path, "rb") as f:
        with pytest.raises(io.UnsupportedOperation, match="not open for writing"):
            await f.start_pwritev([b"z"], 0, outcomes)
        with pytest.raises(TypeError, match="each buffer must be writable"):
            await f.start_preadv([b"read-only"], 0, outcomes)
    assert outcomes.got == []  # refused before anything was started
    injector = FaultInjector(Fault(kind="reads", path="f", nth=1, errno=errno.EIO), driver=driver)
    async with await aiopg_io.open(path, "rb", driver=injector) as f:
        await f.start_preadv([bytearray(4096)], 0, outcomes)
        await outcomes.wait(1)
    ((nbytes, error),) = outcomes.got
    assert nbytes == 0 and isinstance(error, OSError) and error.errno == errno.EIO
    assert "Input/output error" in str(error)
