"""The edges a new user found (issue 12): writes under cancellation, offsets past off_t,
files used from another loop, thread or process, pipes, unclosed files, driver options.

Each test names the row of the report it guards; each fails without its fix.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiopg_io
from aiopg_io._context import live_contexts
from aiopg_io.drivers import Op, OpKind, OpState, driver_class, resolve, unavailable_reason
from aiopg_io.drivers.base import OFF_T_MAX
from aiopg_io.errors import DriverOptionError, DriverUnavailableError, InvalidOffsetError, WrongLoopError
from tests.conftest import in_child, open_fds

anyio_mark = pytest.mark.anyio


async def _settle() -> None:
    """Let callbacks handed to this loop from elsewhere (a release) run."""
    for _ in range(20):
        if not live_contexts():
            return
        await anyio.sleep(0.005)


# -- row 1: a cursor write in append mode reaches the file at most once ---------------------------


@anyio_mark
@pytest.mark.parametrize(
    ("mode", "buffering"),
    [("ab", 64), ("ab", 0), ("a", 64), ("r+b", 64)],
    ids=["ab-buffered", "ab-unbuffered", "a-text", "r+b"],
)
async def test_row1_cancelled_cursor_writes_reach_the_file_at_most_once(
    driver: str, tmp_path: Path, mode: str, buffering: int
) -> None:
    p = tmp_path / "log.txt"
    p.write_bytes(b"")
    acked: list[bytes] = []
    cancelled = 0
    async with aiopg_io.open(p, mode, driver=driver, buffering=buffering) as f:
        for i in range(3000):
            line = f"line {i:05d}\n"
            data: Any = line if "b" not in mode else line.encode()
            with anyio.move_on_after((0, 1e-5, 1e-4)[i % 3]) as scope:
                await f.write(data)
            if scope.cancelled_caught:
                cancelled += 1
            else:
                acked.append(line.encode())
    assert cancelled > 0, "nothing was cancelled: the test tests nothing"
    counts = Counter(p.read_bytes().splitlines(keepends=True))
    twice = {line: n for line, n in counts.items() if n > 1}
    assert not twice, f"{len(twice)} lines were written more than once, e.g. {next(iter(twice.items()))}"
    missing = [line for line in acked if counts[line] != 1]
    assert not missing, f"{len(missing)} acknowledged writes are not in the file, e.g. {missing[0]!r}"


@anyio_mark
async def test_row1_a_write_cancelled_after_it_happened_moves_the_cursor(driver: str, tmp_path: Path) -> None:
    """Unbuffered: the cursor follows what reached the file, so the next write lands after
    it rather than over it."""
    p = tmp_path / "f.bin"
    behind = 0
    async with aiopg_io.open(p, "wb", driver=driver, buffering=0) as f:
        for i in range(1000):
            with anyio.move_on_after((0, 1e-5, 1e-4)[i % 3]):
                await f.write(b"%04d" % i)
            behind += await f.tell() != os.fstat(f.fileno()).st_size
    assert behind == 0, f"the cursor was behind the file's end after {behind} writes"
    data = p.read_bytes()
    chunks = [data[i : i + 4] for i in range(0, len(data), 4)]
    assert chunks == sorted(set(chunks))


# -- rows 2-4: offsets past off_t are refused before any driver sees them ------------------------


@anyio_mark
async def test_rows2_to_4_offsets_past_off_t_are_refused_with_the_path_and_the_limit(
    driver: str, tmp_path: Path
) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"0123456789")
    limit = str(OFF_T_MAX)
    with anyio.fail_after(10):  # row 3: the worker driver used to hang here
        f = await aiopg_io.open(p, "r+b", driver=driver)
        calls: list[tuple[str, Callable[[], Coroutine[Any, Any, object]]]] = [
            ("pwrite at 2**64", lambda: f.pwrite(b"ZZZZ", 2**64)),
            ("pread at 2**64", lambda: f.pread(10, 2**64)),
            ("pread at 2**63", lambda: f.pread(4, 2**63)),
            ("pread ending past 2**63-1", lambda: f.pread(4, OFF_T_MAX - 1)),
            ("pwrite ending past 2**63-1", lambda: f.pwrite(b"ZZZZ", OFF_T_MAX - 2)),
            ("preadinto at 2**63", lambda: f.preadinto(bytearray(4), 2**63)),
            ("pwritev at 2**64", lambda: f.pwritev([b"ZZ", b"ZZ"], 2**64)),
            ("fallocate ending past 2**63-1", lambda: f.fallocate(OFF_T_MAX, 2)),
            ("seek to 2**64", lambda: f.seek(2**64)),
            ("truncate to 2**64", lambda: f.truncate(2**64)),
        ]
        for what, call in calls:
            with pytest.raises(InvalidOffsetError) as info:
                await call()
            msg = str(info.value)
            assert str(p) in msg and limit in msg and "largest file" in msg, (what, msg)
        assert await f.pread(10, 0) == b"0123456789"
        # A cursor write at the very end: refused at flush, and again at close (the bytes
        # stay buffered, as in io.BufferedWriter), which still closes the file.
        await f.seek(OFF_T_MAX - 1)
        await f.write(b"ZZZZ")
        for call in (f.flush, f.aclose):
            with pytest.raises(InvalidOffsetError, match=r"would end at 9223372036854775810"):
                await call()
        assert f.closed
    assert p.read_bytes() == b"0123456789"


def _submit_and_reap(name: str, op: Op) -> None:
    """Hand ``op`` to a bare driver and wait (bounded) until it is reaped."""
    import select
    import time

    d = driver_class(name)()
    deadline = time.monotonic() + 10

    def wait(op: Op, what: str) -> None:
        while op.state is not OpState.REAPED:
            assert time.monotonic() < deadline, f"{name}: {what}"
            fd = d.fileno()
            if fd is not None:
                select.select([fd], [], [], 0.1)
            d.reap()

    try:
        d.submit([op])
        wait(op, "the op never completed")
        good = Op(OpKind.NOP, -1)  # the driver still works after the bad op
        d.submit([good])
        wait(good, "the driver stopped after a bad op")
        assert good.error is None
    finally:
        d.close()


def test_row3_a_bad_op_fails_the_op_never_the_thread(driver: str, tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"x" * 16)
    fd = os.open(p, os.O_RDONLY)
    try:
        buf = bytearray(4)
        op = Op(OpKind.READ, fd, 2**64, (memoryview(buf),), path=str(p), keepalive=buf)
        _submit_and_reap(driver, op)
        assert isinstance(op.error, OSError) and op.result is None
        assert str(p) in str(op.error)
    finally:
        os.close(fd)


@anyio_mark
async def test_row14_huge_reads_return_what_the_file_holds_or_say_why(driver: str, tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    async with aiopg_io.open(p, "rb", driver=driver) as f:
        assert await f.pread(2**40, 0) == b"abc"  # was MemoryError with no message
        assert await f.read(2**40) == b"abc"
    sparse = tmp_path / "sparse.bin"
    with open(sparse, "wb") as raw:
        raw.truncate(2**41)  # holes: no disk space taken
    async with aiopg_io.open(sparse, "rb", driver=driver) as f:
        with pytest.raises(MemoryError, match=rf"{sparse}: a read of {2**40} bytes needs a buffer"):
            await f.pread(2**40, 0)


# -- row 14: driver options -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("worker:bogus=1", "driver 'worker' has no option 'bogus' (in 'worker:bogus=1'); it takes: threads"),
        ("worker:threads=abc", "worker threads='abc' is not a whole number: it takes 1 to 1024"),
        ("worker:threads=0", "worker threads=0 is out of range: 1 to 1024"),
        (
            "sync:threads=2",
            "driver 'sync' has no option 'threads' (in 'sync:threads=2'); it takes: no options",
        ),
    ],
)
def test_row14_driver_options_are_checked_with_the_value_and_the_limit(spec: str, message: str) -> None:
    with pytest.raises(DriverOptionError) as info:
        resolve(spec).create().close()
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


@anyio_mark
async def test_row14_a_bad_driver_option_fails_open_and_leaves_nothing(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"keep")
    before = open_fds()
    with pytest.raises(DriverOptionError, match="has no option 'bogus'"):
        await aiopg_io.open(p, "r+b", driver="worker:bogus=1")
    assert p.read_bytes() == b"keep" and open_fds() == before and live_contexts() == []


# -- row 5: a file used across event loops ------------------------------------------------------

Runner = Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]


def _runners() -> list[Any]:
    import trio

    out = [
        pytest.param(lambda fn: asyncio.run(fn()), id="asyncio"),
        pytest.param(lambda fn: trio.run(fn), id="trio"),
    ]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the test extra
        pass
    else:

        def run_uvloop(fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
            loop = uvloop.new_event_loop()
            try:
                return loop.run_until_complete(fn())
            finally:
                loop.close()

        out.insert(1, pytest.param(run_uvloop, id="uvloop"))
    return out


@pytest.mark.parametrize("run", _runners())
def test_row5_a_file_from_an_earlier_run_raises_at_once_and_closes_from_a_later_one(
    run: Runner, driver: str, tmp_path: Path
) -> None:
    p = tmp_path / "f.bin"
    before = open_fds()
    box: dict[str, Any] = {}

    async def first() -> None:
        f = box["f"] = await aiopg_io.open(p, "wb", driver=driver)
        await f.write(b"buffered, not yet written")

    async def second() -> None:
        with anyio.fail_after(5):
            with pytest.raises(WrongLoopError, match="was opened in another event loop") as info:
                await box["f"].pwrite(b"x", 0)
            assert str(p) in str(info.value)

    async def third() -> None:
        with anyio.fail_after(5):
            await box["f"].aclose()

    run(first)
    run(second)
    run(third)
    assert box["f"].closed
    assert p.read_bytes() == b"buffered, not yet written"
    assert open_fds() == before
    assert live_contexts() == []


# -- row 6: fork ------------------------------------------------------------------------------


@anyio_mark
async def test_row6_a_fork_child_closing_a_file_leaves_the_parent_running(
    driver: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if sys.version_info[:2] == (3, 13) and driver == "posix_aio":
        # An open bug, not a pass: in both end-of-session CI runs of 2026-12-05 (night) the
        # fork child of this case died with SIGSEGV in CPython 3.13.0's garbage collection
        # (inside IOContext.follow), only in the whole suite under xdist (uvloop); alone it
        # passes, and so it did in every run before that session. Kept running, reported.
        request.applymarker(
            pytest.mark.xfail(
                reason="open bug: the fork child may die with SIGSEGV in 3.13's garbage "
                "collection (closing note of 2026-12-05, night)",
                strict=False,
            )
        )
    p = tmp_path / "f.bin"
    data = os.urandom(64 * 1024)
    p.write_bytes(data)
    async with aiopg_io.open(p, "rb", driver=driver) as f:
        assert await f.pread(4096, 0) == data[:4096]

        def child() -> str:
            out: list[str] = []

            async def use_and_close() -> None:
                try:
                    await f.pread(4096, 0)
                except WrongLoopError as exc:
                    out.append(str(exc))
                else:
                    out.append("no error")
                await f.aclose()
                out.append(str(f.closed))

            # A new thread: the parent's loop still looks current in the forked one.
            t = threading.Thread(target=lambda: asyncio.run(use_and_close()))
            t.start()
            t.join(20)
            return "|".join(out)

        msg, closed = in_child(child).split("|")
        assert "was opened in the parent process" in msg and "open the file anew in the child" in msg
        assert closed == "True"
        # The parent goes on: its driver's state was not touched (it used to freeze here).
        with anyio.fail_after(10):
            for i in range(64):
                assert await f.pread(1024, i * 1024) == data[i * 1024 : (i + 1) * 1024]


def _aio_survives_fork() -> bool:
    from aiopg_io.drivers.posix_aio import _platforms

    return _platforms.PLATFORM is not None and _platforms.PLATFORM.survives_fork


@anyio_mark
async def test_row6_a_fork_child_opens_and_reads_its_own_file_in_its_own_loop(
    driver: str, tmp_path: Path, anyio_backend: tuple[str, dict[str, object]]
) -> None:
    """The child of a parent in the middle of its I/O (glibc's AIO helper threads idle, the
    posix_aio wake-up read in flight) opens a file of its own: it reads it back, or, for
    posix_aio on glibc, is refused with the reason (it used to wait for ever)."""
    p = tmp_path / "f.bin"
    data = os.urandom(64 * 1024)
    p.write_bytes(data)
    own = tmp_path / "own.bin"
    own.write_bytes(data[::-1])
    async with aiopg_io.open(p, "rb", driver=driver) as f:
        assert await f.pread(4096, 0) == data[:4096]

        def child() -> str:
            out: list[str] = []

            async def read_own() -> None:
                before, inherited = open_fds(), live_contexts()  # the parent's file is one
                with anyio.fail_after(10):
                    try:
                        g = await aiopg_io.open(own, "r+b", driver=driver)
                    except DriverUnavailableError as exc:
                        out.append(f"refused: {exc}")
                        g = await aiopg_io.open(own, "r+b", driver="worker")  # what it says to use
                    async with g:
                        out.append(str(await g.pread(4096, 1024) == data[::-1][1024:5120]))
                        await g.pwrite(b"child", 0)
                        out.append(str(await g.pread(5, 0) == b"child"))
                    while live_contexts() != inherited:  # released through the loop on trio
                        await anyio.sleep(0.005)
                out.append(str(open_fds() == before))

            name, options = anyio_backend
            t = threading.Thread(target=lambda: anyio.run(read_own, backend=name, backend_options=options))
            t.start()
            t.join(20)
            return "|".join(out) if not t.is_alive() else "hung: " + "|".join(out)

        report = in_child(child)
        if driver == "posix_aio" and not _aio_survives_fork():
            refused, *rest = report.split("|")
            assert refused.startswith("refused: driver 'posix_aio' cannot run here: this process is a fork")
            assert "use the worker driver in the child" in refused
        else:
            rest = report.split("|")
        assert rest == ["True", "True", "True"], report
        # The parent goes on, its driver untouched.
        with anyio.fail_after(10):
            assert await f.pread(4096, 8192) == data[8192:12288]
    assert own.read_bytes()[:5] == b"child"


def test_row6_a_fork_child_of_a_process_that_never_used_posix_aio_gets_it(tmp_path: Path) -> None:
    """glibc's AIO starts afresh in such a child: the refusal above is for inherited state only."""
    if unavailable_reason("posix_aio") is not None:
        pytest.skip(f"posix_aio cannot run here: {unavailable_reason('posix_aio')}")
    p = tmp_path / "f.bin"
    p.write_bytes(b"read in the child")
    script = f"""
import os, asyncio, aiopg_io
async def main():
    async with aiopg_io.open({str(p)!r}, "rb", driver="posix_aio") as f:
        print(await asyncio.wait_for(f.read(), 10))
pid = os.fork()
if pid == 0:
    try:
        asyncio.run(main())
    finally:
        os._exit(0)
_, status = os.waitpid(pid, 0)
raise SystemExit(os.waitstatus_to_exitcode(status))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "b'read in the child'\n", "")


# -- row 7: a file used from another thread's loop ----------------------------------------------


def _other_backend(anyio_backend: tuple[str, dict[str, object]]) -> tuple[str, dict[str, object]]:
    return ("trio", {}) if anyio_backend[0] == "asyncio" else ("asyncio", {})


@anyio_mark
async def test_row7_another_threads_loop_gets_one_clear_error_and_can_close(
    driver: str, tmp_path: Path, anyio_backend: tuple[str, dict[str, object]]
) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"0123456789")
    before = open_fds()
    f = await aiopg_io.open(p, "r+b", driver=driver)
    await f.write(b"AB")
    seen: list[str] = []

    async def elsewhere(close: bool) -> None:
        for call in (lambda: f.pread(4, 0), lambda: f.pwrite(b"x", 0), lambda: f.fdatasync()):
            try:
                await call()
            except WrongLoopError as exc:
                seen.append(str(exc))
        if close:
            await f.aclose()

    # The same library's loop in another thread, then the other library's, which closes.
    for (name, options), close in ((anyio_backend, False), (_other_backend(anyio_backend), True)):
        t = threading.Thread(
            target=lambda n=name, o=options, c=close: anyio.run(elsewhere, c, backend=n, backend_options=o)
        )
        t.start()
        await anyio.to_thread.run_sync(t.join, 20)
    assert len(seen) == 6 and all("was opened in another event loop" in m and str(p) in m for m in seen)
    assert f.closed
    await _settle()
    assert p.read_bytes() == b"AB23456789"
    assert open_fds() == before
    assert live_contexts() == []


@anyio_mark
async def test_row7_closing_elsewhere_waits_for_the_owners_op_before_freeing_the_fd(driver: str) -> None:
    if driver == "sync":
        pytest.skip("the sync driver blocks the loop on a read from an empty pipe: no op is ever in flight")
    rfd, wfd = os.pipe()
    f = await aiopg_io.open(rfd, "rb", driver=driver)
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await f.pread(5, 0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        while not f._in_flight:
            await anyio.sleep(0.001)
        t = threading.Thread(target=lambda: asyncio.run(f.aclose()))
        t.start()
        await anyio.to_thread.run_sync(t.join, 20)
        assert f.closed
        os.fstat(rfd)  # still open: the read owns it
        os.write(wfd, b"hello")
    assert got == [b"hello"]
    with pytest.raises(OSError):
        os.fstat(rfd)  # freed once the read ended
    os.close(wfd)
    await _settle()
    assert live_contexts() == []


# -- row 8: pipes ------------------------------------------------------------------------------


@anyio_mark
async def test_row8_a_pipe_reads_and_writes_alike_on_every_driver(driver: str) -> None:
    rfd, wfd = os.pipe()
    async with aiopg_io.open(wfd, "wb", driver=driver, buffering=0) as w:
        assert not w.seekable()
        await w.write(b"through the pipe\n")
    async with aiopg_io.open(rfd, "rb", driver=driver) as r:  # closing the fds, as open() does
        assert not r.seekable()
        assert await r.read() == b"through the pipe\n"


# -- row 9: an unclosed file keeps its buffered bytes ---------------------------------------------


@anyio_mark
@pytest.mark.parametrize("mode", ["wb", "ab", "w"])
async def test_row9_an_unclosed_file_writes_its_buffer_when_collected(
    driver: str, tmp_path: Path, mode: str
) -> None:
    p = tmp_path / "f.txt"
    p.write_bytes(b"old\n" if mode == "ab" else b"")
    before = open_fds()
    f = await aiopg_io.open(p, mode, driver=driver)
    await f.write(b"kept\n" if "b" in mode else "kept\n")
    with pytest.warns(ResourceWarning, match="unclosed file"):
        del f
        gc.collect()
    await _settle()
    assert p.read_bytes() == (b"old\nkept\n" if mode == "ab" else b"kept\n")
    assert open_fds() == before
    assert live_contexts() == []
