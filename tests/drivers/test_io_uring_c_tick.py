"""The io_uring_c driver's tick in one C call (``Ring.tick``, ``IoUringCDriver._tick``) and the
thread fallback's reap that skips the threads while their flag is down: no completion and no
wake-up is lost, whichever fd signalled it and whenever.

The completion eventfd is read only where a tick emptied the CQ; one that leaves CQEs (the
reap limit) leaves it readable; a CQE posted after the read gets a signal of the tick's own.
Each test waits with a timeout, so a lost wake-up fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import select
import threading
from pathlib import Path

import anyio
import pytest

import aiopg_io
import aiopg_io.os as aos
from aiopg_io.drivers import io_uring_c
from aiopg_io.drivers._notify import Notifier
from aiopg_io.drivers.base import Op, OpKind, OpState
from aiopg_io.drivers.io_uring_c import IoUringCDriver
from aiopg_io.errors import WrongLoopError

_REASON = IoUringCDriver.unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"io_uring_c cannot run here: {_REASON}")

PAGE = 4096
_F_SETPIPE_SZ = 1031  # fcntl(2), Linux 2.6.35; not in Python's fcntl before 3.10


def readable(fd: int, timeout: float = 0.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_a_tick_that_leaves_cqes_leaves_the_fd_readable_and_one_that_drains_reads_it(tmp_path: Path) -> None:
    """20 whole reads through a reap limit of 3: each tick wakes at most 3 (in C), the fd
    polls readable while CQEs are left, and not once the last tick drained the CQ (the
    eventfd was read: the loop does not spin)."""
    p = tmp_path / "f.bin"
    data = os.urandom(20 * PAGE)
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    d = IoUringCDriver(nowait_fast_path=False, reap_batch=3)
    woken: list[Op] = []
    try:
        ops = [Op(OpKind.READ, fd, i * PAGE, (memoryview(bytearray(PAGE)),)) for i in range(20)]
        d.submit(ops)
        ticks = 0
        while len(woken) < len(ops):
            assert readable(d.fileno(), 10), "CQEs left in the CQ must keep fileno() readable"
            out, n = d.reap_and_wake(woken.append)
            assert out == [] and n <= 3
            ticks += 1
        assert not readable(d.fileno())
        assert ticks >= 7
        assert sorted(map(id, woken)) == sorted(map(id, ops))
        assert all(op.state is OpState.REAPED and op.result == PAGE for op in ops)
        assert b"".join(bytes(op.buffers[0]) for op in ops) == data
        st = d.statistics()
        assert (st.completed, st.in_flight) == (20, 0)
        assert dict(st.extra)["c_resumed"] == 20
    finally:
        d.close()
        os.close(fd)


def test_a_cqe_posted_after_the_tick_read_the_eventfd_gets_a_signal() -> None:
    """The race the tick closes: a CQE that arrives after the harvest saw the CQ empty and
    whose signal the tick's read of the eventfd consumed. Played deterministically: the
    "eventfd" handed to the tick is a one-slot packet pipe opened for reading and writing,
    full, with a ring write into it waiting for room; the tick's read makes that room, the
    kernel completes the write on the way back from the read (task work), and the tick finds
    its CQE and signals (the pipe, full again, refuses the signal with EAGAIN, as a
    saturated eventfd would: it is readable already)."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_DIRECT)
    ring = io_uring_c._U.Ring(4)
    both = -1
    try:
        fcntl.fcntl(w, _F_SETPIPE_SZ, PAGE)  # one slot: one packet fills it
        both = os.open(f"/proc/self/fd/{r}", os.O_RDWR | os.O_NONBLOCK)
        os.write(w, b"12345678")
        with pytest.raises(BlockingIOError):
            os.write(w, b"x")
        buf = bytearray(b"abcdefgh")
        iov = io_uring_c._U.iovec([memoryview(buf)], False)
        assert ring.prep_writev(w, iov, 0, 7)
        assert ring.submit() == 0
        assert ring.reap(0) == ([], False)  # the write waits for room
        woken, flags = ring.tick(0, {}, [], None, frozenset(), None, None, None, both)
        assert woken == 0
        assert flags == io_uring_c._U.TICK_CLEARED | io_uring_c._U.TICK_SIGNALLED
        assert ring.reap(0) == ([(7, 8)], False)
        assert os.read(r, 100) == b"abcdefgh"
    finally:
        ring.close()
        for fd in (r, w, both):
            if fd >= 0:
                os.close(fd)


def test_tick_and_harvest_refuse_bad_arguments_before_they_take_a_cqe() -> None:
    """tick parses its arguments itself (no tuple of harvest's built per tick): the same
    checks as harvest's, and an efd that is no fd; a CQE waiting stays in the CQ."""
    ring = io_uring_c._U.Ring(4)
    try:
        assert ring.prep_nop(5) and ring.submit() == 0
        base = (0, {}, [], None, frozenset(), None, None)
        with pytest.raises(ValueError, match="efd -1 is not a file descriptor"):
            ring.tick(*base, None, -1)
        with pytest.raises(TypeError):
            ring.tick(*base, None)  # no efd
        with pytest.raises(TypeError):
            ring.tick(0, [], [], None, frozenset(), None, None, None, 0)  # ops not a dict
        for call in (lambda: ring.tick(*base, print, 0), lambda: ring.harvest(*base, print)):
            with pytest.raises(RuntimeError, match="harvest with a waker needs enable_batch"):
                call()
        assert ring.reap(0) == ([(5, 0)], False)
    finally:
        ring.close()


def test_the_notifier_clears_only_a_raised_flag() -> None:
    n = Notifier()
    try:
        assert not n.clear_if_raised()
        n.raise_flag()
        assert readable(n.fileno())
        assert n.clear_if_raised()
        assert not readable(n.fileno())
        assert not n.clear_if_raised()
    finally:
        n.close()


@pytest.mark.anyio
@pytest.mark.parametrize("limit", [1, 3])
async def test_reads_through_a_small_reap_limit_on_every_loop(tmp_path: Path, limit: int) -> None:
    """64 reads in flight, each tick waking at most ``limit``: every read returns its bytes;
    a tick that lost the wake-up for the CQEs it left would hang here until the timeout."""
    p = tmp_path / "f.bin"
    data = os.urandom(64 * PAGE)
    p.write_bytes(data)
    got: dict[int, bytes] = {}
    spec = f"io_uring_c:reap_batch={limit},nowait_fast_path=0"
    with anyio.fail_after(30):
        async with aiopg_io.open(p, "rb", buffering=0, driver=spec) as f:

            async def read(i: int) -> None:
                buf = bytearray(PAGE)
                assert await f.preadinto(buf, i * PAGE) == PAGE
                got[i] = bytes(buf)

            for _ in range(3):
                async with anyio.create_task_group() as tg:
                    for i in range(64):
                        tg.start_soon(read, i)
                assert b"".join(got[i] for i in range(64)) == data
            assert dict(f.driver_statistics().extra)["c_resumed"] >= 3 * 64


@pytest.mark.anyio
async def test_thread_completions_between_ring_ticks_are_never_lost(tmp_path: Path) -> None:
    """statx runs in the fallback threads on io_uring_c: stats and ring reads interleaved,
    so thread completions land while the ring's ticks skip the threads (flag down) and
    between them; each one still wakes its task."""
    p = tmp_path / "f.bin"
    data = os.urandom(16 * PAGE)
    p.write_bytes(data)
    with anyio.fail_after(30):
        async with aiopg_io.open(p, "rb", buffering=0, driver="io_uring_c:nowait_fast_path=0") as f:

            async def read(i: int) -> None:
                buf = bytearray(PAGE)
                assert await f.preadinto(buf, i * PAGE) == PAGE
                assert bytes(buf) == data[i * PAGE : (i + 1) * PAGE]

            async def stat() -> None:
                st = await aos.stat(p, driver="io_uring_c:nowait_fast_path=0")
                assert st.st_size == len(data)

            for _ in range(20):
                async with anyio.create_task_group() as tg:
                    for i in range(16):
                        tg.start_soon(read, i)
                        if i % 4 == 0:
                            tg.start_soon(stat)


def test_the_ring_paths_owner_check_still_refuses_a_later_loop_and_another_thread(tmp_path: Path) -> None:
    """The ring path's owner check skips asyncio's getpid() while the thread's running-loop
    entry is the one it last saw pass: a later asyncio.run in the same thread (a new entry)
    and another thread (another dict) still get WrongLoopError, and the file still reads
    from its own loop after a restart of that loop."""
    p = tmp_path / "f.bin"
    data = os.urandom(4 * PAGE)
    p.write_bytes(data)
    box: dict[str, aiopg_io.AsyncFile] = {}
    loop = asyncio.new_event_loop()

    async def reads() -> int:
        f = box["f"]
        buf = bytearray(PAGE)
        for i in range(4):
            assert await f.preadinto(buf, i * PAGE) == PAGE
            assert bytes(buf) == data[i * PAGE : (i + 1) * PAGE]
        return int(dict(f.driver_statistics().extra)["c_runs"])

    async def first() -> int:
        box["f"] = await aiopg_io.open(p, "rb", buffering=0, driver="io_uring_c:nowait_fast_path=0")
        return await reads()

    async def refused() -> str:
        with anyio.fail_after(10):
            try:
                await box["f"].preadinto(bytearray(PAGE), 0)
            except WrongLoopError as exc:
                return str(exc)
        return "no error"

    seen: list[str] = []

    def in_thread() -> None:
        seen.append(asyncio.run(refused()))

    try:
        assert loop.run_until_complete(first()) >= 4  # through the ring path in C
        seen.append(asyncio.run(refused()))  # a later loop, same thread
        t = threading.Thread(target=in_thread)
        t.start()
        t.join(20)
        assert len(seen) == 2
        assert all("was opened in another event loop" in msg for msg in seen), seen
        assert loop.run_until_complete(reads()) >= 8  # its own loop, run again
        loop.run_until_complete(box["f"].aclose())
    finally:
        loop.close()


def test_a_flag_cleared_between_its_raise_and_its_write_stays_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """raise_flag sets the flag, then writes the fd, letting go of the GIL in between: a
    reaper that clears in that gap reads nothing. The flag must stay up then, or the write
    that follows leaves the fd readable with the flag down, which clear_if_raised never
    reads (the loop would wake on it forever)."""
    from aiopg_io.drivers import _notify

    n = Notifier()
    real_write = os.write

    def write_after_a_reap(fd: int, data: bytes) -> int:
        n.clear_if_raised()  # the reaper's tick, run in the gap
        return real_write(fd, data)

    try:
        monkeypatch.setattr(_notify.os, "write", write_after_a_reap)
        n.raise_flag()
        monkeypatch.undo()
        assert readable(n.fileno())
        assert n.clear_if_raised()
        assert not readable(n.fileno())
    finally:
        n.close()


def test_a_linked_write_and_sync_is_reaped_and_woken_in_c(tmp_path: Path) -> None:
    """A WRITE_SYNC chain whose sync succeeded: harvest completes it in C (the write's
    user_data dropped from the ops table too), hands it to the waker with the bytes written
    as its result; a chain whose write fails goes the Python way (out, its errno)."""
    p = tmp_path / "f.bin"
    p.write_bytes(b"")
    fd = os.open(p, os.O_RDWR)
    rfd = os.open(p, os.O_RDONLY)
    d = IoUringCDriver()
    woken: list[Op] = []
    try:
        ops = [
            Op(OpKind.WRITE_SYNC, fd, i * 150, (memoryview(b"a" * 100), memoryview(b"b" * 50)))
            for i in range(4)
        ]
        d.submit(ops)
        out: list[Op] = []
        while len(woken) + len(out) < len(ops):
            assert readable(d.fileno(), 10)
            got, _ = d.reap_and_wake(woken.append)
            out += got
        assert out == []
        assert sorted(map(id, woken)) == sorted(map(id, ops))
        assert all(op.state is OpState.REAPED and op.error is None and op.result == 150 for op in ops)
        assert all(op.transferred == 150 and op.remaining() == [] for op in ops)
        st = d.statistics()
        assert (st.completed, st.in_flight) == (4, 0)
        assert dict(st.extra)["c_resumed"] == 4
        assert d._ops == {}
        assert p.read_bytes() == (b"a" * 100 + b"b" * 50) * 4
        bad = Op(OpKind.WRITE_SYNC, rfd, 0, (memoryview(b"x"),))
        d.submit([bad])
        got = []
        while not got:
            assert readable(d.fileno(), 10)
            got, n = d.reap_and_wake(woken.append)
            assert n == 0
        assert got == [bad] and isinstance(bad.error, OSError) and bad.error.errno == errno.EBADF
        assert dict(d.statistics().extra)["c_resumed"] == 4
        assert d._ops == {}
    finally:
        d.close()
        os.close(fd)
        os.close(rfd)
