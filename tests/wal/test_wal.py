"""The WAL through its public API, on every loop x driver."""

from __future__ import annotations

import array
import contextvars
import os
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from aiopg_io._file import AsyncFile
from aiopg_io._glue import Park
from aiopg_io._glue._asyncio import _AsyncioSharedPark
from aiopg_io.errors import AiopgIOError, ClosedError
from aiopg_io.wal import PAGE_SIZE, WAL, NotAWALError, WALCorruptError, WALLockedError
from aiopg_io.wal._format import segment_name
from tests.conftest import open_fds

from ._util import SEG, check_payload, commit_records, open_wal, payload, read_all

pytestmark = pytest.mark.anyio

SIZES = [0, 1, 100, PAGE_SIZE - 40, PAGE_SIZE * 3 + 11, SEG + 5000, 7]


async def test_round_trip_and_reopen(tmp_path: Path, driver: str) -> None:
    before = open_fds()
    records = [payload(f"r{i}", n) for i, n in enumerate(SIZES)] + [b""]
    async with open_wal(tmp_path, driver) as wal:
        lsns = [await wal.commit(r) for r in records]
        assert lsns == sorted(set(lsns))
        assert wal.flushed_lsn > lsns[-1]
        assert [r async for r in wal.read()] == list(zip(lsns, records, strict=True))
    assert await read_all(tmp_path, driver) == list(zip(lsns, records, strict=True))
    # Appending resumes after the last record, across reopen.
    async with open_wal(tmp_path, driver) as wal:
        assert wal.last_lsn == lsns[-1]
        more = await wal.commit(b"more")
        assert wal.last_lsn == more
    assert (await read_all(tmp_path, driver))[-1] == (more, b"more")
    assert open_fds() == before


async def test_await_then_close_without_context_manager(tmp_path: Path, driver: str) -> None:
    wal = await open_wal(tmp_path, driver)
    lsn = await wal.append(b"appended, not flushed")
    await wal.close()  # close flushes
    assert wal.closed
    await wal.close()  # idempotent
    assert await read_all(tmp_path, driver) == [(lsn, b"appended, not flushed")]


async def test_append_then_flush(tmp_path: Path, driver: str) -> None:
    async with open_wal(tmp_path, driver) as wal:
        lsns = [await wal.append(payload(f"a{i}", i * 37)) for i in range(100)]
        assert wal.flushed_lsn <= lsns[0]
        await wal.flush(lsns[10])
        assert wal.flushed_lsn > lsns[10]
        await wal.flush()
        assert wal.flushed_lsn > lsns[-1]
        await wal.flush(lsns[3])  # already durable: returns at once
    got = await read_all(tmp_path, driver)
    assert [lsn for lsn, _ in got] == lsns
    assert [check_payload(d) for _, d in got] == [f"a{i}" for i in range(100)]


async def test_read_from_start_lsn(tmp_path: Path, driver: str) -> None:
    async with open_wal(tmp_path, driver) as wal:
        records = [payload(f"s{i}", (i * 1031) % 9000) for i in range(60)]
        lsns = [await wal.append(r) for r in records]
        await wal.flush()
        assert [r async for r in wal.read(start=lsns[25])] == list(zip(lsns[25:], records[25:], strict=True))
        assert [r async for r in wal.read(start=wal.insert_lsn)] == []
        with pytest.raises(ValueError, match="no record starts at LSN"):
            async for _ in wal.read(start=lsns[25] + 8):
                pass
        with pytest.raises(ValueError, match="beyond the end of the WAL"):
            wal.read(start=wal.insert_lsn + 8)
        with pytest.raises(TypeError, match="start must be an int LSN, not str"):
            wal.read(start="0")
        # Only durable records are read.
        tail = await wal.append(b"not durable yet")
        assert all(lsn < tail for lsn, _ in [r async for r in wal.read(start=lsns[-1])])


async def test_group_commit_shares_syncs(tmp_path: Path, driver: str) -> None:
    n = 64
    async with open_wal(tmp_path, driver) as wal:
        base = wal.statistics()
        acked: dict[int, bytes] = {}

        async def committer(i: int) -> None:
            for j in range(4):
                data = payload(f"c{i}.{j}", 128)
                lsn = await wal.commit(data)
                assert wal.flushed_lsn > lsn  # durable when acknowledged
                acked[lsn] = data

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(committer, i)
        stats = wal.statistics()
        commits = stats.commits - base.commits
        syncs = stats.syncs - base.syncs
        assert commits == 4 * n
        assert syncs * 8 <= commits, f"{syncs} syncs for {commits} concurrent commits: no group commit"
        assert stats.flush_waits > 0
    assert dict(await read_all(tmp_path, driver)) == acked


async def test_backpressure_with_tiny_wal_buffers(tmp_path: Path, driver: str) -> None:
    async with open_wal(tmp_path, driver, wal_buffers=1) as wal:  # rounded up to 2 pages
        records: dict[int, bytes] = {}

        async def appender(i: int) -> None:
            for j in range(20):
                data = payload(f"b{i}.{j}", (i * 977 + j * 131) % 5000)
                records[await wal.append(data)] = data

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(appender, i)
            big = payload("big", 5 * PAGE_SIZE + 123)  # larger than all the buffers
            tg.start_soon(lambda: _append_into(wal, big, records))
        await wal.flush()
        assert wal.statistics().backpressure_waits > 0
    got = await read_all(tmp_path, driver)
    assert dict(got) == records
    assert [lsn for lsn, _ in got] == sorted(records)


async def test_records_at_page_ends_are_laid_as_the_slow_path_lays_them(tmp_path: Path, driver: str) -> None:
    # place() copies a record that starts a page or runs into the next one without
    # awaiting; insert_slow (page by page, under the insert lock) lays the same bytes. Two
    # fresh WALs get the same records, one with every append sent to insert_slow, and their
    # segments must match byte for byte (the system identifier aside) and read back whole.
    sizes = [n % 300 for n in range(0, 9000, 37)] + [PAGE_SIZE - 64 - k for k in range(0, 80, 8)] * 3
    records = [payload(f"p{i}", n) if n >= 12 else bytes(n) for i, n in enumerate(sizes)]
    walls: list[list[int]] = []
    slow_calls: list[int] = []
    for name, force_slow in (("fast", False), ("slow", True)):
        async with open_wal(tmp_path / name, driver) as wal:
            ins = wal._insert
            calls = [0]
            slow = ins.insert_slow

            async def counted(mv: memoryview, slow: Any = slow, calls: list[int] = calls) -> tuple[int, int]:
                calls[0] += 1
                return await slow(mv)

            ins.insert_slow = counted  # type: ignore[method-assign]
            if force_slow:
                ins.slow_pending += 1  # as if a task were queued: every append goes slow
            walls.append([await wal.append(r) for r in records])
            if force_slow:
                ins.slow_pending -= 1
            await wal.flush()
            sysid = wal._ctl.sysid.to_bytes(8, "little")
        slow_calls.append(calls[0])
        assert [(lsn, data) for lsn, data in await read_all(tmp_path / name, driver)] == list(
            zip(walls[-1], records, strict=True)
        )
        segs = sorted((tmp_path / name).glob("0" * 8 + "*"))
        assert len(segs) >= 4  # records cross segments too (long page headers)
        if name == "fast":
            fast_sysid, fast_segs = sysid, [p.read_bytes() for p in segs]
        else:
            assert [p.read_bytes().replace(sysid, fast_sysid) for p in segs] == fast_segs
    assert walls[0] == walls[1]
    assert slow_calls == [0, len(records)]


async def _append_into(wal: WAL, data: bytes, out: dict[int, bytes]) -> None:
    out[await wal.append(data)] = data


@pytest.mark.parametrize("sync_method", ["fdatasync", "o_dsync", "fsync"])
async def test_sync_methods(tmp_path: Path, driver: str, sync_method: str) -> None:
    records = [payload(f"m{i}", n) for i, n in enumerate(SIZES)]
    async with open_wal(tmp_path, driver, sync_method=sync_method) as wal:
        lsns = [await wal.commit(r) for r in records]
        assert wal.statistics().syncs >= 1
    assert await read_all(tmp_path, driver, sync_method=sync_method) == list(zip(lsns, records, strict=True))


@pytest.mark.parametrize("sync_method", ["fdatasync", "o_dsync"])
async def test_direct_io(data_dir: Path, direct_driver: str, sync_method: str) -> None:
    records = [payload(f"d{i}", n) for i, n in enumerate(SIZES * 2)]
    async with open_wal(data_dir, direct_driver, direct=True, sync_method=sync_method) as wal:
        lsns = []
        for r in records:
            lsns.append(await wal.commit(r))  # each rewrites the partial last block
        assert [r async for r in wal.read()] == list(zip(lsns, records, strict=True))
    async with open_wal(data_dir, direct_driver, direct=True, sync_method=sync_method) as wal:
        lsns.append(await wal.commit(b"after reopen"))
        records.append(b"after reopen")
    assert await read_all(data_dir, direct_driver) == list(zip(lsns, records, strict=True))


# -- bad input ------------------------------------------------------------------------------


async def test_bad_records(tmp_path: Path, driver: str) -> None:
    async with open_wal(tmp_path, driver, max_record_size=1000) as wal:
        with pytest.raises(TypeError, match="must be a bytes-like object, not 'str'"):
            await wal.append("text")
        with pytest.raises(TypeError, match="must be a bytes-like object, not int"):
            await wal.commit(42)
        with pytest.raises(TypeError, match="not NoneType"):
            await wal.append(None)
        with pytest.raises(ValueError, match=r"record of 1001 bytes is over max_record_size \(1000 bytes\)"):
            await wal.commit(bytes(1001))
        with pytest.raises(ValueError, match="beyond the end of the WAL"):
            await wal.flush(wal.insert_lsn + 8)
        with pytest.raises(TypeError, match="lsn must be an int, not float"):
            await wal.flush(1.5)
        lsn = await wal.commit(memoryview(bytearray(b"views work")))
        assert lsn > 0
        # The settings are read-only: a value set after open would not be the one in force.
        assert (wal.max_record_size, wal.sync_method, wal.segments_ahead, wal.init_zero) == (
            1000,
            "fdatasync",
            1,
            True,
        )
        with pytest.raises(AttributeError):
            wal.max_record_size = 10**6  # type: ignore[misc]
        with pytest.raises(ValueError, match=r"record of 1001 bytes is over max_record_size \(1000 bytes\)"):
            await wal.commit(bytes(1001))
    with pytest.raises(ClosedError, match="is closed"):
        await wal.append(b"x")
    with pytest.raises(ClosedError, match="is closed"):
        await wal.flush()
    with pytest.raises(ClosedError, match="is closed"):
        wal.read()
    assert isinstance(ClosedError("x"), AiopgIOError)


async def test_every_kind_of_buffer_is_stored_as_its_bytes(tmp_path: Path, driver: str) -> None:
    # bytes go into the ring as they are, anything else through a byte view: the records
    # read back are the same bytes, whichever the caller gave.
    data = payload("kinds", 300)
    given: list[object] = [
        data,
        bytearray(data),
        memoryview(data),
        memoryview(bytearray(b"xx" + data))[2:],
        array.array("H", data),
    ]
    async with open_wal(tmp_path, driver) as wal:
        lsns = [await wal.commit(g) for g in given]
        lsns.append(await wal.append(b""))
        await wal.flush()
    got = dict(await read_all(tmp_path, driver))
    assert [got[lsn] for lsn in lsns] == [data] * len(given) + [b""]


async def test_bad_arguments(tmp_path: Path, driver: str) -> None:
    with pytest.raises(ValueError, match="sync_method 'open_sync' is not one of fdatasync, o_dsync, fsync"):
        await WAL.open(tmp_path, driver=driver, sync_method="open_sync")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="segment_size 40000 is not a multiple of the page size 8192"):
        await WAL.open(tmp_path, driver=driver, segment_size=40000)
    # Past the format's 32-bit field: refused by name, before the directory is touched
    # (it used to be a struct.error from the control file's first write).
    for big in (2**32, 2**63, 2**70):
        with pytest.raises(ValueError, match=f"^segment_size {big} is over the format's limit 4294959104 "):
            await WAL.open(tmp_path / "big", driver=driver, segment_size=big)
    assert not (tmp_path / "big").exists()
    # Past PostgreSQL's bound on wal_buffers: refused by name before the directory is touched
    # (2**62 used to be a bare ENOMEM from the ring's mmap, the directory already made).
    for big in (2**31, 2**62, 2**70):
        limit = r"2147475456 \(262143 pages of 8192 bytes: PostgreSQL's bound on wal_buffers\)$"
        with pytest.raises(ValueError, match=rf"^wal_buffers {big} is over the limit {limit}"):
            await WAL.open(tmp_path / "big", driver=driver, wal_buffers=big)
    assert not (tmp_path / "big").exists()
    with pytest.raises(TypeError, match="wal_buffers must be an int, not str"):
        await WAL.open(tmp_path, driver=driver, wal_buffers="1M")  # type: ignore[arg-type]
    async with open_wal(tmp_path, driver) as wal:
        await wal.commit(b"x")
    with pytest.raises(NotAWALError, match=f"has segments of {SEG} bytes, not the segment_size=131072"):
        await WAL.open(tmp_path, driver=driver, segment_size=2 * SEG)


async def test_directory_with_other_files(tmp_path: Path, driver: str) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NotAWALError, match=r"notes\.txt' is not part of a WAL"):
        await open_wal(tmp_path, driver)
    f = tmp_path / "plainfile"
    f.write_bytes(b"x")
    with pytest.raises(NotAWALError, match="is not a directory"):
        await open_wal(f, driver)
    other = tmp_path / "seg"
    other.mkdir()
    (other / segment_name(0)).write_bytes(b"not a segment at all")
    with pytest.raises(NotAWALError, match="is not a WAL segment"):
        await open_wal(other, driver)


async def test_second_open_in_this_process_is_refused(tmp_path: Path, driver: str) -> None:
    async with open_wal(tmp_path, driver):
        with pytest.raises(WALLockedError, match="already open in another WAL object or process"):
            await open_wal(tmp_path, driver)
    async with open_wal(tmp_path, driver):  # released on close
        pass


async def test_second_process_is_refused(tmp_path: Path, driver: str) -> None:
    script = textwrap.dedent(
        f"""
        import sys, anyio
        from aiopg_io.wal import WAL
        async def main():
            async with WAL.open({str(tmp_path)!r}, segment_size={SEG}, driver={driver!r}):
                print("locked", flush=True)
                sys.stdin.readline()
        anyio.run(main)
        """
    )
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        line = await anyio.to_thread.run_sync(child.stdout.readline)
        assert line == b"locked\n"
        with pytest.raises(WALLockedError, match=rf"already open .* \(last locked by pid {child.pid}\)"):
            await open_wal(tmp_path, driver)
        child.stdin.write(b"\n")
        child.stdin.close()
        assert await anyio.to_thread.run_sync(child.wait) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    async with open_wal(tmp_path, driver):
        pass


# -- recovery from a damaged tail ------------------------------------------------------------


def _patch(directory: Path, lsn: int, data: bytes) -> None:
    seg = lsn // SEG
    with open(directory / segment_name(seg), "r+b") as f:
        f.seek(lsn % SEG)
        f.write(data)


async def _recovers_to(directory: Path, driver: str, expect: list[tuple[int, bytes]]) -> None:
    """Recovery keeps exactly ``expect``, appends after it, and never shows the cut tail."""
    async with open_wal(directory, driver) as wal:
        assert [r async for r in wal.read()] == expect
        assert wal.last_lsn == (expect[-1][0] if expect else None)
        new = await wal.commit(b"after recovery")
    assert await read_all(directory, driver) == [*expect, (new, b"after recovery")]


async def test_torn_tail_bad_crc(tmp_path: Path, driver: str) -> None:
    recs = await commit_records(tmp_path, driver, 50)
    _patch(tmp_path, recs[45][0] + 30, b"\xff\x00\xff")  # a torn write inside record 45
    await _recovers_to(tmp_path, driver, recs[:45])


async def test_zeroed_tail(tmp_path: Path, driver: str) -> None:
    recs = await commit_records(tmp_path, driver, 50)
    cut = recs[40][0] + 100
    _patch(tmp_path, cut, bytes(SEG - cut % SEG))
    await _recovers_to(tmp_path, driver, recs[:40])


async def test_garbage_tail(tmp_path: Path, driver: str) -> None:
    recs = await commit_records(tmp_path, driver, 50)
    cut = recs[30][0] + 5
    _patch(tmp_path, cut, os.urandom(SEG - cut % SEG))
    await _recovers_to(tmp_path, driver, recs[:30])


async def test_torn_page_header_cuts_the_record_spanning_it(tmp_path: Path, driver: str) -> None:
    recs = await commit_records(tmp_path, driver, 30, size=3000)
    spanning = next(i for i, (lsn, d) in enumerate(recs) if lsn // PAGE_SIZE != (lsn + 3024) // PAGE_SIZE)
    page = (recs[spanning][0] // PAGE_SIZE + 1) * PAGE_SIZE
    _patch(tmp_path, page, b"\0" * 8)
    await _recovers_to(tmp_path, driver, recs[:spanning])


async def test_stale_records_after_a_cut_never_come_back(tmp_path: Path, driver: str) -> None:
    # A, B (spanning a page), C after it; B's CRC broken. The next run rewrites B's slot with
    # a record of the same size, so C's prev-link matches again: its epoch still exposes it.
    async with open_wal(tmp_path, driver) as wal:
        a = await wal.commit(b"a" * (PAGE_SIZE - 200))
        b = await wal.commit(b"b" * 1000)
        c = await wal.commit(b"c" * 50)
    assert b // PAGE_SIZE != c // PAGE_SIZE
    _patch(tmp_path, b + 24 + 10, b"X")
    async with open_wal(tmp_path, driver) as wal:
        assert await wal.commit(b"B" * 1000) == b
    assert await read_all(tmp_path, driver) == [(a, b"a" * (PAGE_SIZE - 200)), (b, b"B" * 1000)]


async def test_segment_missing_in_the_middle_is_refused(tmp_path: Path, driver: str) -> None:
    recs = await commit_records(tmp_path, driver, 300)
    last_seg = recs[-1][0] // SEG
    assert last_seg >= 3
    os.unlink(tmp_path / segment_name(1))
    with pytest.raises(
        WALCorruptError, match=f"segment {segment_name(1)} is missing .* holds records of this WAL"
    ):
        await open_wal(tmp_path, driver)


async def test_missing_last_segment_ends_the_log(tmp_path: Path, driver: str) -> None:
    recs = await commit_records(tmp_path, driver, 300)
    last_seg = recs[-1][0] // SEG
    for name in os.listdir(tmp_path):
        if name not in ("wal.lock", "wal.control") and int(name, 16) >= last_seg:
            os.unlink(tmp_path / name)
    keep = [(lsn, d) for lsn, d in recs if lsn + 24 + len(d) <= last_seg * SEG]
    await _recovers_to(tmp_path, driver, keep)


async def test_cancelled_committer_does_not_break_the_group(tmp_path: Path, driver: str) -> None:
    async with open_wal(tmp_path, driver) as wal:
        done: list[int] = []

        async def committer(i: int) -> None:
            done.append(await wal.commit(payload(f"k{i}", 64)))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(committer, i)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await wal.commit(b"cancelled at its first checkpoint, maybe after appending")
        assert len(done) == 20
        await wal.commit(b"still works")
    got = await read_all(tmp_path, driver)
    assert {lsn for lsn, _ in got} >= set(done)


async def test_a_cancelled_round_leader_abandons_nothing(tmp_path: Path, driver: str) -> None:
    # A lone committer leads its round: the linked write + sync is started, then the leader
    # waits for it. Cancelled there, the op still completes and its completion work still
    # runs (flushed moves, the next committers are served), and the record is in the log.
    async with open_wal(tmp_path, driver, segments_ahead=0) as wal:
        await wal.commit(b"first")
        with anyio.CancelScope() as scope:
            scope.cancel()
            await wal.commit(b"leader, cancelled while its op is out")
        end = wal.insert_lsn
        last = await wal.commit(b"after")
        assert wal.flushed_lsn > last >= end and not wal.poisoned
    got = [data for _, data in await read_all(tmp_path, driver)]
    assert got == [b"first", b"leader, cancelled while its op is out", b"after"]


async def _parked_behind_a_held_round(
    wal: WAL, monkeypatch: pytest.MonkeyPatch, tg: anyio.abc.TaskGroup, n: int
) -> tuple[Callable[[], None], list[anyio.CancelScope], dict[int, int]]:
    """A round held out (its linked op done, its completion not delivered yet) with ``n``
    committers parked behind it, each in a cancel scope of its own. Returns what delivers
    the round's completion, the scopes, and the LSNs the committers return (filled in as
    they do). The WAL's segment must be open already (a commit made before)."""
    state: dict[str, Any] = {"started": False, "deliver": None}
    start = AsyncFile._start_pwritev_sync

    async def holding(
        self: AsyncFile, bufs: Any, offset: int, on_done: Callable[[int, OSError | None], None], **kw: Any
    ) -> None:
        if state["started"]:  # only the first round is held
            return await start(self, bufs, offset, on_done, **kw)
        state["started"] = True

        def later(nbytes: int, error: OSError | None) -> None:
            state["deliver"] = lambda: on_done(nbytes, error)

        await start(self, bufs, offset, later, **kw)

    monkeypatch.setattr(AsyncFile, "_start_pwritev_sync", holding)
    returned: dict[int, int] = {}
    scopes = [anyio.CancelScope() for _ in range(n)]

    async def committer(i: int) -> None:
        with scopes[i] if i >= 0 else anyio.CancelScope():
            returned[i] = await wal.commit(payload(f"p{i}", 100))

    tg.start_soon(committer, -1)  # the held round's leader
    with anyio.fail_after(10):
        while not state["started"]:
            await anyio.sleep(0)
        for i in range(n):
            tg.start_soon(committer, i)
        while wal._flush.flush_waits < n or state["deliver"] is None:
            await anyio.sleep(0.001)
    assert not returned
    if wal._flush._shared_park is not None:  # asyncio: the first to park parks alone, the rest share one
        kinds = [type(park) for _, park in wal._flush._waiters]
        shared = wal._flush._group_type
        assert len(kinds) == 2 and kinds[0] is not shared and kinds[1] is shared is _AsyncioSharedPark
    return state["deliver"], scopes, returned


@pytest.mark.timeout(60)  # a lost wake-up hangs the WAL (its close too): fail, not hang
@pytest.mark.parametrize("cancelled", ["a group member", "the first parked", "all parked"])
async def test_a_cancelled_parked_committer_leaves_the_others_waiting(
    tmp_path: Path, driver: str, monkeypatch: pytest.MonkeyPatch, cancelled: str
) -> None:
    # Committers parked behind a round that is out; some are cancelled. On asyncio the
    # committers parked after the first share one future, and cancelling a task cancels the
    # future it awaits: the others must wait on (not raise CancelledError), each return once
    # its record is durable, in LSN order, and the cancelled ones' records stay in the log.
    # Cancelling the first parked hands the next round's lead to the group; cancelling all
    # leaves no wake-up behind that a later commit would queue behind for ever.
    n = 8
    which = {"a group member": [3], "the first parked": [0], "all parked": list(range(n))}[cancelled]
    with anyio.fail_after(30):
        async with open_wal(tmp_path, driver, segments_ahead=0) as wal:
            await wal.commit(b"first")
            async with anyio.create_task_group() as tg:
                deliver, scopes, returned = await _parked_behind_a_held_round(wal, monkeypatch, tg, n)
                for i in which:
                    scopes[i].cancel()
                await anyio.sleep(0.01)
                assert not returned, "a commit returned before its round's sync was done"
                deliver()
            assert sorted(returned) == sorted({-1, *range(n)} - set(which))
            assert all(scopes[i].cancelled_caught for i in which)
            assert all(wal.flushed_lsn > lsn for lsn in returned.values())
            last = await wal.commit(b"after")
            assert wal.flushed_lsn > last and not wal.poisoned
            assert not wal._flush._waiters and wal._flush._lead is None
    got = [data for _, data in await read_all(tmp_path, driver)]
    assert got[0] == b"first" and got[-1] == b"after"
    assert sorted(check_payload(d) for d in got[1:-1]) == sorted(f"p{i}" for i in range(-1, n))


async def test_cancelled_large_append_leaves_the_log_whole(tmp_path: Path, driver: str) -> None:
    async with open_wal(tmp_path, driver, wal_buffers=1) as wal:
        first = await wal.commit(b"first")
        with anyio.CancelScope() as scope:
            scope.cancel()  # cancelled before it starts copying: the record may or may not be in
            await wal.append(payload("big", 20 * PAGE_SIZE))
        with anyio.move_on_after(0.001):
            await wal.append(payload("big2", 20 * PAGE_SIZE))  # cancelled mid-copy, most likely
        last = await wal.commit(b"last")
    got = await read_all(tmp_path, driver)
    assert got[0] == (first, b"first") and got[-1] == (last, b"last")
    for _, data in got[1:-1]:
        assert check_payload(data) in ("big", "big2")


class _RecordingPark:
    """A WAL wake-up (``aiopg_io._glue.Park``) that notes the order in which it is given."""

    def __init__(self, inner: Park, woken: list[object]) -> None:
        self.inner = inner
        self.woken = woken
        self.lsn = -1  # the LSN of the commit that waited on it, filled in when it returns

    @property
    def is_set(self) -> bool:
        return self.inner.is_set

    def set(self) -> None:
        if not self.inner.is_set:
            self.woken.append(self)
        self.inner.set()

    def wait(self) -> Awaitable[None]:
        return self.inner.wait()


async def test_group_commit_wakes_in_lsn_order(
    tmp_path: Path, driver: str, anyio_backend_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two orders are checked. The order in which the WAL wakes (acknowledges) the parked
    # committers must follow their LSNs on every loop: that is the design. The order in which
    # the woken tasks then *run* is the loop's: asyncio and uvloop run them in wake-up order,
    # trio runs each batch of woken tasks forwards or backwards at random (on purpose, so
    # code cannot depend on it), so run order is checked only on asyncio and uvloop.
    # Committers that share one wake-up (a SharedPark, asyncio) are woken at once: the
    # group's LSNs must then follow every LSN woken before it and precede every one after.
    returned: list[int] = []
    woken: list[object] = []  # the wake-ups, in the order they were given
    lsns_of: dict[int, list[int]] = {}  # id(wake-up) -> the LSNs of the commits it woke
    parks_of_commit: contextvars.ContextVar[list[object]] = contextvars.ContextVar("parks")
    group_set = _AsyncioSharedPark.set  # (asyncio's: trio parks one task each)

    def recording_group_set(self: _AsyncioSharedPark) -> None:
        if not self.is_set:
            woken.append(self)
        group_set(self)

    monkeypatch.setattr(_AsyncioSharedPark, "set", recording_group_set)
    async with open_wal(tmp_path, driver) as wal:
        make = wal._flush.park
        park_behind = wal._flush.park_behind

        def recording_park() -> Park:
            park = _RecordingPark(make(), woken)
            parks_of_commit.get().append(park)
            return park

        def recording_park_behind(target: int) -> tuple[int, Park] | None:
            item = park_behind(target)
            if item is not None and type(item[1]) is wal._flush._group_type:
                parks_of_commit.get().append(item[1])
            return item

        wal._flush.park = recording_park
        wal._flush.park_behind = recording_park_behind  # type: ignore[method-assign]

        async def committer(i: int) -> None:
            for j in range(5):
                mine: list[object] = []
                parks_of_commit.set(mine)
                lsn = await wal.commit(payload(f"o{i}.{j}", 50 + i))
                for park in mine:
                    lsns_of.setdefault(id(park), []).append(lsn)
                returned.append(lsn)

        async with anyio.create_task_group() as tg:
            for i in range(32):
                tg.start_soon(committer, i)
    assert sorted(returned) == sorted(set(returned)) and len(returned) == 160
    wake_order = [lsn for park in woken for lsn in sorted(lsns_of.get(id(park), [-1]))]
    assert wal.statistics().flush_waits > 0 and len(wake_order) > 32, (
        "too few commits waited to show an order"
    )
    assert -1 not in wake_order
    assert wake_order == sorted(wake_order), "the WAL woke committers out of LSN order"
    if anyio_backend_name != "trio":
        assert returned == sorted(returned)


async def test_read_keeps_several_reads_in_flight(
    tmp_path: Path, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [payload(f"ra{i}", 4000 + i % 7) for i in range(400)]  # ~1.6 MB: two 1 MiB segments
    async with open_wal(tmp_path, driver, segment_size=1024 * 1024) as wal:
        lsns = [await wal.append(r) for r in records]
        await wal.flush()
        active = peak = calls = 0
        preadinto = AsyncFile.preadinto

        async def counting(self: AsyncFile, buf: Any, offset: int) -> int:
            nonlocal active, peak, calls
            active += 1
            calls += 1
            peak = max(peak, active)
            try:
                return await preadinto(self, buf, offset)
            finally:
                active -= 1

        monkeypatch.setattr(AsyncFile, "preadinto", counting)
        assert [r async for r in wal.read()] == list(zip(lsns, records, strict=True))
    # Each segment is read as four 256 KiB reads issued together, not one page at a time.
    assert peak == 4, f"at most {peak} reads in flight during a scan"
    assert calls <= 8
